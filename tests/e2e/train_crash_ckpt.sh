#!/usr/bin/env bash
# docs/design.md, invariant 3: a process killed (SIGKILL) at each named point of a checkpoint write
# leaves the previous checkpoint valid; `--resume auto` picks it and the finished run is
# bitwise equal to one never interrupted, with one metrics record per step. And the abandoned
# history (docs/cli.md, "Resuming"): after `--resume` of an older checkpoint, `--resume auto`
# (what every requeue passes) continues the resumed history, also when the run was killed while
# moving the later checkpoints aside.
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
  crash_then_resume "$run" "$point" "$want" "${F[@]}"
  same_checkpoints "$(ckpt "$T/ref" 6)" "$(ckpt "$run" 6)" --exact
  metrics_steps "$run" 1 6
  same_losses "$T/ref" "$run"
  leftovers=$(ls -A "$run/checkpoints")
  [[ "$leftovers" == "step-00000006" ]] || fail "after the resumed run $run/checkpoints holds: $leftovers"
done
echo "== --resume of an older checkpoint; then --resume auto follows that history"
H=(--train.ckpt_every=2 --train.keep_last=5)
run="$T/history"
run_ok "$run" "6 steps (checkpoints 2, 4, 6)" --train.steps=6 "${H[@]}"
run_ok "$run" "resumed at step 2, stopped at 3" --train.steps=3 "${H[@]}" --resume "$(ckpt "$run" 2)"
grep -q "moved a later checkpoint aside (not in the history being resumed) to .*abandoned-.*/step-00000006" "$run.log" ||
  fail "the later checkpoints were not moved aside (log: $run.log)"
run_ok "$run" "--resume auto to 6" --train.steps=6 "${H[@]}" --resume auto
grep -q "resuming from .*step-00000003 at step 3" "$run.log" ||
  { grep -i "resuming" "$run.log" >&2; fail "--resume auto jumped to the abandoned history"; }
same_checkpoints "$(ckpt "$T/ref" 6)" "$(ckpt "$run" 6)" --exact
ls -d "$run"/checkpoints/abandoned-*/step-00000004 "$run"/checkpoints/abandoned-*/step-00000006 >/dev/null ||
  fail "the abandoned checkpoints are not kept"
"$LF_BIN" inspect "$run" >"$T/inspect.txt" || fail "inspect of $run failed"
grep -q "abandoned history (not resumed, never pruned)" "$T/inspect.txt" || fail "inspect does not show the abandoned history"

echo "== a malformed state.json invalidates its checkpoint only: inspect and --resume auto skip it"
echo '{"kind": "ldm", "step": 6, "files": ' >"$(ckpt "$run" 6)/state.json"
"$LF_BIN" inspect "$run" >"$T/inspect.txt" || { cat "$T/inspect.txt"; fail "inspect of a run with one bad state.json failed"; }
grep -q "warning: skipping invalid checkpoint .*step-00000006/state.json: unreadable or not valid JSON" "$T/inspect.txt" ||
  { cat "$T/inspect.txt"; fail "inspect does not name the bad state.json"; }
grep -q "newest valid: .*step-00000004" "$T/inspect.txt" || fail "inspect does not fall back to step 4"
run_ok "$run" "--resume auto past the bad checkpoint" --train.steps=6 "${H[@]}" --resume auto
grep -q "skipping invalid checkpoint .*step-00000006/state.json" "$run.log" || fail "the resume does not warn about step 6"
grep -q "resuming from .*step-00000004 at step 4" "$run.log" || fail "the resume did not fall back to step 4"
same_checkpoints "$(ckpt "$T/ref" 6)" "$(ckpt "$run" 6)" --exact

echo "== killed while moving the later history aside: --resume auto finishes the move"
run="$T/history_crash"
run_ok "$run" "6 steps (checkpoints 2, 4, 6)" --train.steps=6 "${H[@]}"
LF_CRASH_AT=ckpt.during_abandon train "$run" --train.steps=6 "${H[@]}" --resume "$(ckpt "$run" 2)"
expect_rc 137 "$run" "the resume killed during the move"
train "$run" --train.steps=6 "${H[@]}" --resume auto
expect_rc 0 "$run" "--resume auto after the interrupted move"
grep -q "resuming from .*step-00000002 at step 2" "$run.log" || fail "after the interrupted move, auto did not resume step 2"
same_checkpoints "$(ckpt "$T/ref" 6)" "$(ckpt "$run" 6)" --exact
echo "PASS"
