#!/usr/bin/env bash
# down.sh lfnID... | --stale | --all -- remove test clusters made by up.sh: kill every process
# still running on their hosts (network namespaces), delete the namespaces, veths and bridge,
# host-name namespaces and state. Safe to run twice.
#   lfnID...  these clusters
#   --stale   clusters whose owner (up.sh -o PID) has gone: what a killed test left behind
#   --all     every test cluster on this machine, also objects left without state
# Only names of the form lfnID, lfnIDhI, lfnIDbr, lfnIDvI are touched.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=cluster/netns/common.bash
source "$HERE/common.bash"
[ $# -gt 0 ] || netns_die "usage: down.sh lfnID... | --stale | --all"
[ "$(id -u)" = 0 ] || netns_die "must run as root"

namespaces() { ip netns list 2>/dev/null | awk '{print $1}'; }
links() { ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1; }

remove() {  # remove lfnID
  local c=$1 ns pid f
  [[ "$c" =~ ^${LF_NET_PREFIX}[0-9]+$ ]] || netns_die "'$c' is not a test cluster name (lfnID)"
  for ns in $(namespaces | grep -E "^${c}h[0-9]+$"); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
  done
  for ns in $(namespaces | grep -E "^${c}h[0-9]+$"); do
    # a killed process leaves its namespace a moment later; retry the delete briefly
    for _ in 1 2 3 4 5 6 7 8 9 10; do ip netns del "$ns" 2>/dev/null && break; sleep 0.2; done
  done
  for f in $(links | grep -E "^${c}(br|v[0-9]+)$"); do ip link del "$f" 2>/dev/null; done
  for f in "$LF_NET_STATE/$c"/*.uts; do
    [ -e "$f" ] && umount "$f" 2>/dev/null
  done
  rm -rf "${LF_NET_STATE:?}/$c"
  echo "down.sh: removed $c" >&2
}

case "$1" in
  --stale)
    for d in "$LF_NET_STATE"/"${LF_NET_PREFIX}"*; do
      [ -d "$d" ] || continue
      netns_owner_alive "$d" || { echo "down.sh: $(basename "$d"): its owner has gone" >&2; remove "$(basename "$d")"; }
    done ;;
  --all)
    all=$( { ls "$LF_NET_STATE" 2>/dev/null; namespaces; links; } |
          grep -oE "^${LF_NET_PREFIX}[0-9]+(h[0-9]+|br|v[0-9]+)?$" | grep -oE "^${LF_NET_PREFIX}[0-9]+" | sort -u)
    for c in $all; do remove "$c"; done ;;
  *) for c in "$@"; do remove "$c"; done ;;
esac
exit 0
