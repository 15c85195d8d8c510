#!/usr/bin/env bash
# Soak test of the checkpoint, lock and deadline protocols (docs/benchmarks.md, "Checkpoints,
# the run lock and deadlines under kill -9"; not in CI: it takes minutes). The tiny pixel-space
# model of tests/e2e/train_common.bash, a short collective deadline, and kill -9 / kill -STOP at
# random instants, drawn by progress (a random number of checkpoints or shards, then a random
# part of a step) so that they land in start-up, steps and checkpoint writes whatever the load:
#   1. 20 x kill -9 of a 1-rank run that checkpoints every step, each followed by
#      --resume auto; the finished run must be bitwise the uninterrupted one.
#   2. 10 x kill -9 of `encode` (from an empty cache each time); each re-run must give the cache
#      of an uninterrupted encode.
#   3. 10 x kill -9 of one rank of a 2-rank run: each job must end by itself within
#      dist.timeout_s + 10 s; the finished run must be bitwise the uninterrupted 2-rank one.
#   4. kill -STOP of one rank (each rank in turn): the job must end within the deadline,
#      naming the operation that did not complete.
# Prints a Markdown table (and writes it to $OUT/soak.md).
#
#   bash bench/ckpt_soak.sh [BUILD_DIR]        (default build; scratch in BUILD_DIR/soak)
# Environment: SOAK_SEED (default 1), TIMEOUT_S (dist.timeout_s, default 20).
set -euo pipefail
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$(cd "${1:-$SRC/build}" && pwd)
BIN=$BUILD/latentforge
OUT=$BUILD/soak
TIMEOUT_S=${TIMEOUT_S:-20}
RANDOM=${SOAK_SEED:-1}
PY=/usr/bin/python3
COMPARE=$SRC/tools/compare_checkpoints.py
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
unset LF_CRASH_AT LF_PAUSE_AT LF_DEBUG_SUM_GRADS LF_DEBUG_RANK_NOISE LF_DEBUG_THROW_AT_STEP LF_DEBUG_THROW_RANK
[[ -x $BIN ]] || { echo "soak: $BIN not built" >&2; exit 2; }
rm -rf "$OUT"
mkdir -p "$OUT"
cd "$OUT"
ROWS=()
die() { echo "soak: FAIL: $*" >&2; exit 1; }
# A uniform random delay in [lo, hi) seconds (decimals allowed), as "s.mmm".
delay() { $PY -c "import sys; lo, hi, u = map(float, sys.argv[1:]); print(f'{lo + (hi - lo) * u / 32768:.3f}')" "$1" "$2" "$RANDOM"; }
now() { date +%s.%N; }
since() { $PY -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
# per_step RUN_DIR: the median seconds per step of a finished run (its metrics.jsonl).
per_step() {
  $PY -c "import json, statistics, sys; print(statistics.median(json.loads(l)['time_per_step_s'] for l in open(sys.argv[1]) if l.strip()))" "$1/metrics.jsonl"
}
# newest_step RUN_DIR: the newest step-* checkpoint's step (0 when none).
newest_step() {
  local d
  d=$(ls -1 "$1/checkpoints" 2>/dev/null | grep '^step-' | sort | tail -n 1 || true)
  if [[ -n $d ]]; then echo $((10#${d#step-})); else echo 0; fi
}
# kill_point PID RUN_DIR SECONDS: the instant of a kill, drawn by progress rather than by the
# clock (the machine's load varies too much for a clock window): wait until 0-3 more
# checkpoints than now exist (0: the kill lands in the start-up), then a uniform random
# 0..SECONDS more (within a step, a checkpoint write included).
kill_point() {
  local pid=$1 run=$2 target
  target=$(($(newest_step "$run") + RANDOM % 4))
  while kill -0 "$pid" 2>/dev/null && (($(newest_step "$run") < target)); do sleep 0.02; done
  sleep "$(delay 0 "$3")"
}

CACHE=$OUT/cache
"$BIN" encode --vae.kind=identity --data.limit=60 --cache.dir="$CACHE" --cache.shard_size=16 --cache.dtype=f32 \
  --threads=1 >encode.log 2>&1 || die "encode of the training cache failed"
TRAIN=("$BIN" train --cache.dir="$CACHE" --vae.kind=identity
  --model.channels=16 --model.channel_mult=1,2 --model.num_res_blocks=1 --model.attention_ds=2
  --model.head_channels=16 --model.norm_groups=8 --train.batch_size=8 --train.log_every=1
  --train.warmup_steps=2 --train.grid_per_class=1 --train.grid_steps=1 --train.prefetch=2
  --train.ckpt_every=1 --train.keep_last=2 --dist.timeout_s="$TIMEOUT_S" --dist.checkpoint_timeout_s=$((TIMEOUT_S + 10))
  --threads=1)

# --- 1. kill -9 of a 1-rank run, 20 times ---------------------------------------------------------
STEPS1=100
"${TRAIN[@]}" --train.run_dir=ref1 --train.steps=$STEPS1 >ref1.log 2>&1 || die "uninterrupted 1-rank run"
step_s=$($PY -c "print(1.5 * $(per_step ref1))")
kills=0 midwrite=0 early=0 finished_early=0
for k in $(seq 20); do
  before=$(newest_step soak1)
  "${TRAIN[@]}" --train.run_dir=soak1 --train.steps=$STEPS1 --resume auto >>soak1.log 2>&1 &
  pid=$!
  kill_point "$pid" soak1 "$step_s"
  if kill -9 "$pid" 2>/dev/null; then kills=$((kills + 1)); else finished_early=$((finished_early + 1)); fi
  wait "$pid" 2>/dev/null || true
  ls -A soak1/checkpoints 2>/dev/null | grep -q '^\.tmp-' && midwrite=$((midwrite + 1))
  (($(newest_step soak1) == before)) && early=$((early + 1))
done
"${TRAIN[@]}" --train.run_dir=soak1 --train.steps=$STEPS1 --resume auto >>soak1.log 2>&1 || die "final resume"
ok1=no
$PY "$COMPARE" "ref1/checkpoints/step-$(printf %08d $STEPS1)" "soak1/checkpoints/step-$(printf %08d $STEPS1)" --exact \
  >compare1.txt 2>&1 && ok1=yes
takeovers=$(grep -c "taking over the stale lock" soak1.log || true)
ROWS+=("| 1 rank, checkpoint every step: kill -9 at random instants, then \`--resume auto\` | $kills kills ($early before a new checkpoint: start-up or first step; $midwrite mid-write; $finished_early after the end); $takeovers stale locks taken over | final step $STEPS1 bitwise equal to the uninterrupted run: **$ok1** |")

# --- 2. kill -9 of encode, 10 times ---------------------------------------------------------------
ENC=("$BIN" encode --vae.kind=identity --data.limit=20000 --cache.shard_size=500 --cache.dtype=f32 --threads=1)
t0=$(now)
"${ENC[@]}" --cache.dir=enc_ref >enc_ref.log 2>&1 || die "uninterrupted encode"
shard_s=$($PY -c "print($(since "$t0") / 40)")
# 10 rounds, each from an empty cache: a kill after a random number (0-39) of finished shards
# plus a random part of a shard's time, then a re-run to the end.
ekills=0 equal=0 partial=0
for k in $(seq 10); do
  rm -rf enc_soak
  "${ENC[@]}" --cache.dir=enc_soak >>enc_soak.log 2>&1 &
  pid=$!
  target=$((RANDOM % 40))
  while kill -0 "$pid" 2>/dev/null && (($(ls enc_soak/shard-*.h5 2>/dev/null | wc -l) < target)); do sleep 0.02; done
  sleep "$(delay 0 "$shard_s")"
  kill -9 "$pid" 2>/dev/null && ekills=$((ekills + 1))
  wait "$pid" 2>/dev/null || true
  [[ -f enc_soak/manifest.json ]] || partial=$((partial + 1))
  "${ENC[@]}" --cache.dir=enc_soak >>enc_soak.log 2>&1 || die "re-run of encode after kill $k"
  $PY - enc_ref/manifest.json enc_soak/manifest.json <<'EOF' && equal=$((equal + 1))
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
sa, sb = ([s["sha256"] for s in m["shards"]] for m in (a, b))
sys.exit(0 if sa == sb else 1)
EOF
done
ok2=no
((equal == 10)) && ok2=yes
ROWS+=("| \`encode\` (20,000 images, 40 shards): 10 rounds from an empty cache, kill -9 after a random number of shards, then a re-run | $ekills kills ($partial before the manifest was written) | every shard checksum equal to an uninterrupted encode in $equal of 10 rounds: **$ok2** |")

# --- 3. kill -9 of one rank of a 2-rank run, 10 times --------------------------------------------
MPI=(mpirun -np 2 --oversubscribe --bind-to none)
STEPS3=60
"${MPI[@]}" "${TRAIN[@]}" --train.run_dir=ref2 --train.steps=$STEPS3 >ref2.log 2>&1 || die "uninterrupted 2-rank run"
step_s=$($PY -c "print(1.5 * $(per_step ref2))")
worst3=0 over3=0 rkills=0
# rank_pid MPIRUN_PID RANK: the pid of that rank's process.
rank_pid() {
  local p
  for p in $(pgrep -P "$1" latentforge || true); do
    grep -qz "^OMPI_COMM_WORLD_RANK=$2\$" "/proc/$p/environ" 2>/dev/null && { echo "$p"; return; }
  done
}
for k in $(seq 10); do
  "${MPI[@]}" "${TRAIN[@]}" --train.run_dir=soak2 --train.steps=$STEPS3 --resume auto >>soak2.log 2>&1 &
  mp=$!
  kill_point "$mp" soak2 "$step_s"
  victim=$(rank_pid "$mp" $((RANDOM % 2)))
  [[ -n $victim ]] || { wait "$mp" || true; continue; }
  kill -9 "$victim" 2>/dev/null && rkills=$((rkills + 1))
  t0=$(now)
  wait "$mp" 2>/dev/null || true
  took=$(since "$t0")
  $PY -c "import sys; sys.exit(0 if float(sys.argv[1]) > float(sys.argv[2]) else 1)" "$took" "$worst3" && worst3=$took
  $PY -c "import sys; sys.exit(0 if float(sys.argv[1]) > $TIMEOUT_S + 10 else 1)" "$took" && over3=$((over3 + 1))
done
"${MPI[@]}" "${TRAIN[@]}" --train.run_dir=soak2 --train.steps=$STEPS3 --resume auto >>soak2.log 2>&1 || die "final 2-rank resume"
ok3=no
$PY "$COMPARE" "ref2/checkpoints/step-$(printf %08d $STEPS3)" "soak2/checkpoints/step-$(printf %08d $STEPS3)" --exact \
  >compare3.txt 2>&1 && ok3=yes
ROWS+=("| 2 ranks: kill -9 of one rank at random instants, then \`--resume auto\` | $rkills kills; slowest job end ${worst3} s after the kill, $over3 over $((TIMEOUT_S + 10)) s | final step $STEPS3 bitwise equal to the uninterrupted 2-rank run: **$ok3** |")

# --- 4. kill -STOP of one rank ------------------------------------------------------------------
stops=""
for victim_rank in 1 0 1; do
  "${MPI[@]}" "${TRAIN[@]}" --train.run_dir=stop --train.steps=100000 --resume auto >stop.log 2>&1 &
  mp=$!
  first=$(newest_step stop)
  while kill -0 "$mp" 2>/dev/null && (($(newest_step stop) < first + 2)); do sleep 0.02; done  # training
  sleep "$(delay 0 "$step_s")"
  victim=$(rank_pid "$mp" $victim_rank)
  [[ -n $victim ]] || die "no rank $victim_rank under mpirun $mp"
  kill -STOP "$victim"
  t0=$(now)
  RC=0
  wait "$mp" 2>/dev/null || RC=$?
  took=$(since "$t0")
  kill -9 "$victim" 2>/dev/null || true
  op=$(grep -o "\] [^[]* has not completed after [0-9.]* s (deadline [0-9.]* s)" stop.log | head -n 1 | sed 's/^\] //')
  [[ -n $op ]] || op="(no operation named: exit $RC)"
  stops+="rank $victim_rank stopped: ended after ${took} s, \"${op}\"; "
done
ROWS+=("| 2 ranks: kill -STOP of one rank during training | 3 stops | ${stops%; } |")

{
  echo "| scenario | injected | result |"
  echo "| --- | --- | --- |"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "dist.timeout_s = $TIMEOUT_S s, dist.checkpoint_timeout_s = $((TIMEOUT_S + 10)) s, SOAK_SEED = ${SOAK_SEED:-1}"
} | tee "$OUT/soak.md"
