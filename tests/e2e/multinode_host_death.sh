#!/usr/bin/env bash
# DESIGN.md invariants 3 and 10 across hosts: on 2 hosts x 2 ranks (cluster/netns), the first
# host (rank 0, the checkpoint writer, and mpirun) dies in the middle of a checkpoint write: rank
# 0 freezes after writing its tensors (LF_PAUSE_AT=ckpt.after_tensors:2, a crash point's pause),
# then the host's link goes down and every process on it is SIGKILLed, as in a power cut.
#   * the surviving host's ranks end at dist.checkpoint_timeout_s, naming the operation (the
#     broadcast after the checkpoint) and the silent host; their orted, left waiting for a
#     mpirun that is gone, is ended by their reapers: nothing runs there within the timeout +
#     30 s;
#   * the previous checkpoint stays valid (the interrupted one never became a step-* directory);
#   * `--resume auto` on the surviving host alone (2 ranks) continues from it with the same
#     batches, and the finished run equals the uninterrupted 4-rank run (float64, 1e-10).
source "$(dirname "${BASH_SOURCE[0]}")/multinode_common.bash"
setup multinode_host_death
cluster_up 2
H1=${HOSTS[0]} H2=${HOSTS[1]}
make_cache
D=20
LIMIT=$((D + 30))
STEPS=8
F=(--train.precision=f64 --train.steps=$STEPS --train.ckpt_every=2 --dist.timeout_s=$D
  --dist.checkpoint_timeout_s=$D --model.channels=8 --model.head_channels=8 --model.norm_groups=4)

note "== the uninterrupted run: 2 hosts x 2 ranks, $STEPS steps"
start_training ref "$H1:2,$H2:2" 4 "${F[@]}"
RC=0
wait "$MP" || RC=$?
expect_rc 0 "$T/ref" "the uninterrupted run"

note "== $H1 dies while rank 0 writes the checkpoint of step 4"
LF_PAUSE_AT=ckpt.after_tensors:2 start_training died "$H1:2,$H2:2" 4 "${F[@]}"
frozen=""
deadline=$((SECONDS + 120))
while [[ -z "$frozen" ]]; do
  for p in $(host_pids "$H1" latentforge); do
    [[ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" == T ]] && frozen=$p
  done
  ((SECONDS < deadline)) || { tail -n 20 "$T/died.log" >&2; fail "rank 0 did not stop at ckpt.after_tensors within 120 s"; }
  kill -0 "$MP" 2>/dev/null || { tail -n 20 "$T/died.log" >&2; fail "the run ended before rank 0 reached the crash point"; }
  sleep 0.1
done
compgen -G "$T/died/checkpoints/.tmp-step-00000004-*" >/dev/null || fail "no checkpoint of step 4 in progress in $T/died/checkpoints"
# The host dies: its link first (nothing it sends gets out), then every process on it.
ip link set "${CLUSTER}v1" down
# shellcheck disable=SC2046
kill -KILL $(host_pids "$H1") 2>/dev/null || true
FAULT_AT=$SECONDS
note "$H1 is dead (rank 0 frozen in the write, pid $frozen)"
wait_hosts_empty "$LIMIT" "$H2"
wait "$MP" 2>/dev/null || true
note "$H2: ranks gone after $RANKS_GONE_S s, everything (orted) after $ALL_GONE_S s (limit $LIMIT s)"
((RANKS_GONE_S >= D - 3)) || fail "the ranks of $H2 ended ${RANKS_GONE_S} s after the death, before the $D s deadline"
for r in 2 3; do
  re="^\\[rank $r/4 $H2\\] train: error: \\[rank $r/4 $H2\\] broadcast after the checkpoint of step 4 has not completed after $D\\.[0-9] s \\(deadline $D\\.0 s\\); no heartbeat from $H1 \\(ranks 0-1\\) for [0-9.]+ s: that host is down or cut off, or those ranks are stopped — ending the job"
  grep -qE "$re" "$(rank_log died $r)" || { tail -n 5 "$(rank_log died $r)" >&2; fail "rank $r's output has no line matching: $re"; }
  grep -m1 -E "$re" "$(rank_log died $r)" | sed -E 's/^(.{230}).*/\1.../; s/^/  /'
done
check_host_tags "$H1" "$H1" "$H2" "$H2" -- "$(rank_log died 0)" "$(rank_log died 2)" "$(rank_log died 3)"

note "== the previous checkpoint is the newest valid one"
"$LF_BIN" inspect "$T/died" >"$T/inspect.txt" 2>&1 || { cat "$T/inspect.txt" >&2; fail "latentforge inspect $T/died failed"; }
grep -q "newest valid: .*step-00000002$" "$T/inspect.txt" || { cat "$T/inspect.txt" >&2; fail "the newest valid checkpoint is not step 2"; }
[[ ! -e "$(ckpt "$T/died" 4)" ]] || fail "the interrupted checkpoint of step 4 became valid"
tmp=$(compgen -G "$T/died/checkpoints/.tmp-step-00000004-*" | head -n1)
echo "  $(grep 'newest valid' "$T/inspect.txt"); step 4 only as $(basename "$tmp")"

# The dead job's run-directory lock names $H1: from another host it is never taken over
# silently (its holder may be alive behind a cut link), so the resume is refused until the
# operator says the holder is gone (--break-lock).
resume_on_h2() {
  RC=0
  on "$H2" mpirun --bind-to none --mca btl self,vader,tcp -x LF_RANK_SOURCE=mpirun --host "$H2:2" -np 2 \
    "$LF_BIN" train --cache.dir="$CACHE" "${TRAIN_FLAGS[@]}" "${F[@]}" --train.run_dir="$T/died" --resume auto "$@" \
    >"$T/resumed.log" 2>&1 || RC=$?
}
note "== --resume auto on $H2 alone: refused, the lock names $H1"
resume_on_h2
expect_rc 2 "$T/resumed" "the resume on $H2 without --break-lock"
grep -q "is being written by host $H1, pid" "$T/resumed.log" || { tail -n 5 "$T/resumed.log" >&2; fail "the refusal does not name the lock's holder on $H1"; }
note "== --resume auto --break-lock on $H2 alone (2 ranks), to step $STEPS"
resume_on_h2 --break-lock
expect_rc 0 "$T/resumed" "the resumed run on $H2"
grep -q "resuming from .*step-00000002 at step 2" "$T/resumed.log" || fail "the resumed run did not start from step 2"
grep -qF "ranks on 1 host: $H2 ranks 0-1 (local 0-1 of 2" "$T/resumed.log" || fail "the resumed run did not run on $H2 alone"
metrics_steps "$T/died" 1 $STEPS
echo "  uninterrupted (4 ranks on 2 hosts) vs died at step 4 + resumed (2 ranks on $H2):"
compare_f64 "$(ckpt "$T/ref" $STEPS)" "$(ckpt "$T/died" $STEPS)"
note "PASS"
