#!/usr/bin/env bash
# train.async_checkpoint (docs/design.md, invariant 3, with background writes): checkpoints
# written in the background from host copies equal the synchronous ones bitwise; training goes
# on while one is written; the last step's checkpoint commits any background one first; a
# process killed (SIGKILL) inside a background write leaves the previous checkpoint valid and the
# resumed run equals one never interrupted; a failed background write ends every rank with its
# message; 2 ranks write the same checkpoints in the background as synchronously.
source "$(dirname "${BASH_SOURCE[0]}")/train_common.bash"
setup train_async_ckpt
make_cache

F=(--train.steps=6 --train.ckpt_every=2 --train.keep_last=3)
A=(--train.async_checkpoint=true)
run_ok "$T/sync" "synchronous checkpoints" "${F[@]}"
echo "== background checkpoints equal the synchronous ones"
run_ok "$T/async" "background checkpoints" "${F[@]}" "${A[@]}"
for s in 2 4 6; do same_checkpoints "$(ckpt "$T/sync" "$s")" "$(ckpt "$T/async" "$s")" --exact; done
same_losses "$T/sync" "$T/async"
n=$(grep -c "written and verified in [0-9]* ms (in the background)" "$T/async.log" || true)
[[ "$n" == 2 ]] || fail "expected the checkpoints of steps 2 and 4 written in the background, saw $n (log: $T/async.log)"
grep -q "checkpoint of step 4: training blocked for [0-9]* ms" "$T/async.log" || fail "no blocked time logged for step 4"
grep -q "step-00000006 written and verified in [0-9]* ms$" "$T/async.log" ||
  fail "the last step's checkpoint was not written before exit (log: $T/async.log)"

echo "== training goes on while a checkpoint is written; the last step commits it first"
run="$T/delay"
LF_DEBUG_CKPT_DELAY_MS=3000 train "$run" --train.steps=3 --train.ckpt_every=2 "${A[@]}"
expect_rc 0 "$run" "3 steps with a slow background write of step 2"
"$PY" - "$run.log" <<'PY' || fail "step 3 did not run while step 2's checkpoint was being written (log: $run.log)"
import re, sys
lines = open(sys.argv[1]).read().splitlines()
step3 = next(i for i, l in enumerate(lines) if "step 3/3" in l)
bg = next(i for i, l in enumerate(lines) if re.search(r"step-00000002 written and verified in \d+ ms \(in the background\)", l))
last = next(i for i, l in enumerate(lines) if re.search(r"step-00000003 written and verified", l))
print(f"  log lines: step 3 at {step3}, step 2's background commit at {bg}, step 3's checkpoint at {last}")
sys.exit(0 if step3 < bg < last else 1)
PY
"$LF_BIN" inspect "$(ckpt "$run" 2)" >/dev/null || fail "the background checkpoint of step 2 is not valid"
"$LF_BIN" inspect "$(ckpt "$run" 3)" >/dev/null || fail "the checkpoint of step 3 is not valid"

for spec in "ckpt.after_tensors:2 2" "ckpt.before_rename:2 2"; do
  read -r point want <<<"$spec"
  name=${point%%:*}
  run="$T/kill-${name#ckpt.}"
  echo "== LF_CRASH_AT=$point inside the background write of step 4"
  crash_then_resume "$run" "$point" "$want" "${F[@]}" "${A[@]}"
  same_checkpoints "$(ckpt "$T/sync" 6)" "$(ckpt "$run" 6)" --exact
  metrics_steps "$run" 1 6
  same_losses "$T/sync" "$run"
done

echo "== a failed background write ends both ranks with its message"
run="$T/fail"
t0=$SECONDS
LF_DEBUG_CKPT_FAIL=1 train_np2 "$run" "${F[@]}" "${A[@]}"
[[ "$RC" != 0 ]] || fail "a run whose background checkpoint failed exited 0"
grep -q "checkpoint of step 2 failed (written in the background): .*cannot write .*LF_DEBUG_CKPT_FAIL" "$run.log" ||
  { tail -n 30 "$run.log" >&2; fail "the background failure's message is not in the log"; }
(( SECONDS - t0 < 30 )) || fail "the job took $((SECONDS - t0)) s to end after the failure"
[[ ! -e "$(ckpt "$run" 6)" ]] || fail "the run went on to step 6 after a failed checkpoint"

echo "== 2 ranks: background checkpoints equal synchronous ones"
run_np2_ok "$T/np2_sync" "2 ranks, synchronous" "${F[@]}"
run_np2_ok "$T/np2_async" "2 ranks, background" "${F[@]}" "${A[@]}"
for s in 2 4 6; do same_checkpoints "$(ckpt "$T/np2_sync" "$s")" "$(ckpt "$T/np2_async" "$s")" --exact; done
echo "PASS"
