#!/usr/bin/env bash
# Latent vs pixel space: the same trainer with a config's VAE (latent model) and with the
# identity autoencoder (f = 1, LDM-1: the pixel model), each trained for a wall-clock budget and
# evaluated at every checkpoint with the config's [sample] and [eval] settings (FD against the
# test split with its floor; class accuracy for a class model, the held-out captions' category
# accuracy for a text model). The latent model's clock includes its VAE training and encode.
# Writes results.jsonl and latent_vs_pixel.png into the work dir.
# Default config: configs/fmnist-quick.ini. Sizes that fit 2 CPU cores: the latent model is the
# quickstart's UNet (64 channels, 5.0M parameters, 0.56 s per step of 128 on one core); the pixel
# model a UNet of 32 channels with multipliers 1,2,2,2 (1.7M parameters, 2.6 s per step: the
# quickstart's width at 32x32 took over 6 s, too few steps in an hour to be a fair baseline).
# configs/emoji.ini (64x64 RGB, text): see docs/benchmarks.md for its pixel model.
#
#   bash bench/latent_vs_pixel.sh [pixel_minutes=60] [latent_minutes=15] [what=all]
# what: all (latent arm, pixel arm, then evaluation), latent, pixel or eval. To give both arms
# the same resources at the same time, run them side by side, one core each, then evaluate:
#   LF_RANKS=1 bash bench/latent_vs_pixel.sh 60 15 pixel & LF_RANKS=1 bash bench/latent_vs_pixel.sh 60 15 latent; wait
#   LF_EVAL_THREADS=2 bash bench/latent_vs_pixel.sh 60 15 eval
# Variables: LF_CONFIG (default configs/fmnist-quick.ini; its relative paths are read from the
# repository root), LF_BENCH_DIR (default runs/latent_vs_pixel), LF_RANKS (default 2, 1 thread
# each), LF_PIXEL_MODEL (the pixel model's --model.* overrides; default
# "--model.channels=32 --model.channel_mult=1,2,2,2 --model.attention_ds=4,8"), LF_CLASSIFIER
# (default: the config's eval.classifier, else runs/classifier/classifier.safetensors; trained
# if missing), LF_LATENT_EVERY / LF_PIXEL_EVERY (checkpoint, hence evaluation, every N steps;
# default 250), LF_EVAL_THREADS (threads of sample and eval, default 2), LF_LATENT_EVAL_EVERY /
# LF_PIXEL_EVAL_EVERY (evaluate only the checkpoints whose step is a multiple of N, and the last
# one; default: all), LF_SAMPLE_ARGS (extra --sample.* overrides of the evaluation, e.g. fewer
# prompts: sampling a 64x64 pixel model is slow on a CPU), LF_VAE_ARGS (extra --vae_train.*
# overrides of the latent arm's VAE, e.g. a shorter recipe: --vae_train.steps=400).
set -euo pipefail
cd "$(dirname "$0")/.."
PIXEL_MIN=${1:-60} LATENT_MIN=${2:-15} WHAT=${3:-all}
case $WHAT in all|latent|pixel|eval) ;; *) echo "latent_vs_pixel: what must be all, latent, pixel or eval, not '$WHAT'" >&2; exit 2;; esac
LE=${LF_LATENT_EVERY:-250} PE=${LF_PIXEL_EVERY:-250} ET=${LF_EVAL_THREADS:-2}
SRC=$PWD BIN=$PWD/build/latentforge CONFIG=${LF_CONFIG:-configs/fmnist-quick.ini}
[ -f "$CONFIG" ] || { echo "latent_vs_pixel: config '$CONFIG' not found" >&2; exit 2; }
W=${LF_BENCH_DIR:-$PWD/runs/latent_vs_pixel}
mkdir -p "$W" && W=$(cd "$W" && pwd)
RANKS=${LF_RANKS:-2}
PIXEL_MODEL=${LF_PIXEL_MODEL:---model.channels=32 --model.channel_mult=1,2,2,2 --model.attention_ds=4,8}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Every output goes under $W; the commands run from the repository root, so the config's
# relative paths (data, prompts, classifier) mean what they mean to the quickstart.
par() { mpirun --oversubscribe --bind-to none -np "$RANKS" "$BIN" "$@" --threads 1; }
now() { date +%s.%N; }
# After `timeout`: 124 is the budget running out (the trainer checkpointed on SIGUSR1 and
# stopped), anything else a failure to report, not an arm to mark done.
timed_out() {
  local rc=$?
  [ $rc -eq 124 ] && return 0
  echo "latent_vs_pixel: the $1 arm failed (exit $rc); see $W/$1_train.log" >&2
  tail -n 3 "$W/$1_train.log" >&2
  exit 1
}
CLF=${LF_CLASSIFIER:-$(sed -n 's/^classifier *= *//p' "$CONFIG" | head -1)}
CLF=${CLF:-runs/classifier/classifier.safetensors}
[ -f "$CLF" ] || "$BIN" eval train-classifier --config "$CONFIG" --eval.classifier="$CLF"

