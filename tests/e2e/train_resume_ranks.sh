#!/usr/bin/env bash
# docs/design.md, invariant 2: a checkpoint written by 2 ranks resumes on 1 rank (and one written by 1
# rank on 2) and continues the same batches with the same noise: the result equals a 2-rank run
# of the same total length to float32 tolerance (same global batch).
source "$(dirname "${BASH_SOURCE[0]}")/train_common.bash"
setup train_resume_ranks
make_cache

F=(--train.ckpt_every=3)
TOL=(--atol=1e-6 --rtol=1e-4)

run_np2_ok "$T/ref" "2 ranks, 6 steps straight" "${F[@]}" --train.steps=6
echo "  (the tolerance is tight enough to see training: steps 4-6 exceed it)"
different_checkpoints "$(ckpt "$T/ref" 3)" "$(ckpt "$T/ref" 6)" "${TOL[@]}" >/dev/null

echo "== 2 ranks for 3 steps, then 1 rank for 3 more"
run_np2_ok "$T/down" "2 ranks, first 3 steps" "${F[@]}" --train.steps=3
run_ok "$T/down" "1 rank, resume to 6" "${F[@]}" --train.steps=6 --resume auto
grep -q "resuming from .*step-00000003 at step 3" "$T/down.log" || fail "the 1-rank run did not resume from step 3"
same_checkpoints "$(ckpt "$T/ref" 6)" "$(ckpt "$T/down" 6)" "${TOL[@]}"
metrics_steps "$T/down" 1 6

echo "== 1 rank for 3 steps, then 2 ranks for 3 more"
run_ok "$T/up" "1 rank, first 3 steps" "${F[@]}" --train.steps=3
run_np2_ok "$T/up" "2 ranks, resume to 6" "${F[@]}" --train.steps=6 --resume auto
same_checkpoints "$(ckpt "$T/ref" 6)" "$(ckpt "$T/up" 6)" "${TOL[@]}"
metrics_steps "$T/up" 1 6
echo "PASS"
