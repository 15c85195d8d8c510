#!/usr/bin/env bash
# Overhead against PyTorch: one denoiser training step (the same UNet, batch, threads, objective,
# AdamW, EMA and grad clip) by bench_train_step (ours) and bench/torch_unet.py (PyTorch through
# /usr/bin/python3, the same LibTorch), run as interleaved rounds: ours, theirs, ours, theirs...
# Each round is a fresh process: --warmup steps, then --steps timed steps; a round's time is the
# median of its steps, and the result is the median over rounds and the ratio ours / theirs.
#
# Usage: bench/overhead_vs_pytorch.sh [model options as --key=value, passed to both sides]
#   The DiT: --model=dit --patch_size=2 --depth=6 --width=256 --heads=4 --num_classes=10
#   (torch_unet.py takes the port in bench/torch_dit.py); --objective=flow for flow matching.
# Environment (defaults): BIN (build/bench/bench_train_step), ROUNDS (7), STEPS (5), WARMUP (2),
#   THREADS ("1 2"), BATCH (128), LARGE (0; 1 adds a larger model at the last thread count, timed
#   with LARGE_STEPS (3) after LARGE_WARMUP (1) steps per round),
#   PROFILE (0; 1 prints the top ops of one step of each side per thread count, by the profilers),
#   OUT (a new temporary directory: JSON lines of every round, the verification files),
#   EXTRA (more --key=value options for both sides' timed rounds, e.g. "--zero_grad=none"),
#   GOAL (0.9: the ratio ours / PyTorch the RESULT line judges against).
# The default model is the quickstart's, read from QUICK_CONFIG (configs/fmnist-quick.ini [model]),
# with 10 classes. Before timing, the port is verified against ours on the same weights (output,
# gradients, one AdamW + EMA step).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/build/bench/bench_train_step}
PY=/usr/bin/python3
TORCH_UNET=$ROOT/bench/torch_unet.py
ROUNDS=${ROUNDS:-7}
STEPS=${STEPS:-5}
WARMUP=${WARMUP:-2}
THREADS=${THREADS:-"1 2"}
BATCH=${BATCH:-128}
LARGE=${LARGE:-0}
PROFILE=${PROFILE:-0}
EXTRA=${EXTRA:-}
GOAL=${GOAL:-0.9}
OUT=${OUT:-$(mktemp -d /tmp/overhead_vs_pytorch.XXXXXX)}
mkdir -p "$OUT"

