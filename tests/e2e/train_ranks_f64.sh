#!/usr/bin/env bash
# docs/design.md, invariants 1-2: in float64, 2 ranks x B/2 give the same parameters, AdamW moments
# and EMA as 1 rank x B after N steps (to ~1e-10: only the order of the gradient sums
# differs), with and without gradient accumulation; and two negative controls that break the
# invariant on purpose (LF_DEBUG_SUM_GRADS, LF_DEBUG_RANK_NOISE) must make the comparison fail.
source "$(dirname "${BASH_SOURCE[0]}")/train_common.bash"
setup train_ranks_f64
# 28 samples with flipped copies (so the per-sample flip is drawn too): 3.5 steps of 8 per
# epoch, so step 4 spans the epoch boundary.
make_cache --data.limit=28 --cache.flip=true

# Every keyed draw is in play: posterior sample, flip, timestep, noise, offset noise, label
# dropout (0.1 by default), dropout masks. No gradient clipping, so a gradient twice too large
# (the sum control) reaches the AdamW moments unscaled. float64 convolutions are slow on CPU:
# an even smaller UNet than the other tests'.
F=(--train.precision=f64 --train.steps=4 --train.ckpt_every=4 --train.grad_clip=0
  --model.dropout=0.1 --diffusion.offset_noise=0.1
  --model.channels=8 --model.head_channels=8 --model.norm_groups=4)
TOL=(--atol=1e-13 --rtol=1e-9)

echo "== 1 rank vs 2 ranks, global batch 8"
run_ok "$T/w1" "1 rank" "${F[@]}"
run_np2_ok "$T/w2" "2 ranks" "${F[@]}"
same_checkpoints "$(ckpt "$T/w1" 4)" "$(ckpt "$T/w2" 4)" "${TOL[@]}"

echo "== with train.grad_accum=2 (1 rank: 2 x 4; 2 ranks: 2 x 2 each)"
run_ok "$T/w1a" "1 rank, accum 2" "${F[@]}" --train.grad_accum=2
run_np2_ok "$T/w2a" "2 ranks, accum 2" "${F[@]}" --train.grad_accum=2
same_checkpoints "$(ckpt "$T/w1a" 4)" "$(ckpt "$T/w2a" 4)" "${TOL[@]}"
echo "== accumulation changes nothing either (1 rank x 8 vs 1 rank x 2 x 4)"
same_checkpoints "$(ckpt "$T/w1" 4)" "$(ckpt "$T/w1a" 4)" "${TOL[@]}"

echo "== negative control: LF_DEBUG_SUM_GRADS=1 (2 ranks sum instead of average) must differ"
LF_DEBUG_SUM_GRADS=1 run_np2_ok "$T/sum" "2 ranks, summed gradients" "${F[@]}"
grep -q "LF_DEBUG_SUM_GRADS" "$T/sum.log" || fail "the run did not report the active debug switch"
different_checkpoints "$(ckpt "$T/w1" 4)" "$(ckpt "$T/sum" 4)" "${TOL[@]}"

echo "== negative control: LF_DEBUG_RANK_NOISE=1 (draws keyed by seed + rank) must differ"
LF_DEBUG_RANK_NOISE=1 run_np2_ok "$T/noise" "2 ranks, per-rank noise" "${F[@]}"
different_checkpoints "$(ckpt "$T/w1" 4)" "$(ckpt "$T/noise" 4)" "${TOL[@]}"
echo "PASS"
