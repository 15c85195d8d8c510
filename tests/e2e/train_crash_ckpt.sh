#!/usr/bin/env bash
# docs/design.md, invariant 3: a process killed (SIGKILL) at each named point of a checkpoint write
# leaves the previous checkpoint valid; `--resume auto` picks it and the finished run is
# bitwise equal to one never interrupted, with one metrics record per step.
source "$(dirname "${BASH_SOURCE[0]}")/train_common.bash"
setup train_crash_ckpt
make_cache

# Checkpoints at 2, 4, 6; keep_last=1 so writing step 4 deletes step 2.
F=(--train.steps=6 --train.ckpt_every=2 --train.keep_last=1)
run_ok "$T/ref" "uninterrupted run" "${F[@]}"

# crash point (its hit: the write of step 4), and the checkpoint a resume must pick.
for spec in "ckpt.after_tensors:2 2" "ckpt.before_rename:2 2" "ckpt.during_delete:1 4"; do
  read -r point want <<<"$spec"
  name=${point%%:*}
  run="$T/${name#ckpt.}"
  echo "== LF_CRASH_AT=$point"
  LF_CRASH_AT=$point train "$run" "${F[@]}"
  expect_rc 137 "$run" "the run killed at $point"
  grep -q "killing the process at crash point '$name'" "$run.log" || fail "$run.log does not show the crash point"
  train "$run" "${F[@]}" --resume auto
  expect_rc 0 "$run" "the resumed run"
  grep -q "resuming from .*step-$(printf %08d "$want") at step $want" "$run.log" ||
    { grep -i "resum\|skipping" "$run.log" >&2; fail "after $point the resume did not pick step $want"; }
  same_checkpoints "$(ckpt "$T/ref" 6)" "$(ckpt "$run" 6)" --exact
  metrics_steps "$run" 1 6
  same_losses "$T/ref" "$run"
  leftovers=$(ls -A "$run/checkpoints")
  [[ "$leftovers" == "step-00000006" ]] || fail "after the resumed run $run/checkpoints holds: $leftovers"
done
echo "PASS"
