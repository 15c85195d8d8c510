#!/usr/bin/env bash
# End-to-end test of cluster/slurm/*.sbatch and cluster/mpirun/launch.sh on a real one-node
# Slurm cluster that it starts on localhost (cluster/slurm-local/up.sh, private directory and
# ports) and always stops again (down.sh, also on failure). On a Fashion-MNIST cache (identity
# VAE, 512 images) it checks:
#   * encode.sbatch (2 srun tasks), encode-array.sbatch (3 tasks) + encode-finalize.sbatch,
#     mpirun in a plain 2-task allocation (rank discovery without LF_RANK_SOURCE) and
#     launch.sh -n 2 all write the cache of a single-process encode (same shard checksums,
#     sample count and scale factor); `latentforge inspect` verifies each;
#   * train.sbatch, srun, 2 tasks: completes with the expected steps and checkpoints;
#   * train.sbatch, mpirun, 2 tasks, given `scancel --batch --signal=USR1` mid-run: checkpoints,
#     exits 75, requeues itself (same job id, Restarts=1), resumes and ends with model, EMA and
#     optimizer state bit-for-bit equal to the uninterrupted run;
#   * train.sbatch under a real time limit (--time=2 --signal=B:USR1@30): Slurm's warning
#     reaches the trainer, which checkpoints; LF_MAX_RESTARTS=0 stops the requeue;
#   * train.sbatch with a rank killed (LF_CRASH_AT), or one task failing at start-up while the
#     other waits in MPI_Init (only --kill-on-bad-exit ends that): the job fails at once and is
#     not requeued;
#   * sample-eval.sbatch (sample stage) on the trained run.
# Needs root, slurmctld/slurmd/slurm-client/munge and Open MPI (cluster/install-deps.sh);
# fails, naming what is missing, without them. About 1.5-3 minutes, most of it waiting for the
# time-limit warning.
set -euo pipefail
# ctest's own timeout would SIGKILL us past the cleanup: stop ourselves earlier, with SIGTERM,
# which the EXIT trap below turns into a teardown of the cluster.
if [ -z "${LF_SLURM_TEST_WATCHED:-}" ]; then
  LF_SLURM_TEST_WATCHED=1 exec timeout --foreground -s TERM -k 60 "${LF_SLURM_TEST_LIMIT_S:-900}" bash "$0" "$@"
