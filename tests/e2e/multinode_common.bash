# Shared set-up of the tests/e2e/multinode_*.sh tests (sourced, not a test itself): a test
# cluster of network-namespace hosts (cluster/netns/up.sh) that belongs to this test and is
# removed when it ends, however it ends (EXIT trap; a SIGKILLed test's cluster is removed by the
# next up.sh, which finds its owner gone), plus the training helpers of train_common.bash.
#
# Environment: as train_common.bash (LF_BIN, LF_SOURCE_DIR, LF_TEST_TMP).

# ctest's own timeout would SIGKILL the test past its clean-up: stop it earlier with SIGTERM,
# which the EXIT trap below turns into removing the cluster.
if [[ -z "${LF_MULTINODE_WATCHED:-}" ]]; then
  LF_MULTINODE_WATCHED=1 exec timeout --foreground -s TERM -k 30 "${LF_MULTINODE_LIMIT_S:-600}" bash "$0" "$@"
fi
source "$(dirname "${BASH_SOURCE[0]}")/train_common.bash"
# The per-host default thread count is under test: no OMP_NUM_THREADS from outside.
unset LF_PAUSE_AT OMP_NUM_THREADS
# The clean client environment of a launcher: no outer Slurm job or mpirun leaks into ours.
for v in $(compgen -e | grep -E '^(SLURM_|OMPI_COMM_WORLD_|PMIX_RANK|LF_RANK_SOURCE)' || true); do unset "$v"; done
unset OMPI_MCA_rmaps_base_oversubscribe

NETNS="$LF_SOURCE_DIR/cluster/netns"
T0=$SECONDS
note() { echo "[+$((SECONDS - T0))s] $*"; }