# The quickstart's [model] keys that both sides take, as --key=value; other keys are named on
# stderr and left out. num_classes is not a model key there (the data has 10 classes).
ini_model_options() {  # config.ini
  awk -F= '
    /^[ \t]*[#;]/ { next }
    /^[ \t]*\[/ { sec = $0; gsub(/[ \t]/, "", sec); next }
    sec == "[model]" && NF == 2 {
      k = $1; v = $2; sub(/[#;].*/, "", v); gsub(/[ \t]/, "", k); gsub(/[ \t]/, "", v)
      if (k ~ /^(channels|channel_mult|num_res_blocks|attention_ds|head_channels|norm_groups|num_classes)$/)
        printf "--%s=%s ", k, v
      else
        printf "overhead_vs_pytorch.sh: [model] %s = %s in the config is not benchmarked (left out)\n", k, v > "/dev/stderr"
    }' "$1"
}
QUICK_CONFIG=${QUICK_CONFIG:-$ROOT/configs/fmnist-quick.ini}
QUICK_MODEL="--channels=64 --channel_mult=1,2,2 --num_res_blocks=1 --attention_ds=2,4 --head_channels=32"
[[ -f $QUICK_CONFIG ]] && QUICK_MODEL=$(ini_model_options "$QUICK_CONFIG")
[[ $QUICK_MODEL == *--num_classes=* ]] || QUICK_MODEL="$QUICK_MODEL --num_classes=10"
LARGE_MODEL="--channels=128 --channel_mult=1,2,2 --num_res_blocks=2 --attention_ds=2,4 --head_channels=32 --num_classes=10"
MODEL=${*:-$QUICK_MODEL}

[[ -x $BIN ]] || { echo "overhead_vs_pytorch.sh: $BIN not found; build it: ninja -C build bench_train_step" >&2; exit 2; }

echo "# $(date -u +%FT%TZ)  $(uname -n)  cores: $(nproc)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# batch $BATCH, extra options: '${EXTRA}', $ROUNDS rounds x ($WARMUP warm-up + $STEPS timed steps), output in $OUT"

# Runs one side once; prints its JSON line (stdout) and appends it to $3.
run_side() {  # side threads jsonl model...
  local side=$1 n=$2 log=$3
  shift 3
  local common=(--threads="$n" --batch="$BATCH" --steps="$STEPS" --warmup="$WARMUP" "$@" $EXTRA)
  if [[ $side == ours ]]; then
    OPENBLAS_NUM_THREADS=$n OMP_NUM_THREADS=$n "$BIN" "${common[@]}" --init="$INIT" | tee -a "$log"
  else
    OPENBLAS_NUM_THREADS=$n OMP_NUM_THREADS=$n "$PY" "$TORCH_UNET" "${common[@]}" --init="$INIT" | tee -a "$log"
  fi
}

bench_config() {  # name threads model...
  local name=$1 n=$2
  shift 2
  local dir=$OUT/$name
  mkdir -p "$dir"
  echo
  echo "## $name, threads $n, rounds of $WARMUP warm-up + $STEPS timed steps: $*"
  # Verify the port on this config (same weights, same batch), and start both sides from them.
  OPENBLAS_NUM_THREADS=$n "$BIN" --dump="$dir/verify" --threads="$n" --batch=16 "$@" >/dev/null
  OPENBLAS_NUM_THREADS=$n "$PY" "$TORCH_UNET" --verify="$dir/verify" --threads="$n" --batch=16 "$@" \
    > "$dir/verify.txt" || { cat "$dir/verify.txt"; echo "port verification FAILED" >&2; exit 1; }
  grep -q PASSED "$dir/verify.txt" && echo "# port verified: $(grep -c '^  ok' "$dir/verify.txt") checks ok ($dir/verify.txt)"
  INIT=$dir/verify/weights.safetensors
  local log=$dir/rounds-t$n.jsonl
  : > "$log"
  for ((r = 1; r <= ROUNDS; ++r)); do
    # Alternate who goes first so that slow drifts in machine load hit both sides alike.
    if ((r % 2)); then order=(ours torch); else order=(torch ours); fi
    for side in "${order[@]}"; do run_side "$side" "$n" "$log" "$@" > /dev/null; done
    echo "# round $r done, load $(cut -d' ' -f1 /proc/loadavg)"
  done
  GOAL=$GOAL "$PY" - "$log" <<'EOF'
import json, os, statistics, sys
PHASES = ("data", "forward", "backward", "clip", "adamw", "ema", "zero", "optimizer", "step")
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {"ours": [], "torch": []}
for r in rows:
    by[r["side"]].append(r)
n = max(len(v) for v in by.values())
print(f"{'round':>5} {'ours ms/step':>13} {'torch ms/step':>14}")
for i in range(n):
    o = by["ours"][i]["step_median_ms"] if i < len(by["ours"]) else float("nan")
    t = by["torch"][i]["step_median_ms"] if i < len(by["torch"]) else float("nan")
    print(f"{i + 1:>5} {o:>13.1f} {t:>14.1f}")
med = {s: {k: statistics.median(r[f"{k}_median_ms"] for r in v)
           for k in PHASES} for s, v in by.items()}
print(f"{'phase (median of rounds)':<26} {'ours ms':>9} {'torch ms':>9} {'ours/torch':>10}")
for k in PHASES:
    o, t = med["ours"][k], med["torch"][k]
    label = {"clip": "  grad norm + clip", "adamw": "  AdamW", "ema": "  EMA", "zero": "  zero grads",
             "optimizer": "optimizer (sum of the 4)"}.get(k, k)
    print(f"{label:<26} {o:>9.1f} {t:>9.1f} {o / t if t else float('nan'):>10.3f}")
best = {s: min(x for r in v for x in r["step_ms"]) for s, v in by.items()}
print(f"{'best single step (all rounds)':<26} {best['ours']:>9.1f} {best['torch']:>9.1f} "
      f"{best['ours'] / best['torch']:>10.3f}   (what a quiet machine gives)")
ratio = med["ours"]["step"] / med["torch"]["step"]
# Round i of each side ran back to back: the median of the per-round ratios is robust to load
# spikes that hit one side's round only.
pairs = [o["step_median_ms"] / t["step_median_ms"] for o, t in zip(by["ours"], by["torch"])]
print(f"{'median of per-round ratios':<26} {'':>9} {'':>9} {statistics.median(pairs):>10.3f}   "
      f"(rounds: {' '.join(f'{x:.3f}' for x in pairs)})")
goal = float(os.environ["GOAL"])
print(f"RESULT threads={rows[0]['threads']} batch={rows[0]['batch']} params={rows[0]['params']}: "
      f"ours {med['ours']['step']:.1f} ms, torch {med['torch']['step']:.1f} ms, ratio {ratio:.3f} "
      f"({'meets' if ratio <= goal else 'misses'} the {goal:g} goal)")
EOF
  if [[ $PROFILE == 1 ]]; then
    echo "# torch.autograd.profiler, one PyTorch step (self CPU time):"
    OPENBLAS_NUM_THREADS=$n "$PY" "$TORCH_UNET" --threads="$n" --batch="$BATCH" --profile "$@" | head -35
    echo "# LibTorch's profiler, one step of ours (self CPU time):"
    OPENBLAS_NUM_THREADS=$n "$BIN" --threads="$n" --batch="$BATCH" --profile=1 "$@" | head -27
  fi
}

for n in $THREADS; do bench_config quick "$n" $MODEL; done
if [[ $LARGE == 1 ]]; then
  last=${THREADS##* }
  STEPS=${LARGE_STEPS:-3} WARMUP=${LARGE_WARMUP:-1} bench_config large "$last" $LARGE_MODEL
fi
echo
echo "# done $(date -u +%FT%TZ), load: $(cut -d' ' -f1-3 /proc/loadavg)"