fi
T0=$SECONDS
SRC=${LF_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
LF_BIN=${LF_BIN:?set LF_BIN to the latentforge executable (ctest does)}
TMP_ROOT=${LF_TEST_TMP:-/tmp}
PY=/usr/bin/python3
STEPS=30

note() { echo "[slurm_cluster +$((SECONDS - T0))s] $*"; }
fail() { echo "[slurm_cluster +$((SECONDS - T0))s] FAIL: $*" >&2; exit 1; }

# ---- prerequisites: fail (not skip) with what to install --------------------------------
[ "$(id -u)" = 0 ] || fail "must run as root: the test cluster's daemons run as root (cluster/slurm-local/up.sh)"
missing=()
for b in slurmctld slurmd sbatch srun scontrol squeue scancel sinfo munged munge mpirun; do
  command -v "$b" >/dev/null || missing+=("$b")
done
[ ${#missing[@]} -eq 0 ] || fail "missing ${missing[*]}: run cluster/install-deps.sh (it installs slurmctld slurmd slurm-client munge openmpi-bin libpmix-dev)"
[ -e /usr/lib/x86_64-linux-gnu/pmix2/lib/libpmix.so ] || [ ! -d /usr/lib/x86_64-linux-gnu ] ||
  fail "libpmix.so (package libpmix-dev) is missing: srun --mpi=pmix cannot load PMIx; run cluster/install-deps.sh"
$PY -c 'import numpy' 2>/dev/null || fail "$PY cannot import numpy: apt-get install python3-numpy"
[ -x "$LF_BIN" ] || fail "LF_BIN=$LF_BIN is not an executable"
LF_BIN=$(cd "$(dirname "$LF_BIN")" && pwd)/$(basename "$LF_BIN")

# A clean client environment: no outer Slurm job or mpirun leaks into ours.
for v in $(compgen -e | grep -E '^(SLURM_|OMPI_COMM_WORLD_|PMIX_RANK|LF_RANK_SOURCE|LF_CRASH_AT)' || true); do unset "$v"; done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# ---- a private cluster: own directory (munge's socket path must stay short) and free ports --
mkdir -p "$TMP_ROOT"
DIR=$(mktemp -d "$TMP_ROOT/slurm_cluster.XXXXXX")
if [ ${#DIR} -gt 80 ]; then rmdir "$DIR"; DIR=$(mktemp -d /tmp/slurm_cluster.XXXXXX); fi
WORK=$DIR/work
mkdir -p "$WORK"
CLUSTER_UP=0
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

cleanup() {
  local rc=$?
  trap - EXIT; trap "" INT TERM HUP  # finish the teardown whatever comes
  if [ "$rc" != 0 ]; then
    echo "---- slurm_cluster failed (rc $rc); job logs in $WORK, daemon logs in $DIR/log ----" >&2
    for f in "$WORK"/*.out; do
      [ -f "$f" ] || continue
      echo "---- $(basename "$f") (last 25 lines, config dump left out)" >&2
      grep -vE '^[a-z_0-9]+ = |^\[[a-z]+\]$|^$' "$f" | tail -n 25 >&2
    done
    [ -f "$DIR/log/slurmctld.log" ] && { echo "---- slurmctld.log (last 15 lines)" >&2; tail -n 15 "$DIR/log/slurmctld.log" >&2; }
  fi
  if [ "$CLUSTER_UP" = 1 ]; then
    note "stopping the test cluster in $DIR"
    # down.sh stops only the daemons up.sh recorded in DIR and processes marked with DIR.
    "$SRC/cluster/slurm-local/down.sh" "$DIR" >&2 || true
  fi
  if [ "$rc" = 0 ]; then rm -rf "$DIR"; fi
  note "done (rc $rc)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

for _ in 1 2 3 4 5 6 7 8 9 10; do
  CTLD_PORT=$((20000 + RANDOM % 20000)); SLURMD_PORT=$((CTLD_PORT + 1))
  port_busy "$CTLD_PORT" || port_busy "$SLURMD_PORT" || break
done
note "starting a one-node Slurm cluster in $DIR (ports $CTLD_PORT/$SLURMD_PORT)"
CLUSTER_UP=1
if ! SLURM_LOCAL_CPUS=12 SLURM_LOCAL_CTLD_PORT=$CTLD_PORT SLURM_LOCAL_SLURMD_PORT=$SLURMD_PORT \
    "$SRC/cluster/slurm-local/up.sh" "$DIR" > "$DIR/up.log" 2>&1; then
  sed 's/^/  /' "$DIR/up.log" >&2
  fail "up.sh could not start the cluster (logs in $DIR/log)"
fi
sed 's/^/  /' "$DIR/up.log"
export SLURM_CONF=$DIR/etc/slurm.conf
cd "$WORK"

# ---- helpers -----------------------------------------------------------------------------
S=$SRC/cluster/slurm
# submit ARGS...: sbatch --parsable; the jobs carry SLURM_LOCAL_DIR=DIR so that down.sh also
# sweeps any process of theirs that outlives the daemons.
submit() { SLURM_LOCAL_DIR=$DIR sbatch --parsable "$@" | cut -d';' -f1; }
# field JOBID NAME: NAME=value of each of the job's records (one per array task)
field() { scontrol show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p"; }
is_terminal() { case "$1" in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|PREEMPTED) return 0 ;; esac; return 1; }
# wait_job JOBID SECONDS: until every record of the job is in a final state
wait_job() {
  local deadline=$((SECONDS + $2)) st s done_all
  while [ $SECONDS -lt $deadline ]; do
    st=$(field "$1" JobState)
    done_all=1
    [ -n "$st" ] || done_all=0
    for s in $st; do is_terminal "$s" || done_all=0; done
    [ "$done_all" = 1 ] && return 0
    sleep 1
  done
  fail "job $1 not finished after $2 s (states: $(field "$1" JobState | tr '\n' ' '))"
}
# expect_job JOBID STATE EXITCODE RESTARTS WHAT: every record matches
expect_job() {
  local st ec rs
  st=$(field "$1" JobState | sort -u | tr '\n' ' ')
  ec=$(field "$1" ExitCode | sort -u | tr '\n' ' ')
  rs=$(field "$1" Restarts | sort -u | tr '\n' ' ')
  [ "$st" = "$2 " ] && [ "$ec" = "$3 " ] && [ "$rs" = "$4 " ] ||
    fail "$5: job $1 ended with JobState=$st ExitCode=$ec Restarts=$rs; expected $2, $3, Restarts=$4"
  note "$5: job $1 $2, ExitCode $3, Restarts $4"
}
# log_has FILE REGEX WHAT
log_has() { grep -qE -- "$2" "$1" || fail "$3: $(basename "$1") has no line matching '$2'"; }
last_step() { tail -n 1 "$1/metrics.jsonl" 2>/dev/null | grep -o '"step":[0-9]*' | cut -d: -f2; }
# same_cache REF OTHER WHAT: shard list (file, begin, count, sha256), sample count and scale
# factor of manifest.json equal; then `latentforge inspect` verifies OTHER's shards.
same_cache() {
  local shards
  shards=$($PY - "$1/manifest.json" "$2/manifest.json" 2>&1 <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
def key(m):
    return ([(s["file"], s["begin"], s["count"], s["sha256"]) for s in m["shards"]],
            m["num_samples"], m["scale_factor"])
ka, kb = key(a), key(b)
if ka != kb:
    for name, x, y in zip(("shards", "num_samples", "scale_factor"), ka, kb):
        if x != y:
            print(f"  {name}: {sys.argv[1]} has {x}\n  {name}: {sys.argv[2]} has {y}")
    sys.exit(1)
print(len(kb[0]))
EOF
  ) || fail "$3: cache $2 differs from $1:
$shards"
  "$LF_BIN" inspect "$2" > "$WORK/inspect-$(basename "$2").txt" 2>&1 ||
    fail "$3: latentforge inspect $2 failed: $(tail -n 3 "$WORK/inspect-$(basename "$2").txt")"
  note "$3: $2 has the shards of the single-process encode ($shards shards) and verifies"
}

cat > enc.ini <<'EOF'
[vae]
kind = identity
[data]
limit = 512
[cache]
shard_size = 128
EOF
# A tiny UNet, few steps, 1 thread per rank: the machine has 2 cores.
cat > train.ini <<EOF
[vae]
kind = identity
[cache]
dir = $WORK/cache-single
[model]
channels = 16
channel_mult = 1,2
num_res_blocks = 1
attention_ds = 2
head_channels = 16
norm_groups = 8
[train]
steps = $STEPS
batch_size = 16
warmup_steps = 5
log_every = 2
ckpt_every = 10
grid_per_class = 1
grid_steps = 1
EOF
export LF_BIN LF_THREADS=1

# ---- the reference cache: one process, no launcher --------------------------------------
"$LF_BIN" encode --config enc.ini --cache.dir=cache-single --threads 1 > encode-single.log 2>&1 ||
  fail "single-process encode failed: $(tail -n 3 encode-single.log)"
note "single-process encode: cache-single"

# ---- the time-limit job goes first: it waits for slurmctld's 30-s warning pass ------------
# --time=2 with B:USR1@30: the warning comes 60-90 s after the start. Its trainer starts 45 s
# in (slow-start.sh), so it trains only while waiting for the warning, and cannot be warned
# before its handlers are installed. LF_MAX_RESTARTS=0: checkpoint, then no requeue.
cat > slow-start.sh <<EOF
#!/bin/bash
# test helper: start the trainer late in a job's first run (see slurm_cluster.sh)
[ "\${SLURM_RESTART_COUNT:-0}" = 0 ] && sleep 45
exec "$LF_BIN" "\$@"
EOF
chmod +x slow-start.sh
J_LIMIT=$(LF_CONFIG=train.ini LF_BIN=$WORK/slow-start.sh LF_MAX_RESTARTS=0 \
  LF_ARGS="--train.run_dir=run-limit --train.steps=1000000 --train.batch_size=2 --train.ckpt_every=1000000 --train.log_every=50" \
  submit --ntasks=1 --time=2 --signal=B:USR1@30 "$S/train.sbatch")
note "submitted the time-limit job $J_LIMIT (--time=2 --signal=B:USR1@30)"

# ---- precompute: MPI job, job array + finalize, mpirun in a bare allocation ---------------
J_ENC=$(LF_CONFIG=enc.ini LF_ARGS="--cache.dir=cache-mpi" submit --ntasks=2 "$S/encode.sbatch")
J_ARR=$(LF_CONFIG=enc.ini LF_ARGS="--cache.dir=cache-array" submit --array=0-2 "$S/encode-array.sbatch")
J_FIN=$(LF_CONFIG=enc.ini LF_ARGS="--cache.dir=cache-array" submit --dependency=afterok:"$J_ARR" "$S/encode-finalize.sbatch")
# No LF_RANK_SOURCE: mpirun's ranks inherit the batch script's SLURM_PROCID=0/SLURM_NTASKS=2,
# and rank discovery must ignore them (distributed/rank_info.cpp).
J_WRAP=$(submit --ntasks=2 --output=lf-wrap-%j.out \
  --wrap="mpirun -np 2 --bind-to none $LF_BIN encode --config enc.ini --cache.dir=cache-wrap --threads 1")
note "submitted encode $J_ENC, array $J_ARR + finalize $J_FIN, mpirun-in-allocation $J_WRAP"

# ---- training: reference (srun), to be interrupted (mpirun), crashing (srun) --------------
J_REF=$(LF_CONFIG=train.ini LF_ARGS="--train.run_dir=run-ref" submit "$S/train.sbatch")
J_INT=$(LF_CONFIG=train.ini LF_LAUNCHER=mpirun LF_ARGS="--train.run_dir=run-int" submit "$S/train.sbatch")
J_CRASH=$(LF_CONFIG=train.ini LF_CRASH_AT=ckpt.after_tensors \
  LF_ARGS="--train.run_dir=run-crash --train.ckpt_every=2" submit "$S/train.sbatch")
# A task that fails before MPI_Init leaves the others waiting in MPI_Init for good: only srun's
# --kill-on-bad-exit=1 ends that step.
cat > fail-rank1.sh <<EOF
#!/bin/bash
# test helper: task 1 fails at start-up (see slurm_cluster.sh)
[ "\$SLURM_PROCID" = 1 ] && { echo "fail-rank1.sh: task 1 exits with 3" >&2; exit 3; }
exec "$LF_BIN" "\$@"
EOF
chmod +x fail-rank1.sh
J_BADEXIT=$(LF_CONFIG=train.ini LF_BIN=$WORK/fail-rank1.sh LF_ARGS="--train.run_dir=run-badexit" submit "$S/train.sbatch")
note "submitted training: reference $J_REF (srun), interrupted $J_INT (mpirun), crashing $J_CRASH, failing task $J_BADEXIT"

# launch.sh, the single-machine form, meanwhile (outside Slurm: its own mpirun).
"$SRC/cluster/mpirun/launch.sh" -n 2 -- "$LF_BIN" encode --config enc.ini --cache.dir=cache-launch \
  --threads 1 > encode-launch.log 2>&1 || fail "launch.sh -n 2 encode failed: $(tail -n 5 encode-launch.log)"
same_cache cache-single cache-launch "launch.sh -n 2 encode"

# ---- signal the interrupted run mid-run -----------------------------------------------------
deadline=$((SECONDS + 180))
until [ "$(last_step run-int || true)" -ge 6 ] 2>/dev/null; do
  [ $SECONDS -lt $deadline ] || fail "interrupted run: no step 6 in run-int/metrics.jsonl after 180 s"
  is_terminal "$(field "$J_INT" JobState | head -n1)" && fail "interrupted run: job $J_INT ended before it could be signalled"
  sleep 0.5
done
at=$(last_step run-int)
[ "$at" -lt "$STEPS" ] || fail "interrupted run: already at step $at of $STEPS, too late to test a mid-run signal"
scancel --batch --signal=USR1 "$J_INT" || fail "scancel --batch --signal=USR1 $J_INT failed"
note "sent SIGUSR1 to the batch shell of job $J_INT at step $at"

# ---- precompute results -----------------------------------------------------------------------
wait_job "$J_ENC" 120; expect_job "$J_ENC" COMPLETED 0:0 0 "encode.sbatch"
same_cache cache-single cache-mpi "encode.sbatch (2 srun tasks)"
wait_job "$J_ARR" 120; expect_job "$J_ARR" COMPLETED 0:0 0 "encode-array.sbatch (3 tasks)"
wait_job "$J_FIN" 120; expect_job "$J_FIN" COMPLETED 0:0 0 "encode-finalize.sbatch"
for t in 0 1 2; do
  log_has "lf-encode-${J_ARR}_$t.out" "task $t of 3" "encode-array.sbatch"
  grep -q "finalized" "lf-encode-${J_ARR}_$t.out" && fail "encode-array.sbatch: task $t finalized the cache itself"
done
log_has "lf-encode-finalize-$J_FIN.out" "finalized: 512 samples in 4 shard" "encode-finalize.sbatch"
same_cache cache-single cache-array "job array + finalize"
wait_job "$J_WRAP" 120; expect_job "$J_WRAP" COMPLETED 0:0 0 "mpirun inside an allocation"
same_cache cache-single cache-wrap "mpirun inside an allocation (no LF_RANK_SOURCE)"

# ---- the crash: no requeue, the step ends at once -------------------------------------------
wait_job "$J_CRASH" 180
st=$(field "$J_CRASH" JobState); rs=$(field "$J_CRASH" Restarts); ec=$(field "$J_CRASH" ExitCode)
[ "$st" = FAILED ] && [ "$rs" = 0 ] && [ "$ec" != 75:0 ] && [ "$ec" != 0:0 ] ||
  fail "crashing run: job $J_CRASH ended $st, ExitCode $ec, Restarts $rs; expected FAILED, not 75, no restart"
log_has "lf-train-$J_CRASH.out" "LF_CRASH_AT: killing the process" "crashing run"
grep -q "requeueing job" "lf-train-$J_CRASH.out" && fail "crashing run: job $J_CRASH requeued itself after a crash"
note "crashing run: job $J_CRASH FAILED with ExitCode $ec, not requeued"

# ---- a task failing at start-up ends the step (--kill-on-bad-exit), no requeue --------------
deadline=$((SECONDS + 90))
until is_terminal "$(field "$J_BADEXIT" JobState)"; do
  [ $SECONDS -lt $deadline ] || fail "failing task: job $J_BADEXIT still $(field "$J_BADEXIT" JobState) 90 s after task 1 exited (srun --kill-on-bad-exit=1 should have ended the step)"
  sleep 1
done
st=$(field "$J_BADEXIT" JobState); rs=$(field "$J_BADEXIT" Restarts); ec=$(field "$J_BADEXIT" ExitCode)
[ "$st" = FAILED ] && [ "$rs" = 0 ] && [ "$ec" != 75:0 ] ||
  fail "failing task: job $J_BADEXIT ended $st, ExitCode $ec, Restarts $rs; expected FAILED, not 75, no restart"
log_has "lf-train-$J_BADEXIT.out" "task 1: Exited with exit code 3" "failing task"
note "failing task: job $J_BADEXIT FAILED with ExitCode $ec once task 1 exited, not requeued"

# ---- the uninterrupted reference --------------------------------------------------------------
wait_job "$J_REF" 240; expect_job "$J_REF" COMPLETED 0:0 0 "reference run (srun)"
final=run-ref/checkpoints/$(printf 'step-%08d' "$STEPS")
[ -f "$final/state.json" ] || fail "reference run: no final checkpoint $final ($(ls run-ref/checkpoints 2>&1 | tr '\n' ' '))"
[ "$(last_step run-ref)" = "$STEPS" ] || fail "reference run: metrics.jsonl ends at step $(last_step run-ref), expected $STEPS"
log_has "lf-train-$J_REF.out" "training done at step $STEPS" "reference run"
log_has "lf-train-$J_REF.out" "\\[rank 0/2 " "reference run (2 ranks)"
note "reference run: $STEPS steps on 2 ranks, checkpoints $(ls run-ref/checkpoints | tr '\n' ' ')"

J_SAMPLE=$(LF_CONFIG=train.ini LF_STAGES=sample \
  LF_ARGS="--sample.checkpoint=run-ref --sample.out_dir=$WORK/samples --sample.num=10 --sample.steps=2" \
  submit "$S/sample-eval.sbatch")

# ---- the interrupted run: checkpoint, requeue, resume, same result ---------------------------
wait_job "$J_INT" 300; expect_job "$J_INT" COMPLETED 0:0 1 "interrupted run (mpirun)"
L=lf-train-$J_INT.out
log_has "$L" "batch shell got SIGUSR1" "interrupted run"
log_has "$L" "SIGUSR1: checkpoint of step [0-9]+ written" "interrupted run"
log_has "$L" "job step exited with 75" "interrupted run"
log_has "$L" "requeueing job $J_INT \\(restart 1 " "interrupted run"
log_has "$L" "job $J_INT run 1 " "interrupted run"
stop=$(grep -oE "SIGUSR1: checkpoint of step [0-9]+" "$L" | head -n1 | grep -oE '[0-9]+$')
[ "$stop" -lt "$STEPS" ] || fail "interrupted run: stopped at step $stop, not before step $STEPS"
log_has "$L" "resuming from run-int/checkpoints/step-0*$stop at step $stop" "interrupted run"
log_has "$L" "training done at step $STEPS" "interrupted run"
note "interrupted run: checkpointed at step $stop, requeued, resumed, finished step $STEPS"
if ! $PY "$SRC/tools/compare_checkpoints.py" --exact "$final" \
    "run-int/checkpoints/$(printf 'step-%08d' "$STEPS")" > compare.txt 2>&1; then
  sed 's/^/  /' compare.txt >&2
  fail "interrupted run: its final state differs from the uninterrupted run's (above)"
fi
sed 's/^/  /' compare.txt

wait_job "$J_SAMPLE" 120; expect_job "$J_SAMPLE" COMPLETED 0:0 0 "sample-eval.sbatch (sample)"
[ -s samples/samples.h5 ] || fail "sample-eval.sbatch: no samples/samples.h5"

# ---- the real time limit ----------------------------------------------------------------------
wait_job "$J_LIMIT" 200; expect_job "$J_LIMIT" FAILED 75:0 0 "time-limit run (cap 0)"
L=lf-train-$J_LIMIT.out
log_has "$L" "batch shell got SIGUSR1" "time-limit run"
log_has "$L" "SIGUSR1: checkpoint of step [0-9]+ written" "time-limit run"
log_has "$L" "LF_MAX_RESTARTS=0\\): not requeueing" "time-limit run"
t_start=$(date -d "$(grep -m1 -oE '^\[[0-9: -]+\] lf-train: job' "$L" | cut -c2-20)" +%s)
t_sig=$(date -d "$(grep -m1 -oE '^\[[0-9: -]+\] lf-train: batch shell got SIGUSR1' "$L" | cut -c2-20)" +%s)
ck=$(ls -d run-limit/checkpoints/step-* 2>/dev/null | tail -n1)
[ -n "$ck" ] && [ -f "$ck/state.json" ] || fail "time-limit run: no checkpoint in run-limit/checkpoints"
note "time-limit run: Slurm's warning came $((t_sig - t_start)) s into the 120-s job; checkpoint $ck; not requeued"

note "all checks passed"
