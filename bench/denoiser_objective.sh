#!/usr/bin/env bash
# Denoiser x objective on the Fashion-MNIST latents: four arms trained for the same wall-clock
# budget, one core each (1 rank x 1 thread), then every chosen checkpoint evaluated the same way
# (1,000 class-conditional samples with 20 model calls and guidance 2.0, EMA weights; FD of the
# classifier's features against the test split with its floor, class accuracy).
#   unet-eps   the quickstart's UNet (configs/fmnist-quick.ini) with epsilon prediction, DDIM 20
#   unet-flow  the same UNet, rectified flow (t logit-normal), Euler 20
#   dit-eps    a DiT (patch 2, depth 6, width 256, 4 heads) with epsilon prediction, DDIM 20
#   dit-flow   the same DiT, rectified flow, Euler 20
# Every arm: batch 128, AdamW at a constant 1e-3 after 100 warm-up steps (the budget is time,
# not steps, so no decay), EMA 0.999, the quickstart's VAE and latent cache (runs/quick: run the
# quickstart first). Writes results.jsonl and denoiser_objective.png into the work dir.
#
#   bash bench/denoiser_objective.sh [minutes=20] [what=all] [arms="unet-eps unet-flow dit-eps dit-flow"]
# what: all (train the arms two at a time side by side, then evaluate), train, or eval. The
# training of two arms at a time keeps one core per arm on a 2-core machine; LF_PARALLEL sets
# how many arms train at once (default: cores).
# Variables: LF_BENCH_DIR (default runs/denoiser_objective), LF_CKPT_EVERY (default 250 steps),
# LF_EVAL_EVERY (evaluate checkpoints whose step is a multiple of this, and each arm's last;
# default 500), LF_EVAL_THREADS (threads per evaluation; default 1, two evaluations at a time).
set -euo pipefail
cd "$(dirname "$0")/.."
MIN=${1:-20} WHAT=${2:-all} ARMS=(${3:-unet-eps unet-flow dit-eps dit-flow})
case $WHAT in all|train|eval) ;; *) echo "denoiser_objective: what must be all, train or eval, not '$WHAT'" >&2; exit 2;; esac
SRC=$PWD BIN=$PWD/build/latentforge CONFIG=$PWD/configs/fmnist-quick.ini
W=${LF_BENCH_DIR:-$PWD/runs/denoiser_objective}
CE=${LF_CKPT_EVERY:-250} EE=${LF_EVAL_EVERY:-500} ET=${LF_EVAL_THREADS:-1} PAR=${LF_PARALLEL:-$(nproc)}
CLF=$SRC/runs/classifier/classifier.safetensors
for need in runs/quick/vae/vae runs/quick/cache/train/manifest.json; do
  [ -e "$SRC/$need" ] || { echo "denoiser_objective: $SRC/$need not found: run bash cluster/quickstart.sh first" >&2; exit 2; }
done
arm_flags() {  # the keys that make an arm
  case $1 in
    unet-eps) ;;
    unet-flow) echo --diffusion.objective=flow --diffusion.t_sampling=logit_normal ;;
    dit-eps) echo --model.kind=dit --model.patch_size=2 --model.depth=6 --model.width=256 --model.heads=4 ;;
    dit-flow) echo --model.kind=dit --model.patch_size=2 --model.depth=6 --model.width=256 --model.heads=4 \
                   --diffusion.objective=flow --diffusion.t_sampling=logit_normal ;;
    *) echo "denoiser_objective: unknown arm '$1' (unet-eps, unet-flow, dit-eps, dit-flow)" >&2; exit 2 ;;
  esac
}
sampler() { case $1 in *-flow) echo euler ;; *) echo ddim ;; esac; }
for a in "${ARMS[@]}"; do arm_flags "$a" > /dev/null; done
mkdir -p "$W" && cd "$W"
[ -f "$CLF" ] || "$BIN" eval train-classifier --config "$CONFIG" --eval.classifier="$CLF"

