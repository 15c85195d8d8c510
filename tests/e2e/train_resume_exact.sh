#!/usr/bin/env bash
# docs/design.md, invariant 2: on the same ranks and threads, 2N steps straight and N steps, stop,
# `--resume auto` (with train.steps raised to 2N), N more give BITWISE identical parameters,
# EMA and optimizer state, the same loss at every step, and a metrics.jsonl with one record
# per step. Streaming reads (in_memory=false) and 2 micro-batches, across an epoch boundary.
source "$(dirname "${BASH_SOURCE[0]}")/train_common.bash"
setup train_resume_exact
make_cache

F=(--train.ckpt_every=5 --train.grad_accum=2 --train.in_memory=false)

echo "== 1 rank: 10 steps straight vs 5 + resume + 5"
run_ok "$T/straight" "10 steps straight" "${F[@]}" --train.steps=10
run_ok "$T/split" "first 5 steps" "${F[@]}" --train.steps=5
run_ok "$T/split" "resume to 10" "${F[@]}" --train.steps=10 --resume auto
grep -q "resuming from .*step-00000005 at step 5" "$T/split.log" || fail "the second run did not resume from step 5"
same_checkpoints "$(ckpt "$T/straight" 5)" "$(ckpt "$T/split" 5)" --exact
same_checkpoints "$(ckpt "$T/straight" 10)" "$(ckpt "$T/split" 10)" --exact
echo "  (not vacuous: steps 6-10 did change the weights)"
different_checkpoints "$(ckpt "$T/straight" 5)" "$(ckpt "$T/straight" 10)" --exact >/dev/null
metrics_steps "$T/split" 1 10
same_losses "$T/straight" "$T/split"

echo "== 2 ranks: 6 steps straight vs 3 + resume + 3"
run_np2_ok "$T/straight2" "2 ranks, 6 steps straight" "${F[@]}" --train.steps=6
run_np2_ok "$T/split2" "2 ranks, first 3 steps" "${F[@]}" --train.steps=3
run_np2_ok "$T/split2" "2 ranks, resume to 6" "${F[@]}" --train.steps=6 --resume auto
same_checkpoints "$(ckpt "$T/straight2" 6)" "$(ckpt "$T/split2" 6)" --exact
metrics_steps "$T/split2" 1 6
same_losses "$T/straight2" "$T/split2"
echo "PASS"
