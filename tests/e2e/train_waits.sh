#!/usr/bin/env bash
# docs/design.md, invariant 10, the waits of a 2-rank job:
#  * MPI_Init, the communicator set-up and MPI_Finalize wait for every rank, so a peer that hangs
#    before them would hold the others for ever (they have no deadline of their own). With rank 1
#    stopped (SIGSTOP) just before MPI_Init, or just before MPI_Finalize, the job ends by itself
#    within dist.timeout_s + 10 s, non-zero, with a message naming the phase
#    (LF_PAUSE_AT=runtime.mpi_init / runtime.finalize, given to rank 1 only through mpirun's
#    MPMD syntax).
#  * Work rank 0 does alone is waited for under dist.checkpoint_timeout_s, not dist.timeout_s:
#    rank 0 held in a periodic sample grid and in the end-of-run grid for twice dist.timeout_s
#    (LF_PAUSE_AT=ldm.grid, continued by this script) does not end the job, and the run equals one
#    that drew no grid.
source "$(dirname "${BASH_SOURCE[0]}")/train_common.bash"
setup train_waits
make_cache
TIMEOUT_S=10

for spec in "runtime.mpi_init MPI_Init at start-up" "runtime.finalize MPI_Finalize at the end"; do
  read -r point phase <<<"$spec"
  run="$T/${point#runtime.}"
  ARGS=(train --cache.dir="$CACHE" "${TRAIN_FLAGS[@]}" --train.run_dir="$run" --train.steps=2
        --dist.timeout_s=$TIMEOUT_S)
  echo "== rank 1 stopped at $point"
  start=$SECONDS
  RC=0
  timeout 120 mpirun --oversubscribe --bind-to none -np 1 "$LF_BIN" "${ARGS[@]}" \
    : -np 1 env LF_PAUSE_AT="$point" "$LF_BIN" "${ARGS[@]}" >"$run.log" 2>&1 || RC=$?
  elapsed=$((SECONDS - start))
  echo "  mpirun exited with $RC after ${elapsed} s"
  [[ $RC != 0 && $RC != 124 ]] || { tail -n 30 "$run.log" >&2; fail "expected a non-zero exit (not the 120 s timeout), got $RC"; }
  ((elapsed <= TIMEOUT_S + 10)) || { tail -n 30 "$run.log" >&2; fail "the job took ${elapsed} s to end (limit $((TIMEOUT_S + 10)) s)"; }
  grep -q "LF_PAUSE_AT: stopping the process at pause point '$point'" "$run.log" || fail "rank 1 did not stop at $point"
  grep -q "\[rank 0/2 .*\] $phase (it waits for every rank to .*) has not completed after" "$run.log" ||
    { tail -n 30 "$run.log" >&2; fail "the output does not name the phase '$phase'"; }
  grep "has not completed" "$run.log" | head -n 1 | sed 's/^/  /'
done

echo "== rank 0 held in its sample grids for 2 x dist.timeout_s"
TIMEOUT_S=3
G=(--train.steps=4 --train.ckpt_every=2 --dist.timeout_s=$TIMEOUT_S --dist.checkpoint_timeout_s=60)
run_np2_ok "$T/no_grid_wait" "the reference (no pause)" "${G[@]}" --train.sample_every=2
run="$T/grid_wait"
LF_PAUSE_AT=ldm.grid "${MPIRUN[@]}" "$LF_BIN" train --cache.dir="$CACHE" "${TRAIN_FLAGS[@]}" --train.run_dir="$run" \
  "${G[@]}" --train.sample_every=2 >"$run.log" 2>&1 &
mp=$!
# The grid of step 2 (periodic) and the final one: continue rank 0 each time after 2 x timeout.
for grid in periodic final; do
  stopped=""
  for _ in $(seq 600); do
    for p in $(pgrep -P "$mp" || true); do
      [[ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" == T ]] && stopped=$p
    done
    [[ -n $stopped ]] && break
    kill -0 "$mp" 2>/dev/null || break
    sleep 0.05
  done
  [[ -n $stopped ]] || { tail -n 30 "$run.log" >&2; fail "rank 0 did not stop in its $grid grid"; }
  sleep $((2 * TIMEOUT_S))
  echo "  rank 0 (pid $stopped) held in the $grid grid for $((2 * TIMEOUT_S)) s; continuing it"
  kill -CONT "$stopped"
  for _ in $(seq 100); do
    [[ "$(awk '{print $3}' "/proc/$stopped/stat" 2>/dev/null)" == T ]] || break
    sleep 0.05
  done
done
RC=0
wait "$mp" || RC=$?
expect_rc 0 "$run" "the run whose rank 0 drew slow grids"
[[ $(grep -c "LF_PAUSE_AT: stopping the process at pause point 'ldm.grid'" "$run.log") == 2 ]] ||
  fail "rank 0 did not stop in both grids"
same_checkpoints "$(ckpt "$T/no_grid_wait" 4)" "$(ckpt "$run" 4)" --exact
echo "PASS"
