#!/usr/bin/env bash
# The test cluster itself (cluster/netns): hosts with their own host names, addresses, /etc/hosts
# and /tmp, reachable from each other and from nothing else; concurrent up.sh take different
# numbers; down.sh removes exactly its cluster (processes included) and leaves others alone; the
# leftovers of a test that was killed (its owner process gone) are removed by the next up.sh;
# misuse is refused with a message that says what was expected.
source "$(dirname "${BASH_SOURCE[0]}")/multinode_common.bash"
setup multinode_cluster
require_cluster_tools

# objects_of lfnID: the kernel objects and state of a cluster, one per line.
objects_of() {
  { ip netns list | awk '{print $1}'; ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1; ls "$LF_NET_STATE_DIR"; } |
    grep -E "^$1(h[0-9]+|br|v[0-9]+)?$" || true
}
OWNED=()
ON_EXIT='for c in "${OWNED[@]}"; do "$NETNS/down.sh" "$c" >/dev/null 2>&1; done; kill "${OWNER_PID:-}" 2>/dev/null'
trap cluster_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

note "== two clusters made at the same time, one owned by a process that will be killed"
sleep 600 &
OWNER_PID=$!
"$NETNS/up.sh" -k 2 -o "$OWNER_PID" >"$T/a.name" 2>"$T/a.log" &
upa=$!
"$NETNS/up.sh" -k 3 -o $$ >"$T/b.name" 2>"$T/b.log" &
upb=$!
wait "$upa" || { cat "$T/a.log" >&2; fail "up.sh -k 2 failed"; }
wait "$upb" || { cat "$T/b.log" >&2; fail "up.sh -k 3 failed"; }
A=$(cat "$T/a.name") B=$(cat "$T/b.name")
OWNED=("$A" "$B")
[[ "$A" =~ ^lfn[0-9]+$ && "$B" =~ ^lfn[0-9]+$ && "$A" != "$B" ]] || fail "concurrent up.sh gave '$A' and '$B'"
echo "  $A (2 hosts) and $B (3 hosts)"

note "== each host has its own name, address, /etc/hosts and /tmp; the hosts reach each other only"
for i in 1 2 3; do
  h=${B}h$i
  [[ "$(on "$h" hostname)" == "$h" ]] || fail "$h calls itself '$(on "$h" hostname)'"
  addr=$(on "$h" ip -4 -o addr show dev eth0 | awk '{print $4}')
  [[ "$addr" == "$(awk -v h="$h" '$2 == h {print $1}' "$LF_NET_STATE_DIR/$B/hosts")/24" ]] || fail "$h has address '$addr'"
  for g in ${B}h1 ${B}h2 ${B}h3; do on "$h" getent hosts "$g" >/dev/null || fail "$h cannot resolve $g"; done
  on "$h" sh -c "echo $h > /tmp/whoami"
done
for i in 1 2 3; do
  [[ "$(on "${B}h$i" cat /tmp/whoami)" == "${B}h$i" ]] || fail "${B}h$i's /tmp is not its own"
done
[[ ! -e /tmp/whoami || "$(cat /tmp/whoami 2>/dev/null)" != "${B}h1" ]] || fail "a host wrote into the machine's /tmp"
routes=$(on "${B}h1" ip -4 route show | tr '\n' ';')
[[ "$routes" != *default* ]] || fail "${B}h1 has a default route ($routes): traffic could leave the test network"
echo "  routes of ${B}h1: $routes"
# TCP between two hosts: bash's /dev/tcp against a listener started with Python.
on "${B}h2" "$PY" -c '
import socket; s = socket.socket(); s.bind(("0.0.0.0", 7777)); s.listen(1); c, a = s.accept(); c.sendall(b"hi from " + socket.gethostname().encode()); c.close()' &
listener=$!
reply=""
for _ in $(seq 1 50); do
  reply=$(on "${B}h1" bash -c "exec 3<>/dev/tcp/${B}h2/7777 && cat <&3" 2>/dev/null) && break
  sleep 0.1
done
wait "$listener" || true
[[ "$reply" == "hi from ${B}h2" ]] || fail "${B}h1 got '$reply' over TCP from ${B}h2"
echo "  ${B}h1 -> ${B}h2 over TCP: '$reply'"
if on "${B}h1" bash -c "exec 3<>/dev/tcp/${A}h1/7777" 2>/dev/null; then fail "${B}h1 reached host ${A}h1 of another cluster"; fi
echo "  ${B}h1 cannot reach ${A}h1 (another cluster)"

note "== the owner of $A is killed: the next up.sh removes $A and what runs on it"
on "${A}h2" sleep 600 &
stray=$!
sleep 0.5
kill -0 "$stray" || fail "could not start a process on ${A}h2"
kill "$OWNER_PID"
wait "$OWNER_PID" 2>/dev/null || true
# (a number of its own: up.sh would otherwise take $A's, free again, and this check could not
# tell the new cluster from the leftovers)
n=99
while [[ -e "$LF_NET_STATE_DIR/lfn$n" || "lfn$n" == "$A" || "lfn$n" == "$B" ]]; do n=$((n - 1)); done
C=$("$NETNS/up.sh" -k 1 -n $n -o $$ 2>"$T/c.log") || { cat "$T/c.log" >&2; fail "up.sh -k 1 -n $n failed"; }
OWNED+=("$C")
grep -q "$A: its owner has gone" "$T/c.log" || { cat "$T/c.log" >&2; fail "up.sh did not recognise $A as a leftover"; }
[[ -z "$(objects_of "$A")" ]] || fail "leftovers of $A remain: $(objects_of "$A" | tr '\n' ' ')"
wait "$stray" 2>/dev/null || true
kill -0 "$stray" 2>/dev/null && fail "the process on ${A}h2 survived the removal of $A"
[[ -n "$(objects_of "$B")" ]] || fail "removing $A removed $B too"
echo "  $A removed with its process; $B untouched; new cluster $C"

note "== down.sh removes exactly its cluster"
before=$(objects_of "$C" | wc -l)
"$NETNS/down.sh" "$B" 2>/dev/null
[[ -z "$(objects_of "$B")" ]] || fail "down.sh $B left $(objects_of "$B" | tr '\n' ' ')"
[[ "$(objects_of "$C" | wc -l)" == "$before" ]] || fail "down.sh $B touched $C"
"$NETNS/down.sh" "$B" 2>/dev/null || fail "a second down.sh $B failed"
echo "  $B removed ($C's $before objects untouched); a second down.sh is harmless"

note "== misuse is refused with what was expected"
expect_error() {  # expect_error MESSAGE COMMAND...
  local out rc=0
  out=$("${@:2}" 2>&1) || rc=$?
  [[ $rc != 0 && "$out" == *"$1"* ]] || fail "'${*:2}' gave rc $rc and '$out'; expected a failure saying '$1'"
  echo "  ${*:2}: $out"
}
expect_error "-k 0: expected 1..16 hosts" "$NETNS/up.sh" -k 0
expect_error "'nohost' is not a test host name (lfnIDhI)" "$NETNS/exec.sh" nohost true
expect_error "no host ${B}h1: is cluster $B up" "$NETNS/exec.sh" "${B}h1" true
expect_error "'other' is not a test cluster name (lfnID)" "$NETNS/down.sh" other
expect_error "no test cluster $B" "$NETNS/slurm-up.sh" "$B"
note "PASS"