# Root, iproute2 and util-linux are needed to make hosts: fail (not skip) with what is missing.
require_cluster_tools() {
  [[ "$(id -u)" == 0 ]] || fail "must run as root: the test cluster's hosts are network namespaces (cluster/netns/up.sh)"
  local b missing=()
  for b in ip nsenter unshare mpirun; do command -v "$b" >/dev/null || missing+=("$b"); done
  ((${#missing[@]} == 0)) || fail "missing ${missing[*]}: run cluster/install-deps.sh (iproute2, util-linux, openmpi-bin)"
}

# cluster_up K: a cluster of K hosts owned by this shell; sets CLUSTER, HOSTS (array) and
# HOSTFILE. The EXIT trap removes it (and runs $ON_EXIT first, when set).
cluster_up() {
  require_cluster_tools
  # Each host has a /tmp of its own, so what the hosts run and share cannot live under /tmp.
  local p
  for p in "$LF_SOURCE_DIR" "$LF_BIN" "$LF_TEST_TMP"; do
    [[ "$(realpath -m "$p")" != /tmp/* ]] ||
      fail "$p is under /tmp, which every host of the test cluster has its own of: use a checkout and build outside /tmp"
  done
  CLUSTER=$("$NETNS/up.sh" -k "$1" -o $$) || fail "cluster/netns/up.sh -k $1 failed"
  trap cluster_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM HUP
  # shellcheck disable=SC1090
  source "$LF_NET_STATE_DIR/$CLUSTER/env.sh"
  read -r -a HOSTS <<<"$LF_NET_HOSTS"
  HOSTFILE=$LF_NET_DIR/hostfile
  note "cluster $CLUSTER: ${HOSTS[*]} ($LF_NET_SUBNET)"
}
LF_NET_STATE_DIR=${LF_NET_STATE:-/run/lf-testnet}

cluster_cleanup() {
  local rc=$?
  trap - EXIT
  trap "" INT TERM HUP
  set +e  # finish the teardown whatever fails in it
  [[ -n "${ON_EXIT:-}" ]] && eval "$ON_EXIT"
  [[ -n "${CLUSTER:-}" ]] && "$NETNS/down.sh" "$CLUSTER"
  note "done (rc $rc)"
  exit "$rc"
}

# on HOST COMMAND...: runs COMMAND on a host of the cluster (cluster/netns/exec.sh).
on() { "$NETNS/exec.sh" "$@"; }

# host_pids HOST [COMM]: processes running on HOST (in its namespace), optionally only those
# whose command name is COMM.
host_pids() {
  local p
  for p in $(ip netns pids "$1" 2>/dev/null); do
    if [[ -z "${2:-}" || "$(cat "/proc/$p/comm" 2>/dev/null)" == "$2" ]]; then echo "$p"; fi
  done
  return 0
}

# link_up LINK FROM TO: sets a host's cut link (its bridge-side veth) up again and waits until
# host FROM reaches host TO (a TCP connect refused by TO's closed port 9, not "no route"): after
# a cut, the hosts' neighbour entries are FAILED and the first connects fail at once, which
# kept the next mpirun's daemons from calling back. Fails after 20 s.
link_up() {
  local link=$1 from=$2 to=$3 h err
  ip link set "$link" up
  for h in "${HOSTS[@]}"; do ip -n "$h" neigh flush all 2>/dev/null || true; done
  for _ in $(seq 1 200); do
    err=$(on "$from" timeout 3 bash -c "exec 3<>/dev/tcp/$to/9" 2>&1 || true)
    [[ "$err" == *refused* ]] && return 0
    sleep 0.1
  done
  fail "$from still cannot reach $to 20 s after setting $link up (last error: $err)"
}

# count_on HOST COMM: how many COMM processes run on HOST.
count_on() { host_pids "$1" "$2" | wc -l; }

# MPI across hosts: mpirun runs on the first host (as on a real cluster's first node) and
# starts the others' daemons with the cluster's rsh agent; TCP between hosts on eth0 only,
# shared memory within a host (exec.sh sets the interfaces and the agent).
# mpi_on HOSTSPEC NP RUN_LOG COMMAND...: mpirun from host 1 with --host HOSTSPEC; RC is its
# exit status. BTL (default self,vader,tcp) selects Open MPI's transports.
mpi_on() {
  local spec=$1 np=$2 log=$3
  shift 3
  RC=0
  on "${HOSTS[0]}" mpirun --bind-to none --mca btl "${BTL:-self,vader,tcp}" -x LF_RANK_SOURCE=mpirun \
    --host "$spec" -np "$np" "$@" >"$log" 2>&1 || RC=$?
}

# glog lines of a log: "[IWEF]MMDD hh:mm:ss.uuuuuu [rank r/N host] file:line] ...".
glog_lines() { grep -E '^[IWEF][0-9]{4} [0-9:.]+ \[rank ' "$1" || true; }

# check_host_tags HOST_OF_RANK... -- LOG...: every line of the logs that carries a rank tag
# (glog's "I1130 12:00:00.000000 [rank r/N host] file:line] ..." or an error's "[rank r/N host]
# ...") names the host of its rank (HOST_OF_RANK[r]); prints how many lines of each rank.
check_host_tags() {
  "$PY" - "$@" <<'EOF' || fail "log lines carry the wrong host (or none has a rank tag)"
import re, sys
args = sys.argv[1:]
hosts, logs = args[:args.index("--")], args[args.index("--") + 1:]
tag = re.compile(r'^(?:[IWEF]\d{4} [\d:.]+ )?\[rank (\d+)/(\d+) ([^\]]+)\]')
seen, bad = {}, []
for log in logs:
    for line in open(log, errors="replace"):
        if re.match(r'^[IWEF]\d{4} ', line) and not tag.match(line):
            bad.append(("untagged glog line", line.strip()))
        m = tag.match(line)
        if not m:
            continue
        r, host = int(m.group(1)), m.group(3)
        seen[r] = seen.get(r, 0) + 1
        if r >= len(hosts) or host != hosts[r]:
            bad.append((f"rank {r} runs on {hosts[r] if r < len(hosts) else '?'}", line.strip()))
print(f"  host tags of {sum(seen.values())} lines checked (lines per rank: {dict(sorted(seen.items()))})")
for why, line in bad[:5]:
    print(f"  {why}: {line[:160]}")
sys.exit(1 if bad or not seen else 0)
EOF
}

# compare_f64 A B: the checkpoints agree to 1e-10 (absolute); prints compare_checkpoints' report.
compare_f64() {
  local a=$1 b=$2 out
  out=$("$PY" "$COMPARE" "$a" "$b" --atol=1e-10 --rtol=0 2>&1) || { echo "$out" >&2; fail "checkpoints differ by more than 1e-10: $a vs $b"; }
  echo "$out" | sed 's/^/  /'
}

# start_training NAME HOSTSPEC NP FLAGS...: `latentforge train` under mpirun from host 1, in the
# background (MP: mpirun's pid, as exec.sh execs it), run directory $T/NAME, log $T/NAME.log;
# each rank's output is also written, on its own host, to $T/NAME.out/1/rank.R/stderr (Open
# MPI's --output-filename), which survives a cut network. LF_CRASH_AT/LF_PAUSE_AT reach
# every rank when set.
start_training() {
  local name=$1 spec=$2 np=$3 x=()
  shift 3
  [[ -n "${LF_CRASH_AT:-}" ]] && x+=(-x LF_CRASH_AT)
  [[ -n "${LF_PAUSE_AT:-}" ]] && x+=(-x LF_PAUSE_AT)
  on "${HOSTS[0]}" mpirun --bind-to none --mca btl self,vader,tcp -x LF_RANK_SOURCE=mpirun "${x[@]}" \
    --output-filename "$T/$name.out" --host "$spec" -np "$np" "$LF_BIN" train --cache.dir="$CACHE" \
    "${TRAIN_FLAGS[@]}" --train.run_dir="$T/$name" "$@" >"$T/$name.log" 2>&1 &
  MP=$!
}

# rank_log NAME R: rank R's stderr as its host wrote it.
rank_log() { echo "$T/$1.out/1/rank.$2/stderr"; }

# wait_hosts_empty LIMIT_S HOST...: waits until nothing runs on the hosts any more (our ranks,
# mpirun, Open MPI's daemons, the agent's shells); sets RANKS_GONE_S (no latentforge left) and
# ALL_GONE_S, in seconds since FAULT_AT (a $SECONDS value). Fails after LIMIT_S, listing what is
# left.
wait_hosts_empty() {
  local limit=$1 h left ranks
  shift
  RANKS_GONE_S="" ALL_GONE_S=""
  while :; do
    left="" ranks=0
    for h in "$@"; do
      left+=$(host_pids "$h" | tr '\n' ' ')
      ranks=$((ranks + $(count_on "$h" latentforge)))
    done
    [[ -z "$RANKS_GONE_S" && $ranks == 0 ]] && RANKS_GONE_S=$((SECONDS - FAULT_AT))
    [[ -z "${left// /}" ]] && { ALL_GONE_S=$((SECONDS - FAULT_AT)); return 0; }
    if ((SECONDS - FAULT_AT > limit)); then
      # shellcheck disable=SC2086
      ps -o pid,stat,etimes,args -p ${left// /,} >&2 || true
      fail "still running $((SECONDS - FAULT_AT)) s after the fault (limit $limit s): pids $left"
    fi
    sleep 0.5
  done
}