train_arm() {  # one arm for MIN minutes on one core; SIGUSR1 at the deadline checkpoints and stops
  local a=$1
  [ -f "$a.done" ] && return 0
  # shellcheck disable=SC2046
  timeout -s USR1 $((MIN * 60)) "$BIN" train --config "$CONFIG" --threads 1 $(arm_flags "$a") \
    --vae.weights="$SRC/runs/quick/vae/vae" --cache.dir="$SRC/runs/quick/cache/train" --train.run_dir="$a" \
    --train.steps=1000000 --train.lr=1e-3 --train.lr_schedule=constant --train.warmup_steps=100 \
    --train.ckpt_every="$CE" --train.milestone_every="$CE" --train.val_cache= --train.sample_every=0 \
    --resume auto > "$a.train.log" 2>&1 || true
  touch "$a.done"
}
if [ "$WHAT" != eval ]; then
  for ((i = 0; i < ${#ARMS[@]}; i += PAR)); do
    for a in "${ARMS[@]:i:PAR}"; do train_arm "$a" & done
    wait
  done
fi
[ "$WHAT" != train ] || exit 0

eval_ck() {  # eval_ck ARM CHECKPOINT: 1,000 samples + FD/accuracy, once
  local a=$1 ck=$2 out
  out=$a/eval/$(basename "$ck")
  [ -f "$out/metrics.json" ] && return 0
  mkdir -p "$a/eval"
  "$BIN" sample --config "$CONFIG" --threads "$ET" --vae.weights= --sample.checkpoint="$ck" --sample.out_dir="$out" \
    --sample.sampler="$(sampler "$a")" --sample.steps=20 --sample.guidance=2.0 --sample.num=1000 > "$out.sample.log" 2>&1
  "$BIN" eval --config "$CONFIG" --threads "$ET" --eval.vae=false --eval.classifier="$CLF" --eval.samples="$out/samples.h5" \
    --eval.out="$out/metrics.json" > "$out.eval.log" 2>&1
}
jobs_=()
for a in "${ARMS[@]}"; do
  last=$(ls -d "$a"/checkpoints/step-* | tail -1)
  for ck in "$a"/checkpoints/step-*; do
    [ -f "$ck/state.json" ] || continue
    step=$((10#${ck##*step-}))
    [ $((step % EE)) -eq 0 ] || [ "$ck" = "$last" ] || continue
    jobs_+=("$a $ck")
  done
done
running=0
for j in "${jobs_[@]}"; do
  # shellcheck disable=SC2086
  eval_ck $j &
  running=$((running + 1))
  if [ "$running" -ge "$PAR" ]; then wait -n; running=$((running - 1)); fi
done
wait
: > results.jsonl
for j in "${jobs_[@]}"; do
  read -r a ck <<< "$j"
  /usr/bin/python3 - "$a" "$ck" "$a/eval/$(basename "$ck")/metrics.json" "$a/metrics.jsonl" >> results.jsonl <<'PY'
import json, statistics, struct, sys
arm, ck, mpath, log = sys.argv[1:5]
st = json.load(open(ck + "/state.json")); m = json.load(open(mpath))
with open(ck + "/model.safetensors", "rb") as f:  # parameter count from the header
    hdr = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
params = 0
for k, v in hdr.items():
    if k != "__metadata__":
        n = 1
        for d in v["shape"]:
            n *= d
        params += n
rates = [json.loads(l)["samples_per_s"] for l in open(log) if '"samples_per_s"' in l]
print(json.dumps({"arm": arm, "step": st["step"], "train_s": st.get("train_seconds", 0), "params": params,
                  "samples_per_s": statistics.median(rates) if rates else None, "fd": m["fd"],
                  "fd_floor": m["fd_floor"], "class_accuracy": m.get("class_accuracy"),
                  "grid": mpath.replace("metrics.json", "grid.png")}))
PY
done
/usr/bin/python3 "$SRC/tools/plot_denoiser_objective.py" results.jsonl denoiser_objective.png
