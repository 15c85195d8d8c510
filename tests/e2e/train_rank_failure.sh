#!/usr/bin/env bash
# docs/design.md, invariant 6: an exception on one rank ends the whole mpirun job within seconds
# (not after a collective timeout), non-zero, and the output names that rank and its message.
# The failure is injected with LF_DEBUG_THROW_AT_STEP / LF_DEBUG_THROW_RANK (ldm_trainer.cpp).
# A rank killed outright in the middle of a checkpoint write ends the job as fast, and the
# 2-rank run then resumes from the previous checkpoint to the uninterrupted result.
source "$(dirname "${BASH_SOURCE[0]}")/train_common.bash"
setup train_rank_failure
make_cache

for rank in 1 0; do
  echo "== rank $rank throws at step 3"
  run="$T/fail$rank"
  start=$SECONDS
  RC=0
  # The collective timeout is raised so that only the abort path can end the job in time.
  LF_DEBUG_THROW_AT_STEP=3 LF_DEBUG_THROW_RANK=$rank timeout 120 "${MPIRUN[@]}" "$LF_BIN" train --cache.dir="$CACHE" \
    "${TRAIN_FLAGS[@]}" --train.run_dir="$run" --train.steps=100000 --dist.timeout_s=600 >"$run.log" 2>&1 || RC=$?
  elapsed=$((SECONDS - start))
  echo "  mpirun exited with $RC after ${elapsed} s"
  [[ $RC != 0 && $RC != 124 ]] || { tail -n 30 "$run.log" >&2; fail "expected a non-zero exit (not the 120 s timeout), got $RC"; }
  ((elapsed < 30)) || fail "the job took ${elapsed} s to end (limit 30 s)"
  grep -q "\[rank $rank/2 .*injected failure at step 3" "$run.log" ||
    { tail -n 30 "$run.log" >&2; fail "the output does not name rank $rank's error"; }
  grep "injected failure" "$run.log" | head -n 2 | sed 's/^/  /'
done
echo "== rank 0 killed (SIGKILL) while writing a checkpoint, rank 1 waiting for it"
run="$T/killed"
start=$SECONDS
RC=0
# Checkpoints at 2 and 4; rank 0 dies in the write of step 4, after its tensors are on disk.
LF_CRASH_AT=ckpt.after_tensors:2 timeout 120 "${MPIRUN[@]}" "$LF_BIN" train --cache.dir="$CACHE" "${TRAIN_FLAGS[@]}" \
  --train.run_dir="$run" --train.steps=6 --train.ckpt_every=2 --dist.timeout_s=600 --dist.checkpoint_timeout_s=600 \
  >"$run.log" 2>&1 || RC=$?
elapsed=$((SECONDS - start))
echo "  mpirun exited with $RC after ${elapsed} s"
[[ $RC != 0 && $RC != 124 ]] || { tail -n 30 "$run.log" >&2; fail "expected a non-zero exit (not the 120 s timeout), got $RC"; }
((elapsed < 30)) || fail "the job took ${elapsed} s to end (limit 30 s)"
grep -q "killing the process at crash point 'ckpt.after_tensors'" "$run.log" || fail "rank 0 did not reach the crash point"
echo "  then 2 ranks resume from step 2 and finish, equal to an uninterrupted 2-rank run"
run_np2_ok "$run" "the resumed 2-rank run" --train.steps=6 --train.ckpt_every=2 --resume auto
grep -q "resuming from .*step-00000002 at step 2" "$run.log" || fail "the resume did not pick step 2"
run_np2_ok "$T/ref" "an uninterrupted 2-rank run" --train.steps=6 --train.ckpt_every=2
same_checkpoints "$(ckpt "$T/ref" 6)" "$(ckpt "$run" 6)" --exact
metrics_steps "$run" 1 6
echo "PASS"