# ---- latent arm: VAE + encode (timed), then the LDM for LATENT_MIN minutes --------------------
if [ "$WHAT" = all ] || [ "$WHAT" = latent ] && [ ! -f "$W/latent.done" ]; then
  t0=$(now)
  par vae train --config "$CONFIG" --vae_train.run_dir=$W/latent/vae ${LF_VAE_ARGS:-} --resume auto > $W/latent_vae.log 2>&1
  par encode --config "$CONFIG" --vae.weights=$W/latent/vae/vae --cache.dir=$W/latent/cache > $W/latent_enc.log 2>&1
  echo "$(echo "$(now) - $t0" | bc)" > $W/latent.prep_s
  timeout -s USR1 $((LATENT_MIN * 60)) mpirun --oversubscribe --bind-to none -np "$RANKS" "$BIN" train --config "$CONFIG" \
    --threads 1 --vae.weights=$W/latent/vae/vae --cache.dir=$W/latent/cache --train.run_dir=$W/latent/ldm --train.steps=1000000 \
    --train.ckpt_every=$LE --train.milestone_every=$LE --train.val_cache= --train.sample_every=0 --train.lr_schedule=constant \
    --resume auto > $W/latent_train.log 2>&1 || timed_out latent
  touch $W/latent.done
fi
# ---- pixel arm: identity "cache" of the images, a UNet on 1x32x32 for PIXEL_MIN minutes ---------
if [ "$WHAT" = all ] || [ "$WHAT" = pixel ] && [ ! -f "$W/pixel.done" ]; then
  t0=$(now)
  par encode --config "$CONFIG" --vae.kind=identity --cache.dir=$W/pixel/cache --cache.dtype=f32 > $W/pixel_enc.log 2>&1
  echo "$(echo "$(now) - $t0" | bc)" > $W/pixel.prep_s
  timeout -s USR1 $((PIXEL_MIN * 60)) mpirun --oversubscribe --bind-to none -np "$RANKS" "$BIN" train --config "$CONFIG" \
    --threads 1 --vae.kind=identity --cache.dir=$W/pixel/cache --train.run_dir=$W/pixel/ldm --train.steps=1000000 \
    $PIXEL_MODEL --train.log_every=20 --train.ckpt_every=$PE --train.milestone_every=$PE \
    --train.val_cache= --train.sample_every=0 --train.lr_schedule=constant --resume auto > $W/pixel_train.log 2>&1 || timed_out pixel
  touch $W/pixel.done
fi
# ---- evaluate every checkpoint of both arms -------------------------------------------------------
[ "$WHAT" = all ] || [ "$WHAT" = eval ] || exit 0
for arm in latent pixel; do
  prep=$(cat "$W/$arm.prep_s")
  if [ $arm = latent ]; then every=${LF_LATENT_EVAL_EVERY:-1}; else every=${LF_PIXEL_EVAL_EVERY:-1}; fi
  last=$(ls -d "$W/$arm"/ldm/checkpoints/step-* | tail -1)
  for ck in "$W/$arm"/ldm/checkpoints/step-*; do
    [ -f "$ck/state.json" ] || continue
    step=$((10#${ck##*step-}))
    [ $((step % every)) -eq 0 ] || [ "$ck" = "$last" ] || continue
    out=$W/$arm/eval/$(basename "$ck")
    if [ ! -f "$out/metrics.json" ]; then
      mkdir -p "$W/$arm/eval"
      "$BIN" sample --config "$CONFIG" --threads "$ET" --vae.weights= --sample.checkpoint="$ck" --sample.out_dir="$out" \
        ${LF_SAMPLE_ARGS:-} > "$out.sample.log" 2>&1
      "$BIN" eval --config "$CONFIG" --threads "$ET" --eval.vae=false --eval.classifier="$CLF" --eval.samples="$out/samples.h5" \
        --eval.out="$out/metrics.json" > "$out.eval.log" 2>&1
    fi
    /usr/bin/python3 - "$arm" "$ck" "$out/metrics.json" "$prep" >> "$W/results.jsonl" <<'PY'
import json, sys
arm, ck, mpath, prep = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
st = json.load(open(ck + "/state.json")); m = json.load(open(mpath))
print(json.dumps({"arm": arm, "step": st["step"], "train_s": st.get("train_seconds", 0), "prep_s": prep,
                  "wall_s": prep + st.get("train_seconds", 0), "fd": m["fd"], "fd_floor": m["fd_floor"],
                  "class_accuracy": m.get("class_accuracy"),
                  "prompt_macro_accuracy": m.get("prompt_category_macro_accuracy"),
                  "grid": mpath.replace("metrics.json", "grid.png")}))
PY
  done
done
/usr/bin/python3 "$SRC/tools/plot_latent_vs_pixel.py" "$W/results.jsonl" "$W/latent_vs_pixel.png"
