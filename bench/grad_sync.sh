#!/usr/bin/env bash
# Gradient sync under slow links: build/bench/bench_grad_sync on a test cluster of 2 hosts x 2
# ranks (cluster/netns; TCP between the hosts, shared memory within), with the links between the
# hosts unthrottled, at 1 Gbit/s and at 100 Mbit/s (tc tbf on the bridge side of both hosts'
# links, so each direction between the hosts passes one 1 Gbit/s or 100 Mbit/s limit), for the
# quickstart's UNet (4.95M parameters, global batch 128) and a larger one (39.6M parameters,
# global batch 32): flat vs hierarchical, f32 vs bf16 wire, overlap on vs off.
#
#   bash bench/grad_sync.sh [outer_rounds=3] [steps=2]       (as root)
#
# Each outer round runs every (model, link) job once, links interleaved; a job is one mpirun of
# bench_grad_sync running each of the 8 variants once (1 warm-up + `steps` timed steps, medians;
# the variant order rotated per round). The summary gives medians over the outer rounds: step
# time, the share of the step spent waiting for the sync after backward, and the bytes host 1
# sent per step (its eth0 counter). Results: $DIR/results.jsonl, loads: $DIR/loads.txt.
# Variables: LF_BENCH_DIR (default /var/tmp/lf-bench-gradsync; not /tmp, which each host has
# its own of), LF_MODELS (default "quick large"), LF_LINKS (default "none 1gbit 100mbit").
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3} STEPS=${2:-2}
BIN=$PWD/build/bench/bench_grad_sync
DIR=${LF_BENCH_DIR:-/var/tmp/lf-bench-gradsync}
MODELS=${LF_MODELS:-quick large}
LINKS=${LF_LINKS:-none 1gbit 100mbit}
[ "$(id -u)" = 0 ] || { echo "grad_sync.sh: run as root (the test cluster's hosts are network namespaces)" >&2; exit 2; }
[ -x "$BIN" ] || { echo "grad_sync.sh: $BIN not found; build the bench_grad_sync target" >&2; exit 2; }
mkdir -p "$DIR"
rm -f "$DIR/results.jsonl" "$DIR/loads.txt"
NETNS=$PWD/cluster/netns
CLUSTER=$("$NETNS/up.sh" -k 2 -o $$)
trap '"$NETNS/down.sh" "$CLUSTER" >/dev/null 2>&1 || true' EXIT
H1=${CLUSTER}h1 H2=${CLUSTER}h2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# throttle none|RATE: the token bucket on both links' bridge-side ends (traffic into each host).
# burst >= one GSO packet (64 KiB) and >= rate/HZ; latency bounds the queue.
throttle() {
  local v burst=1mb
  [ "$1" = 100mbit ] && burst=256kb
  for v in "${CLUSTER}v1" "${CLUSTER}v2"; do
    tc qdisc del dev "$v" root 2>/dev/null || true
    [ "$1" = none ] || tc qdisc add dev "$v" root tbf rate "$1" burst "$burst" latency 100ms
  done
}

model_flags() {
  case "$1" in
    quick) echo "--channels=64 --channel_mult=1,2,2 --num_res_blocks=1 --attention_ds=2,4 --head_channels=32 --batch=128" ;;
    large) echo "--channels=128 --channel_mult=1,2,2,2 --num_res_blocks=2 --attention_ds=2,4 --head_channels=64 --batch=32" ;;
    *) echo "grad_sync.sh: unknown model '$1' (quick, large)" >&2; exit 2 ;;
  esac
}

for round in $(seq 1 "$ROUNDS"); do
  for model in $MODELS; do
    for link in $LINKS; do
      throttle "$link"
      echo "[$(date +%H:%M:%S)] round $round: $model, link $link; load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$DIR/loads.txt"
      # shellcheck disable=SC2046
      "$NETNS/exec.sh" "$H1" mpirun --bind-to none --mca btl self,vader,tcp --host "$H1:2,$H2:2" -np 4 \
        "$BIN" $(model_flags "$model") --rounds=1 --steps="$STEPS" --rotate="$round" \
        --json="$DIR/results.jsonl" --label="$model $link" > "$DIR/$model-$link-$round.log" 2>&1 ||
        { tail -n 30 "$DIR/$model-$link-$round.log" >&2; exit 1; }
      grep '^round' "$DIR/$model-$link-$round.log" | sed 's/^/  /'
    done
  done
done
throttle none

/usr/bin/python3 - "$DIR/results.jsonl" "$LINKS" <<'EOF'
import json, statistics, sys
from collections import defaultdict
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
links = sys.argv[2].split()
by = defaultdict(list)
params = {}
for r in rows:
    model, link = r["label"].split()
    by[(model, link, r["variant"])].append(r)
    params[model] = (r["params"], r["batch"])
med = lambda xs: statistics.median(xs)
variants = sorted({r["variant"] for r in rows}, key=lambda v: (not v.startswith("flat"), "bf16" in v, v.endswith("off")))
for model in dict.fromkeys(m for m, _, _ in by):
    p, b = params[model]
    print(f"\n{model}: {p / 1e6:.2f}M parameters ({p * 4 / 1e6:.0f} MB of f32 gradients), global batch {b}, "
          f"2 hosts x 2 ranks; medians of {len(by[(model, links[0], variants[0])])} rounds")
    head = "| variant | " + " | ".join(f"{l}: step ms | wait | MB/step host 1" for l in links) + " |"
    print(head)
    print("|" + " --- |" * (1 + 3 * len(links)))
    for v in variants:
        cells = []
        for l in links:
            rs = by.get((model, l, v), [])
            if not rs:
                cells += ["-", "-", "-"]
                continue
            step = med([r["step_ms"] for r in rs])
            wait = med([r["wait_ms"] / r["step_ms"] for r in rs])
            mb = med([r["bytes_per_step_by_rank"][0] for r in rs]) / 1e6
            cells += [f"{step:.0f}", f"{100 * wait:.0f}%", f"{mb:.1f}"]
        print(f"| {v} | " + " | ".join(cells) + " |")
    def step(l, v):
        rs = by.get((model, l, v), [])
        return med([r["step_ms"] for r in rs]) if rs else None
    base, best = step("none", "flat-f32-on"), step("none", "hierarchical-bf16-on")
    for l in links[1:]:
        got = step(l, "hierarchical-bf16-on")
        flat = step(l, "flat-f32-on")
        if got and base and best:
            print(f"{model} at {l}: hierarchical+bf16 (overlap) {got:.0f} ms = {100 * best / got:.0f}% of its "
                  f"unthrottled speed, {100 * base / got:.0f}% of unthrottled flat f32's; flat f32 there: {flat:.0f} ms "
                  f"({100 * base / flat:.0f}%)")
EOF
