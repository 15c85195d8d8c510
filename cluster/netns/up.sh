#!/usr/bin/env bash
# up.sh [-k K] [-n ID] [-s SUBNET] [-o OWNER_PID] -- bring up a test cluster of K "hosts" on
# this machine (root only): each host is a network namespace with its own host name (a UTS
# namespace), a veth link into a private bridge and an address in a small test subnet that only
# these namespaces use; every host resolves every host name (exec.sh binds the cluster's hosts
# file over /etc/hosts). The bridge has no address and the root namespace no route to the
# subnet: traffic goes only between the hosts. Nothing under /etc is written.
#
#   -k K          hosts (default 2, at most 16)
#   -n ID         cluster number 1..99 (default: the first free one); the cluster is lfnID, its
#                 hosts lfnIDh1..K, its bridge lfnIDbr, host i's link lfnIDvi (eth0 inside)
#   -s SUBNET     a /24 as A.B.C (default 10.214.ID); host i is A.B.C.i
#   -o OWNER_PID  the process the cluster belongs to (a test): when it has gone, the next up.sh
#                 or `down.sh --stale` removes the cluster. Without it the cluster stays until
#                 `down.sh lfnID`.
#
# Prints the cluster's name (lfnID) on stdout; everything else goes to stderr. Leftovers of
# clusters whose owner has died are removed first. Run commands on a host with exec.sh; start
# Open MPI jobs there (exec.sh sets the site's MCA parameters: rsh agent, interfaces); see
# docs/cluster.md. State: $LF_NET_STATE/lfnID (default /run/lf-testnet).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=cluster/netns/common.bash
source "$HERE/common.bash"

K=2 ID="" SUBNET="" OWNER=""
while [ $# -gt 0 ]; do
  case "$1" in
    -k) K=$2; shift 2 ;;
    -n) ID=$2; shift 2 ;;
    -s) SUBNET=$2; shift 2 ;;
    -o) OWNER=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) netns_die "unknown option '$1' (see --help)" ;;
  esac
done
[ "$(id -u)" = 0 ] || netns_die "must run as root (it creates network namespaces, veths and a bridge)"
[[ "$K" =~ ^[0-9]+$ ]] && [ "$K" -ge 1 ] && [ "$K" -le 16 ] || netns_die "-k $K: expected 1..16 hosts"
[ -z "$ID" ] || { [[ "$ID" =~ ^[0-9]+$ ]] && [ "$ID" -ge 1 ] && [ "$ID" -le 99 ]; } ||
  netns_die "-n $ID: expected a cluster number 1..99"
[ -z "$OWNER" ] || [ -d "/proc/$OWNER" ] || netns_die "-o $OWNER: no such process"
for b in ip nsenter unshare; do command -v "$b" >/dev/null || netns_die "'$b' not found: apt-get install iproute2 util-linux"; done

mkdir -p "$LF_NET_STATE"
"$HERE/down.sh" --stale >&2 || true

# Claim a number: mkdir is atomic, so two concurrent up.sh never take the same one.
claim() {
  [ -e "/run/netns/${LF_NET_PREFIX}$1h1" ] && return 1
  ip link show "${LF_NET_PREFIX}$1br" >/dev/null 2>&1 && return 1
  mkdir "$LF_NET_STATE/${LF_NET_PREFIX}$1" 2>/dev/null
}
if [ -n "$ID" ]; then
  claim "$ID" || netns_die "cluster ${LF_NET_PREFIX}$ID exists already (down.sh ${LF_NET_PREFIX}$ID removes it)"
else
  for i in $(seq 1 99); do claim "$i" && { ID=$i; break; }; done
  [ -n "$ID" ] || netns_die "no free cluster number in 1..99 (down.sh --all removes every test cluster)"
fi
C=${LF_NET_PREFIX}$ID
DIR=$LF_NET_STATE/$C
SUBNET=${SUBNET:-10.214.$ID}
[[ "$SUBNET" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || netns_die "-s $SUBNET: expected the first three numbers of a /24, e.g. 10.214.7"
[ -n "$OWNER" ] && echo "$OWNER $(netns_start_time "$OWNER")" > "$DIR/owner"
# On any failure from here on, remove what was made so far.
trap '"$HERE/down.sh" "$C" >&2 || true' ERR

BR=${C}br
# No spanning tree or forwarding delay (ports forward at once), and bridged frames bypass the
# host's iptables (where br_netfilter is loaded, e.g. next to Docker, FORWARD may drop them).
ip link add "$BR" type bridge stp_state 0 forward_delay 0 nf_call_iptables 0 nf_call_ip6tables 0 nf_call_arptables 0
ip link set "$BR" up
HOSTS=()
for i in $(seq 1 "$K"); do
  h=${C}h$i
  HOSTS+=("$h")
  ip netns add "$h"
  ip link add "${C}v$i" type veth peer name "${C}p$i"
  ip link set "${C}p$i" netns "$h"
  ip link set "${C}v$i" master "$BR" up
  ip -n "$h" link set "${C}p$i" name eth0
  ip -n "$h" addr add "$SUBNET.$i/24" dev eth0
  ip -n "$h" link set eth0 up
  ip -n "$h" link set lo up
  # The host name lives in a UTS namespace kept by a bind mount; exec.sh enters it.
  touch "$DIR/$h.uts"
  unshare --uts="$DIR/$h.uts" hostname "$h"
  mkdir -p "$DIR/tmp/$h"
  chmod 1777 "$DIR/tmp/$h"
done
{
  echo "127.0.0.1 localhost"
  for i in $(seq 1 "$K"); do echo "$SUBNET.$i ${C}h$i"; done
} > "$DIR/hosts"
# An Open MPI hostfile with a slot per core (at least 2, so that 2 ranks per host fit anywhere).
slots=$(nproc); [ "$slots" -ge 2 ] || slots=2
for h in "${HOSTS[@]}"; do echo "$h slots=$slots"; done > "$DIR/hostfile"
cat > "$DIR/env.sh" <<ENV
# source me: the test cluster $C
export LF_NET=$C LF_NET_HOSTS="${HOSTS[*]}" LF_NET_SUBNET=$SUBNET.0/24 LF_NET_DIR=$DIR
ENV
trap - ERR
# The links are up on both ends before we say the cluster is (a veth pair comes up at once, the
# bridge port forwards at once with forward_delay 0).
for i in $(seq 1 "$K"); do
  for _ in $(seq 1 50); do
    [ "$(cat "/sys/class/net/${C}v$i/operstate" 2>/dev/null)" = up ] &&
      ip -n "${C}h$i" link show eth0 | grep -q LOWER_UP && continue 2
    sleep 0.1
  done
  "$HERE/down.sh" "$C" >&2; netns_die "the link of ${C}h$i (${C}v$i) did not come up"
done
echo "up.sh: cluster $C: hosts ${HOSTS[*]} in $SUBNET.0/24 (bridge $BR); state in $DIR" >&2
echo "$C"
