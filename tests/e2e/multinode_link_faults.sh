#!/usr/bin/env bash
# DESIGN.md invariant 10 across hosts: on 2 hosts x 2 ranks (cluster/netns), a host that goes
# silent in the middle of training ends the whole job by itself within dist.timeout_s + 30 s:
# our ranks, mpirun and Open MPI's daemon (orted) on every host, with nothing left running.
#   * link cut: the second host's link is set down mid-training (and stays down). Ranks on both
#     sides reach the 20 s deadline and abort, naming the operation and the host that fell
#     silent (the heartbeat side channel); Open MPI's own runtime would then wait for the cut
#     host for good, so each aborting rank's reaper (distributed/reaper.h) ends mpirun on one
#     side and orted on the other;
#   * kill -STOP of the second host's ranks: the others abort at the deadline naming that host;
#     mpirun ends the stopped ranks.
# Every rank's messages carry its own host (each rank's output file, written on its host).
source "$(dirname "${BASH_SOURCE[0]}")/multinode_common.bash"
setup multinode_link_faults
cluster_up 2
H1=${HOSTS[0]} H2=${HOSTS[1]}
LINK2=${CLUSTER}v2
ON_EXIT='ip link set "$LINK2" up 2>/dev/null'
make_cache
D=20
LIMIT=$((D + 30))
F=(--train.steps=100000 --train.ckpt_every=5 --dist.timeout_s=$D)
SILENT_H2="no heartbeat from $H2 \\(ranks 2-3\\) for [0-9.]+ s: that host is down or cut off, or those ranks are stopped"
SILENT_H1="no heartbeat from $H1 \\(ranks 0-1\\) for [0-9.]+ s: that host is down or cut off, or those ranks are stopped"

# expect_abort FILE RANK HOST SILENT_RE: FILE has RANK's abort naming the operation (which one
# depends on where the rank was: a gradient bucket, the stop-signal agreement, ...) and SILENT_RE.
expect_abort() {
  local re="^\\[rank $2/4 $3\\] train: error: \\[rank $2/4 $3\\] [^;]+ has not completed after $D\\.[0-9] s \\(deadline $D\\.0 s\\); $4 — ending the job"
  grep -qE "$re" "$1" || { grep -E "rank|error" "$1" | tail -n 5 >&2; fail "$1 has no abort of rank $2 matching: $re"; }
  grep -m1 -E "$re" "$1" | sed -E 's/^(.{230}).*/\1.../; s/^/  /'
}

note "== link cut: $H2's link down at step 6 of a 4-rank run (dist.timeout_s=$D)"
start_training cut "$H1:2,$H2:2" 4 "${F[@]}"
wait_for_step "$T/cut" 6 "$MP" 120
ip link set "$LINK2" down
FAULT_AT=$SECONDS
wait_hosts_empty "$LIMIT" "$H1" "$H2"
RC=0
wait "$MP" || RC=$?
note "link cut: ranks gone after $RANKS_GONE_S s, mpirun and orted gone after $ALL_GONE_S s (limit $LIMIT s); mpirun exited with $RC"
((RANKS_GONE_S >= D - 2)) || fail "the ranks ended ${RANKS_GONE_S} s after the cut, before the $D s deadline: something else ended them"
[[ $RC != 0 ]] || fail "mpirun exited with 0 after a cut"
expect_abort "$T/cut.log" 0 "$H1" "$SILENT_H2"
expect_abort "$(rank_log cut 2)" 2 "$H2" "$SILENT_H1"
expect_abort "$(rank_log cut 3)" 3 "$H2" "$SILENT_H1"
check_host_tags "$H1" "$H1" "$H2" "$H2" -- "$T/cut.log" "$(rank_log cut 2)" "$(rank_log cut 3)"
link_up "$LINK2" "$H2" "$H1"
link_up "$LINK2" "$H1" "$H2"

note "== kill -STOP of $H2's ranks at step 6"
start_training stop "$H1:2,$H2:2" 4 "${F[@]}"
wait_for_step "$T/stop" 6 "$MP" 120
stopped=$(host_pids "$H2" latentforge | tr '\n' ' ')
[[ $(echo $stopped | wc -w) == 2 ]] || fail "expected 2 ranks on $H2, found pids '$stopped'"
# shellcheck disable=SC2086
kill -STOP $stopped
FAULT_AT=$SECONDS
wait_hosts_empty "$LIMIT" "$H1" "$H2"
RC=0
wait "$MP" || RC=$?
note "STOP: ranks gone after $RANKS_GONE_S s, everything after $ALL_GONE_S s (limit $LIMIT s); mpirun exited with $RC"
((RANKS_GONE_S >= D - 2)) || fail "the ranks ended ${RANKS_GONE_S} s after the STOP, before the $D s deadline"
[[ $RC != 0 ]] || fail "mpirun exited with 0 after the STOP"
expect_abort "$T/stop.log" 0 "$H1" "$SILENT_H2"
expect_abort "$T/stop.log" 1 "$H1" "$SILENT_H2"
note "PASS"
