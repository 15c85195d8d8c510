#!/usr/bin/env bash
# docs/cli.md, "The run directory lock": while one `train` holds train.run_dir (here stopped at
# the loop's start), a second one is refused (exit 2) with a message naming the holder, and the
# readers (`inspect`, `sample`) work without the lock. A holder killed with -9 leaves a stale
# lock that the next run takes over (logged); a lock recorded by another host is refused unless
# it is this Slurm job requeued or --break-lock is given; a clean end clears the record.
source "$(dirname "${BASH_SOURCE[0]}")/train_common.bash"
setup train_run_lock
make_cache
run="$T/run"
LOCK="$run/writer.lock"
HOST=$(hostname -s)

run_ok "$run" "a first run (2 steps)" --train.steps=2 --train.ckpt_every=1
[[ ! -s "$LOCK" ]] || fail "a clean end left a lock record: $(cat "$LOCK")"

echo "== a holder stopped at the start of its loop"
LF_PAUSE_AT=loop.start_up "$LF_BIN" train --cache.dir="$CACHE" "${TRAIN_FLAGS[@]}" --train.run_dir="$run" \
  --train.steps=4 --resume auto >"$T/holder.log" 2>&1 &
holder=$!
for _ in $(seq 200); do
  [[ "$(awk '{print $3}' "/proc/$holder/stat" 2>/dev/null)" == T ]] && break
  sleep 0.05
done
[[ "$(awk '{print $3}' "/proc/$holder/stat")" == T ]] || { cat "$T/holder.log"; fail "the holder did not stop at loop.start_up"; }
grep -q "\"pid\": $holder" "$LOCK" || fail "the lock does not record the holder: $(cat "$LOCK")"

train "$run" --train.steps=4 --resume auto
expect_rc 2 "$run" "a second writer"
grep -q "writer.lock: train.run_dir is being written by host $HOST, pid $holder" "$run.log" ||
  { cat "$run.log" >&2; fail "the refusal does not name the holder"; }

echo "== readers need no lock"
"$LF_BIN" inspect "$run" >"$T/inspect.txt" 2>&1 || { cat "$T/inspect.txt"; fail "inspect failed while the lock was held"; }
grep -q "being written by host $HOST, pid $holder" "$T/inspect.txt" || fail "inspect does not show the holder"
"$LF_BIN" sample --sample.checkpoint="$run" --sample.num=10 --sample.steps=1 --sample.out_dir="$T/samples" \
  --threads=1 >"$T/sample.log" 2>&1 || { tail "$T/sample.log"; fail "sample failed while the lock was held"; }
[[ -f "$T/samples/grid.png" ]] || fail "sample wrote no grid"

echo "== the holder killed with -9: its stale lock is taken over"
kill -9 "$holder"
wait "$holder" 2>/dev/null || true
run_ok "$run" "the next run" --train.steps=4 --resume auto
grep -q "taking over the stale lock of host $HOST, pid $holder" "$run.log" || fail "the take-over is not logged"
[[ ! -s "$LOCK" ]] || fail "a clean end left a lock record"

echo "== a lock recorded by another host"
record() { printf '{"host": "elsewhere", "pid": 4242, "slurm_job_id": "%s", "started": "2030-01-01T00:00:00Z", "command": "latentforge train"}\n' "$1" >"$LOCK"; }
record 9001
train "$run" --train.steps=5 --resume auto
expect_rc 2 "$run" "a run while another host's job holds the lock"
grep -q "being written by host elsewhere, pid 4242, Slurm job 9001" "$run.log" || fail "the refusal does not name the host"
grep -q "pass --break-lock" "$run.log" || fail "the refusal does not name --break-lock"
SLURM_JOB_ID=9001 train "$run" --train.steps=5 --resume auto
expect_rc 0 "$run" "a requeue of Slurm job 9001"
grep -q "taking over the lock of Slurm job 9001" "$run.log" || fail "the requeue's take-over is not logged"
record 17
run_ok "$run" "--break-lock" --train.steps=6 --resume auto --break-lock
grep -q -- "--break-lock: breaking the lock of host elsewhere, pid 4242, Slurm job 17" "$run.log" || fail "the break is not logged"
grep -q "resuming from .*step-00000005 at step 5" "$run.log" || fail "the run did not continue from step 5"
echo "PASS"
