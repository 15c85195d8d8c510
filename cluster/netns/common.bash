# Shared names and helpers of cluster/netns/*.sh (sourced, not run). A test cluster is named
# lfnID (ID 1..99); its hosts are the network namespaces lfnIDh1..K, whose host names are the
# same; its bridge is lfnIDbr and host i's link is the veth lfnIDvi (root side) / eth0 (inside).
# Everything the scripts create carries the "lfn" prefix, and everything they create is listed
# under $LF_NET_STATE/lfnID, so down.sh removes exactly that, also after a crash.

LF_NET_STATE=${LF_NET_STATE:-/run/lf-testnet}
LF_NET_PREFIX=lfn

netns_die() { echo "$(basename "$0"): ERROR: $*" >&2; exit 1; }

# netns_cluster_of HOST: the cluster name of a host name (lfn3h2 -> lfn3), or nothing.
netns_cluster_of() {
  [[ "$1" =~ ^(${LF_NET_PREFIX}[0-9]+)h[0-9]+$ ]] && echo "${BASH_REMATCH[1]}"
}

# netns_owner_alive DIR: the process recorded in DIR/owner ("PID STARTTIME") still runs (the
# start time guards against a reused pid). No owner recorded: the cluster is kept (manual use).
netns_owner_alive() {
  local pid start now
  [ -s "$1/owner" ] || return 0
  read -r pid start < "$1/owner"
  [ -r "/proc/$pid/stat" ] || return 1
  now=$(netns_start_time "$pid") || return 1
  [ "$now" = "$start" ]
}

# netns_start_time PID: the process's start time in clock ticks (field 22 of /proc/PID/stat;
# the command name before it may contain spaces, so count from its closing parenthesis).
netns_start_time() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  set -- $stat
  echo "${20}"
}
