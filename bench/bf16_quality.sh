#!/usr/bin/env bash
# Quality of bf16 gradients on the wire: the Fashion-MNIST quickstart's `train` stage on 2 ranks
# (mpirun -np 2 x 1 thread; dist.allreduce resolves to flat on one host) three times on the same
# VAE and latent cache: f32 with seed 0, f32 with seed 1 (the seed-to-seed spread), bf16 with
# seed 0; then `sample` and `eval` of each (1,000 class-conditional samples, the config's
# sampler). Prints each arm's final validation loss, FD and class accuracy and whether bf16's
# differences from f32 stay within the seed-to-seed spread.
#
#   bash bench/bf16_quality.sh [steps=1500]
#
# Variables: LF_QUALITY_DIR (default /tmp/lf-bench-bf16: everything goes there), LF_REUSE_RUN
# (a finished quickstart run directory such as runs/quick: its VAE and caches are copied instead
# of training and encoding anew), LF_CLASSIFIER (default runs/classifier/classifier.safetensors,
# trained by `eval train-classifier` when missing), LF_BIN (default build/latentforge).
# A shorter schedule (steps < 1500) shortens all three arms alike (the cosine schedule follows).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-1500}
W=${LF_QUALITY_DIR:-/tmp/lf-bench-bf16}
BIN=$PWD/${LF_BIN:-build/latentforge}
CONFIG=$PWD/configs/fmnist-quick.ini
CLASSIFIER=${LF_CLASSIFIER:-$PWD/runs/classifier/classifier.safetensors}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$W"
log() { echo "[$(date +%H:%M:%S)] $*"; }
C=(--config "$CONFIG" --vae.weights="$W/vae/vae")

if [ ! -f "$W/cache/train/manifest.json" ] || [ ! -f "$W/cache/test/manifest.json" ]; then
  if [ -n "${LF_REUSE_RUN:-}" ]; then
    log "copying the VAE and the caches of $LF_REUSE_RUN"
    mkdir -p "$W/vae" "$W/cache"
    cp -r "$LF_REUSE_RUN/vae/vae" "$W/vae/"
    cp -r "$LF_REUSE_RUN/cache/train" "$LF_REUSE_RUN/cache/test" "$W/cache/"
  else
    log "vae train + encode (the quickstart's)"
    mpirun --oversubscribe --bind-to none -np 2 "$BIN" vae train "${C[@]}" --vae_train.run_dir="$W/vae" \
      --threads 1 > "$W/vae.log" 2>&1
    mpirun --oversubscribe --bind-to none -np 2 "$BIN" encode "${C[@]}" --cache.dir="$W/cache/train" \
      --threads 1 > "$W/encode.log" 2>&1
    mpirun --oversubscribe --bind-to none -np 2 "$BIN" encode "${C[@]}" --data.split=test \
      --cache.dir="$W/cache/test" --threads 1 >> "$W/encode.log" 2>&1
  fi
fi
if [ ! -f "$CLASSIFIER" ]; then
  log "training the evaluation classifier once ($CLASSIFIER)"
  "$BIN" eval train-classifier "${C[@]}" --eval.classifier="$CLASSIFIER" > "$W/classifier.log" 2>&1
fi

arm() {  # arm NAME SEED WIRE
  local name=$1 seed=$2 wire=$3 run=$W/$1
  if [ -f "$run/samples/metrics.json" ]; then log "$name: done before"; return; fi
  log "$name: train (seed $seed, dist.grad_wire = $wire, $STEPS steps)"
  local t0=$SECONDS
  mpirun --oversubscribe --bind-to none -np 2 "$BIN" train "${C[@]}" --cache.dir="$W/cache/train" \
    --train.val_cache="$W/cache/test" --train.run_dir="$run" --train.seed="$seed" --dist.grad_wire="$wire" \
    --train.steps="$STEPS" --train.val_every="$STEPS" --train.sample_every=0 --threads 1 \
    --resume auto > "$run.log" 2>&1
  log "$name: trained in $((SECONDS - t0)) s; sample + eval"
  "$BIN" sample "${C[@]}" --sample.checkpoint="$run" --sample.out_dir="$run/samples" > "$run.sample.log" 2>&1
  "$BIN" eval "${C[@]}" --eval.classifier="$CLASSIFIER" --eval.samples="$run/samples/samples.h5" \
    --eval.vae=false > "$run.eval.log" 2>&1
}
arm f32-seed0 0 f32
arm f32-seed1 1 f32
arm bf16-seed0 0 bf16
grep -h "gradient sync" "$W"/*.log | sort | uniq -c | sed 's/^/  /'

/usr/bin/python3 - "$W" <<'EOF'
import json, sys, os
w = sys.argv[1]
rows = {}
for arm in ("f32-seed0", "f32-seed1", "bf16-seed0"):
    recs = [json.loads(l) for l in open(os.path.join(w, arm, "metrics.jsonl")) if l.strip()]
    val = [r["val_loss"] for r in recs if "val_loss" in r][-1]
    m = json.load(open(os.path.join(w, arm, "samples", "metrics.json")))
    rows[arm] = (val, m["fd"], m["fd_ratio"], m["class_accuracy"], recs[-1]["step"])
print("| arm | steps | final validation loss | FD | FD / floor | class accuracy |")
print("| --- | --- | --- | --- | --- | --- |")
for arm, (v, fd, ratio, acc, step) in rows.items():
    print(f"| {arm} | {step} | {v:.5f} | {fd:.3f} | {ratio:.2f}x | {100 * acc:.1f}% |")
a, b, q = rows["f32-seed0"], rows["f32-seed1"], rows["bf16-seed0"]
names = ("validation loss", "FD", "FD / floor", "class accuracy")
ok = True
for i, name in enumerate(names):
    lo, hi = min(a[i], b[i]), max(a[i], b[i])
    inside = lo <= q[i] <= hi
    spread = hi - lo
    off = 0.0 if inside else min(abs(q[i] - lo), abs(q[i] - hi))
    ok = ok and (inside or off <= spread)
    print(f"{name}: f32 seeds {lo:.5g} .. {hi:.5g} (spread {spread:.3g}); bf16 {q[i]:.5g}: "
          + ("inside" if inside else f"outside by {off:.3g} ({off / spread if spread else float('inf'):.2f} spreads)"))
print("bf16 within the seed-to-seed spread of f32 (inside, or off by less than one spread): "
      + ("yes" if ok else "NO"))
EOF
