#!/usr/bin/env bash
# exec.sh HOST COMMAND [ARGS...] -- run COMMAND on a host of a test cluster (up.sh): in its
# network namespace, with its host name, the cluster's /etc/hosts and a /tmp of its own (both
# bound over the machine's in a mount namespace of its own), as `ssh HOST` would on a real
# cluster. Everything else of the file system is shared, like a cluster's shared file system:
# keep run directories and caches out of /tmp. Like a site's Open MPI configuration, it sets (unless already set) the MCA
# parameters that make mpirun work there: the rsh agent agent.sh, which starts Open MPI's
# daemons on the other hosts the same way, and eth0 (the test network) for MPI's and Open MPI's
# own TCP traffic. The file system and the process table are the machine's.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=cluster/netns/common.bash
source "$HERE/common.bash"
[ $# -ge 2 ] || netns_die "usage: exec.sh HOST COMMAND [ARGS...]"
HOST=$1; shift
C=$(netns_cluster_of "$HOST") || netns_die "'$HOST' is not a test host name (lfnIDhI)"
UTS=$LF_NET_STATE/$C/$HOST.uts
[ -e "$UTS" ] && [ -e "/run/netns/$HOST" ] || netns_die "no host $HOST: is cluster $C up (cluster/netns/up.sh)?"
export OMPI_MCA_plm_rsh_agent=${OMPI_MCA_plm_rsh_agent:-$HERE/agent.sh}
export OMPI_MCA_btl_tcp_if_include=${OMPI_MCA_btl_tcp_if_include:-eth0}
export OMPI_MCA_oob_tcp_if_include=${OMPI_MCA_oob_tcp_if_include:-eth0}
# Not `ip netns exec`: it remounts /sys, which hides the cgroup file systems slurmd needs.
# A node-local /tmp: what Slurm's PMIx plugin and Open MPI keep there is named by job, not host.
exec nsenter --net="/run/netns/$HOST" --uts="$UTS" -- unshare --mount --propagation slave -- \
  /bin/sh -c 'mount --bind "$0/hosts" /etc/hosts && mount --bind "$0/tmp/$1" /tmp && shift && exec "$@"' \
  "$LF_NET_STATE/$C" "$HOST" "$@"
