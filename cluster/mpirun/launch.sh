#!/usr/bin/env bash
# Launches latentforge with mpirun: on this machine, or on the nodes of a hostfile with one
# rank per GPU. Everything after "--" is the latentforge command line.
#
#   cluster/mpirun/launch.sh -n 2 -- ./build/latentforge train --config configs/fmnist-quick.ini
#   cluster/mpirun/launch.sh -H cluster/mpirun/hostfile.example -g 8 -- ./build/latentforge train ...
#
# Options:
#   -n N        total ranks (default: GPUs per node x nodes, or 1 on a machine without GPUs)
#   -H FILE     Open MPI hostfile ("node01 slots=8" per line); omitted: this machine only
#   -g G        ranks (GPUs) per node (default: nvidia-smi's count, else 1)
#   -i IFACE    network interface for MPI's TCP traffic and NCCL's bootstrap (e.g. eth0, ib0)
# Environment that matters (passed to every rank with -x):
#   NCCL_DEBUG (default WARN), NCCL_SOCKET_IFNAME / NCCL_IB_HCA / NCCL_IB_DISABLE /
#   NCCL_P2P_DISABLE (set -i or export them), LF_CRASH_AT, and PATH / LD_LIBRARY_PATH (remote
#   nodes need them to find latentforge's libraries). LF_RANK_SOURCE=mpirun: the ranks take
#   their rank from mpirun even inside a Slurm allocation. OMP_NUM_THREADS is not needed:
#   latentforge sets torch and OpenBLAS threads itself (--threads, default cores / ranks on the
#   node).
# Binding: one rank per GPU, each bound to the NUMA domain of its slot (--map-by ppr:G:node
# --bind-to numa) on multi-node runs; no binding on a single machine, where oversubscribing a
# small CPU box is allowed. Extra mpirun options: LF_MPIRUN_ARGS.
# A rank that fails makes mpirun end the others; mpirun forwards SIGUSR1/SIGTERM to the ranks
# (checkpoint + exit 75 / 143, as under Slurm) and exits with the first failing rank's code.
# A host that stops answering (cut off, frozen, dead): the other ranks abort at their collective
# deadline, and each leaves a reaper that ends mpirun or orted should they still wait for that
# host 10 s later (docs/cluster.md, "When a host fails"); mpirun then exits with 137.
set -euo pipefail
N="" HOSTFILE="" PER_NODE="" IFACE=""
while [ $# -gt 0 ]; do
  case "$1" in
    -n) N=$2; shift 2 ;;
    -H) HOSTFILE=$2; shift 2 ;;
    -g) PER_NODE=$2; shift 2 ;;
    -i) IFACE=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "launch.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "launch.sh: missing the command after --" >&2; exit 2; }
if [ -z "$PER_NODE" ]; then
  PER_NODE=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  [ "${PER_NODE:-0}" -gt 0 ] || PER_NODE=1
fi
NODES=1
[ -n "$HOSTFILE" ] && NODES=$(grep -cvE '^\s*(#|$)' "$HOSTFILE")
[ -n "$N" ] || N=$((PER_NODE * NODES))

export LF_RANK_SOURCE=mpirun
ARGS=(-np "$N" -x NCCL_DEBUG="${NCCL_DEBUG:-WARN}" -x LF_RANK_SOURCE)
for v in NCCL_SOCKET_IFNAME NCCL_IB_HCA NCCL_IB_DISABLE NCCL_P2P_DISABLE LF_CRASH_AT PATH LD_LIBRARY_PATH; do
  [ -n "${!v:-}" ] && ARGS+=(-x "$v")
done
if [ -n "$IFACE" ]; then
  ARGS+=(--mca btl_tcp_if_include "$IFACE" --mca oob_tcp_if_include "$IFACE" -x NCCL_SOCKET_IFNAME="$IFACE")
fi
if [ -n "$HOSTFILE" ]; then
  ARGS+=(--hostfile "$HOSTFILE" --map-by "ppr:$PER_NODE:node" --bind-to numa)
else
  ARGS+=(--oversubscribe --bind-to none)
fi
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# shellcheck disable=SC2206
[ -n "${LF_MPIRUN_ARGS:-}" ] && ARGS+=($LF_MPIRUN_ARGS)
echo "launch.sh: mpirun ${ARGS[*]} $*" >&2
exec mpirun "${ARGS[@]}" "$@"
