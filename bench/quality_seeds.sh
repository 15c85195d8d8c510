#!/usr/bin/env bash
# Quality of one trained run over several sampling seeds: samples its newest checkpoint with
# sample.seed = 0, 1, ... (the config's sampler, steps, guidance and num), evaluates each (FD
# against the test split with its floor, class accuracy) and prints one JSON line per seed and
# a summary with the mean and the spread (max - min) of FD, FD / floor and accuracy. The seed-0
# sampling of a quickstart run is what the quickstart itself printed.
#
#   bash bench/quality_seeds.sh RUN_DIR [CONFIG=configs/fmnist-quick.ini] [SEEDS=3] [--key=value ...]
#
# Writes RUN_DIR/seeds/seed-K/{samples.h5,grid.png,metrics.json} and RUN_DIR/seeds/summary.json
# (RUN_DIR/seeds-TAG/ with LF_TAG=TAG: e.g. one folder per guidance scale of a sweep).
# Variables: LF_BIN (default build/latentforge), LF_THREADS (default: all cores, one process).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:?usage: bench/quality_seeds.sh RUN_DIR [CONFIG] [SEEDS] [--key=value ...]}
CONFIG=${2:-configs/fmnist-quick.ini}
SEEDS=${3:-3}
shift $(( $# < 3 ? $# : 3 ))
BIN=${LF_BIN:-build/latentforge}
THREADS=${LF_THREADS:-$(nproc)}
OUT=$RUN/seeds${LF_TAG:+-$LF_TAG}
[ -d "$RUN/checkpoints" ] || { echo "quality_seeds: $RUN/checkpoints not found (a train run dir is expected)" >&2; exit 2; }
mkdir -p "$OUT"
for ((s = 0; s < SEEDS; s++)); do
  out=$OUT/seed-$s
  if [ ! -f "$out/metrics.json" ]; then
    "$BIN" sample --config "$CONFIG" --threads "$THREADS" --sample.checkpoint="$RUN" --sample.out_dir="$out" \
      --sample.seed=$s "$@" > "$out.sample.log" 2>&1 || { echo "quality_seeds: sample failed, see $out.sample.log" >&2; exit 1; }
    "$BIN" eval --config "$CONFIG" --threads "$THREADS" --eval.vae=false --eval.samples="$out/samples.h5" \
      --eval.out="$out/metrics.json" "$@" > "$out.eval.log" 2>&1 || { echo "quality_seeds: eval failed, see $out.eval.log" >&2; exit 1; }
  fi
done
/usr/bin/python3 - "$OUT" "$SEEDS" <<'PY'
import json, statistics, sys
out, n = sys.argv[1], int(sys.argv[2])
rows = []
for s in range(n):
    m = json.load(open(f"{out}/seed-{s}/metrics.json"))
    rows.append({"seed": s, "fd": m["fd"], "fd_ratio": m["fd_ratio"], "class_accuracy": m["class_accuracy"]})
    print(json.dumps(rows[-1]))
summary = {"dir": out, "seeds": n}
for k in ("fd", "fd_ratio", "class_accuracy"):
    v = [r[k] for r in rows]
    summary[k] = {"mean": statistics.fmean(v), "spread": max(v) - min(v), "min": min(v), "max": max(v)}
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)
print("summary:", json.dumps(summary))
PY
