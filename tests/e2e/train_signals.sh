#!/usr/bin/env bash
# Stop signals end to end (launch/job.h, launch/signals.h): SIGUSR1 mid-run writes a checkpoint
# and exits 75 (requeue me), SIGTERM writes one and exits 143; `--resume auto` with the same
# config then completes the run bitwise equal to an uninterrupted one (a cosine schedule, so
# the learning rate must follow the resumed step). Under mpirun -np 2, SIGUSR1 sent to rank 1
# alone still stops both ranks at the same step (TrainSession::agree_stop) with one
# checkpoint. A SIGUSR1 during start-up is honoured at the first step, not fatal.
source "$(dirname "${BASH_SOURCE[0]}")/train_common.bash"
setup train_signals
make_cache

# The stop checkpoint and the final one only; cosine decay over the run's length.
F=(--train.lr_schedule=cosine --train.ckpt_every=100000)

# signal_run RUN_DIR SIGNAL K LAUNCH...: starts LAUNCH in the background, paused at the end of
# its K-th step (LF_PAUSE_AT=loop.step_end:K: the process stops itself there), sends SIGNAL,
# lets it go on and waits; RC = its exit status. The pause makes the signal land at that step
# however fast or loaded the machine is (polling metrics.jsonl raced a fast machine's run).
signal_run() {
  local run="$1" sig="$2" at="$3"
  shift 3
  LF_PAUSE_AT="loop.step_end:$at" "$@" >"$run.log" 2>&1 &
  local pid=$!
  wait_stopped "$pid" "$run.log"
  kill -s "$sig" "$pid"
  kill -CONT "$pid"
  RC=0
  wait "$pid" || RC=$?
}

echo "== 1 rank, 20 steps: SIGUSR1, resume, SIGTERM, resume to the end"
N=20
ONE=("$LF_BIN" train --cache.dir="$CACHE" "${TRAIN_FLAGS[@]}" --train.run_dir="$T/sig" "${F[@]}" --train.steps=$N)
signal_run "$T/sig" USR1 3 "${ONE[@]}"
expect_rc 75 "$T/sig" "the run sent SIGUSR1"
s1=$(last_checkpoint_step "$T/sig")
grep -q "SIGUSR1: checkpoint of step $s1 written; exiting with 75" "$T/sig.log" || fail "no SIGUSR1 message for step $s1"
((s1 < N - 4)) || fail "SIGUSR1 took effect only at step $s1 of $N"
echo "  stopped at step $s1"
signal_run "$T/sig" TERM 2 "${ONE[@]}" --resume auto  # 2 steps after the resumed step
expect_rc 143 "$T/sig" "the resumed run sent SIGTERM"
s2=$(last_checkpoint_step "$T/sig")
grep -q "SIGTERM: checkpoint of step $s2 written; exiting with 143" "$T/sig.log" || fail "no SIGTERM message for step $s2"
((s2 < N)) || fail "SIGTERM took effect only at the end (step $s2)"
echo "  stopped at step $s2"
run_ok "$T/sig" "the run resumed to the end" "${F[@]}" --train.steps=$N --resume auto
run_ok "$T/ref" "an uninterrupted run" "${F[@]}" --train.steps=$N
same_checkpoints "$(ckpt "$T/ref" $N)" "$(ckpt "$T/sig" $N)" --exact
metrics_steps "$T/sig" 1 $N
same_losses "$T/ref" "$T/sig"

echo "== 2 ranks, 12 steps: SIGUSR1 to rank 1 only"
N=12
# Both ranks stop themselves at the end of step 3; only rank 1 gets the signal.
LF_PAUSE_AT=loop.step_end:3 "${MPIRUN[@]}" "$LF_BIN" train --cache.dir="$CACHE" "${TRAIN_FLAGS[@]}" \
  --train.run_dir="$T/sig2" "${F[@]}" --train.steps=$N >"$T/sig2.log" 2>&1 &
mpid=$!
# The ranks: mpirun's children running latentforge (not a child still before its exec), each
# stopped at its pause point; rank 1 by its OMPI_COMM_WORLD_RANK.
rank1="" ranks=()
for _ in $(seq 1 1200); do
  ranks=($(pgrep -x -P "$mpid" latentforge || true))
  stopped=0
  for p in "${ranks[@]}"; do [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" = T ] && stopped=$((stopped + 1)); done
  ((${#ranks[@]} == 2 && stopped == 2)) && break
  sleep 0.05
done
((${#ranks[@]} == 2 && stopped == 2)) ||
  { ps -o pid,ppid,stat,comm --ppid "$mpid" >&2; kill "$mpid"; cat "$T/sig2.log" >&2; fail "expected 2 ranks of mpirun stopped at their pause point"; }
for p in "${ranks[@]}"; do
  if grep -qxz "OMPI_COMM_WORLD_RANK=1" "/proc/$p/environ" 2>/dev/null; then rank1=$p; fi
done
[[ -n "$rank1" ]] || { for p in "${ranks[@]}"; do echo "$p: $(tr '\0' ' ' <"/proc/$p/environ" | grep -o 'OMPI_COMM_WORLD_RANK=[0-9]*')" >&2; done; kill "$mpid"; fail "could not find rank 1 among mpirun's children: ${ranks[*]}"; }
echo "  mpirun is pid $mpid, rank 1 is pid $rank1; both paused after step 3"
kill -USR1 "$rank1"
kill -CONT "${ranks[@]}"
RC=0
wait "$mpid" || RC=$?
expect_rc 75 "$T/sig2" "mpirun after SIGUSR1 to rank 1"
s3=$(last_checkpoint_step "$T/sig2")
n=$(ls "$T/sig2/checkpoints" | grep -c '^step-')
[[ $n == 1 ]] || fail "expected the one stop checkpoint in $T/sig2/checkpoints, found $n"
((s3 < N)) || fail "SIGUSR1 took effect only at the end (step $s3)"
echo "  both ranks stopped at step $s3"
run_np2_ok "$T/sig2" "2 ranks resumed to the end" "${F[@]}" --train.steps=$N --resume auto
run_np2_ok "$T/ref2" "2 ranks uninterrupted" "${F[@]}" --train.steps=$N
same_checkpoints "$(ckpt "$T/ref2" $N)" "$(ckpt "$T/sig2" $N)" --exact
metrics_steps "$T/sig2" 1 $N

echo "== SIGUSR1 during start-up (the loop's start, before the cache is opened)"
run="$T/early"
LF_PAUSE_AT=loop.start_up "$LF_BIN" train --cache.dir="$CACHE" "${TRAIN_FLAGS[@]}" --train.run_dir="$run" "${F[@]}" \
  --train.steps=20 >"$run.log" 2>&1 &
pid=$!
wait_stopped "$pid" "$run.log"
kill -USR1 "$pid"; kill -CONT "$pid"
RC=0
wait "$pid" || RC=$?
expect_rc 75 "$run" "a run sent SIGUSR1 while starting"
grep -q "SIGUSR1: checkpoint of step $(last_checkpoint_step "$run") written" "$run.log" || fail "no stop checkpoint"
echo "PASS"
