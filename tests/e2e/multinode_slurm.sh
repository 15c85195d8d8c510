#!/usr/bin/env bash
# Multi-node Slurm (cluster/netns/slurm-up.sh): one slurmctld and one slurmd per host of a test
# cluster of two network-namespace hosts, so srun's tasks on different nodes have different host
# names and talk over TCP. cluster/slurm/train.sbatch on 2 nodes x 1 task (srun --mpi=pmix):
#   * an uninterrupted run completes; rank discovery reports one rank on each node;
#   * a second run, preempted with `scancel --batch --signal=USR1` mid-run, checkpoints, exits 75,
#     requeues itself (same job id, Restarts=1), resumes on both nodes and ends with model, EMA
#     and optimizer state bit-for-bit equal to the uninterrupted run (same ranks and threads).
# The cluster's Slurm coexists with cluster/slurm-local's: its daemons listen on the test hosts'
# own addresses.
source "$(dirname "${BASH_SOURCE[0]}")/multinode_common.bash"
setup multinode_slurm
for b in slurmctld slurmd sbatch srun scontrol squeue scancel sinfo munged munge; do
  command -v "$b" >/dev/null || fail "missing $b: run cluster/install-deps.sh (slurmctld slurmd slurm-client munge)"
done
cluster_up 2
H1=${HOSTS[0]} H2=${HOSTS[1]}
SLURM_DIR=$LF_NET_DIR/slurm
# On failure, show the job logs and daemon logs before down.sh removes them.
ON_EXIT='[[ $rc == 0 ]] || { for f in "$T"/lf-train-*.out; do [[ -f $f ]] && { echo "---- $f"; grep -vE "^[a-z_0-9]+ = |^\[[a-z]+\]$|^$" "$f" | tail -n 25; }; done; tail -n 15 "$SLURM_DIR"/log/*.log; } >&2'
CONF=$("$NETNS/slurm-up.sh" "$CLUSTER") || fail "cluster/netns/slurm-up.sh $CLUSTER failed"
make_cache
STEPS=40

slurm() { on "$H1" env SLURM_CONF="$CONF" "$@"; }
field() { slurm scontrol show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p"; }
wait_job() {  # wait_job JOBID SECONDS: until it has ended (COMPLETED, FAILED, ...)
  local deadline=$((SECONDS + $2)) st
  while ((SECONDS < deadline)); do
    st=$(field "$1" JobState)
    case "$st" in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|PREEMPTED) return 0 ;; esac
    sleep 1
  done
  fail "job $1 not finished after $2 s (state $(field "$1" JobState))"
}
expect_job() {  # expect_job JOBID STATE EXITCODE RESTARTS WHAT
  local st ec rs
  st=$(field "$1" JobState) ec=$(field "$1" ExitCode) rs=$(field "$1" Restarts)
  [[ "$st $ec $rs" == "$2 $3 $4" ]] || fail "$5: job $1 ended $st, ExitCode $ec, Restarts $rs; expected $2, $3, Restarts=$4"
  echo "  $5: job $1 $st, ExitCode $ec, Restarts $rs"
}
last_step() { tail -n 1 "$1/metrics.jsonl" 2>/dev/null | grep -o '"step":[0-9]*' | cut -d: -f2; }
log_has() { grep -qE -- "$2" "$1" || fail "$(basename "$1") has no line matching '$2'"; }

cat >"$T/train.ini" <<EOF
[vae]
kind = identity
[cache]
dir = $CACHE
[model]
channels = 16
channel_mult = 1,2
num_res_blocks = 1
attention_ds = 2
head_channels = 16
norm_groups = 8
[train]
steps = $STEPS
batch_size = 8
warmup_steps = 2
log_every = 1
ckpt_every = 10
grid_per_class = 1
grid_steps = 1
[dist]
timeout_s = 60
EOF
cd "$T"
# submit RUN: train.sbatch on 2 nodes x 1 task through srun, 1 thread per rank.
submit() {
  slurm LF_CONFIG="$T/train.ini" LF_BIN="$LF_BIN" LF_THREADS=1 LF_ARGS="--train.run_dir=$T/$1" \
    sbatch --parsable --nodes=2 --ntasks-per-node=1 --output="$T/lf-train-%j.out" \
    "$LF_SOURCE_DIR/cluster/slurm/train.sbatch" | cut -d';' -f1
}
J_REF=$(submit ref)
J_INT=$(submit int)
note "submitted the uninterrupted job $J_REF and the one to preempt, $J_INT (2 nodes x 1 task each)"

deadline=$((SECONDS + 180))
until [[ "$(last_step "$T/int" || true)" -ge 6 ]] 2>/dev/null; do
  ((SECONDS < deadline)) || fail "job $J_INT: no step 6 in int/metrics.jsonl after 180 s"
  sleep 0.3
done
at=$(last_step "$T/int")
((at < STEPS)) || fail "job $J_INT already at step $at of $STEPS: too late to preempt it"
slurm scancel --batch --signal=USR1 "$J_INT" || fail "scancel --batch --signal=USR1 $J_INT failed"
note "sent SIGUSR1 to the batch shell of job $J_INT at step $at"

wait_job "$J_REF" 240
expect_job "$J_REF" COMPLETED 0:0 0 "uninterrupted run"
L=$T/lf-train-$J_REF.out
log_has "$L" "ranks on 2 hosts: $H1 rank 0 \\(local 0 of 1, 1 thread\\); $H2 rank 1 \\(local 0 of 1, 1 thread\\)"
log_has "$L" "training done at step $STEPS"
grep -m1 "ranks on 2 hosts" "$L" | sed 's/^.*\] /  /'

wait_job "$J_INT" 300
expect_job "$J_INT" COMPLETED 0:0 1 "preempted run"
L=$T/lf-train-$J_INT.out
log_has "$L" "batch shell got SIGUSR1"
log_has "$L" "SIGUSR1: checkpoint of step [0-9]+ written"
log_has "$L" "job step exited with 75"
log_has "$L" "requeueing job $J_INT \\(restart 1 "
log_has "$L" "job $J_INT run 1 "
stop=$(grep -oE "SIGUSR1: checkpoint of step [0-9]+" "$L" | head -n1 | grep -oE '[0-9]+$')
log_has "$L" "resuming from $T/int/checkpoints/step-0*$stop at step $stop"
[[ $(grep -c "ranks on 2 hosts: $H1 rank 0 (local 0 of 1, 1 thread); $H2 rank 1" "$L") == 2 ]] ||
  fail "both runs of job $J_INT should report one rank on each node"
log_has "$L" "training done at step $STEPS"
note "preempted run: checkpointed at step $stop, requeued, resumed on both nodes, finished step $STEPS"
metrics_steps "$T/int" 1 $STEPS
same_checkpoints "$(ckpt "$T/ref" $STEPS)" "$(ckpt "$T/int" $STEPS)" --exact
"$NETNS/slurm-down.sh" "$SLURM_DIR"
note "PASS"
