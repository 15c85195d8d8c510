# Shared set-up of the tests/e2e/train_*.sh tests (sourced, not a test itself: ctest only
# picks up *.sh). A tiny pixel-space cache (identity autoencoder, 60 Fashion-MNIST images of
# 1x32x32 in shards of 16, so batches of 8 cross shard and epoch boundaries: 7.5 steps per
# epoch) and a tiny UNet, so each training run takes about a second on one core.
#
# Environment (set by ctest, defaulted here for a manual run from the repository root):
#   LF_BIN, LF_SOURCE_DIR, LF_TEST_TMP.

source "$(dirname "${BASH_SOURCE[0]}")/e2e_env.bash"

COMPARE="$LF_SOURCE_DIR/tools/compare_checkpoints.py"

# Run-to-run constant flags: the tiny model, batch 8, a log line and metrics record per step,
# a one-image-per-class grid with one DDIM step at the end (cheap), and short collective
# timeouts so a hang fails the test instead of stalling it.
TRAIN_FLAGS=(
  --vae.kind=identity
  --model.channels=16 --model.channel_mult=1,2 --model.num_res_blocks=1 --model.attention_ds=2
  --model.head_channels=16 --model.norm_groups=8
  --train.batch_size=8 --train.log_every=1 --train.warmup_steps=2
  --train.grid_per_class=1 --train.grid_steps=1 --train.prefetch=2
  --dist.timeout_s=30 --dist.checkpoint_timeout_s=60
  --threads=1
)

# make_cache [encode flags...]: the identity-autoencoder cache at $T/cache (flags such as
# --data.limit=N override the defaults).
make_cache() {
  CACHE="$T/cache"
  "$LF_BIN" encode --vae.kind=identity --data.limit=60 --cache.dir="$CACHE" --cache.shard_size=16 \
    --cache.dtype=f32 --threads=1 "$@" >"$T/encode.log" 2>&1 || { cat "$T/encode.log"; fail "encode failed"; }
}

# train RUN_DIR [flags...]: one rank, output to RUN_DIR.log; its exit status in RC.
train() {
  local run="$1"
  shift
  RC=0
  "$LF_BIN" train --cache.dir="$CACHE" "${TRAIN_FLAGS[@]}" --train.run_dir="$run" "$@" >"$run.log" 2>&1 || RC=$?
}

# train_np2 RUN_DIR [flags...]: two ranks under mpirun; mpirun's exit status in RC.
train_np2() {
  local run="$1"
  shift
  RC=0
  "${MPIRUN[@]}" "$LF_BIN" train --cache.dir="$CACHE" "${TRAIN_FLAGS[@]}" --train.run_dir="$run" "$@" \
    >"$run.log" 2>&1 || RC=$?
}

# expect_rc WANT RUN_DIR WHAT: fail, showing the log's tail, unless the last run's RC is WANT.
expect_rc() {
  if [[ "$RC" != "$1" ]]; then
    tail -n 40 "$2.log" >&2
    fail "$3 exited with $RC, expected $1 (log: $2.log)"
  fi
  echo "  $3: exit $RC as expected"
}

# run_ok RUN_DIR WHAT -- a shorthand: train (one rank) and expect exit 0.
run_ok() {
  local run="$1" what="$2"
  shift 2
  train "$run" "$@"
  expect_rc 0 "$run" "$what"
}

# run_np2_ok RUN_DIR WHAT flags...: train on two ranks and expect exit 0.
run_np2_ok() {
  local run="$1" what="$2"
  shift 2
  train_np2 "$run" "$@"
  expect_rc 0 "$run" "$what"
}

# crash_then_resume RUN_DIR POINT WANT flags...: a run killed by LF_CRASH_AT=POINT (exit 137, the
# crash point named in its log), then `--resume auto` with the same flags, which must pick the
# checkpoint of step WANT and exit 0.
crash_then_resume() {
  local run="$1" point="$2" want="$3"
  shift 3
  local name=${point%%:*}
  LF_CRASH_AT=$point train "$run" "$@"
  expect_rc 137 "$run" "the run killed at $point"
  grep -q "killing the process at crash point '$name'" "$run.log" || fail "$run.log does not show the crash point"
  train "$run" "$@" --resume auto
  expect_rc 0 "$run" "the resumed run"
  grep -q "resuming from .*step-$(printf %08d "$want") at step $want" "$run.log" ||
    { grep -i "resum\|skipping" "$run.log" >&2; fail "after $point the resume did not pick step $want"; }
}

# ckpt RUN_DIR STEP: the checkpoint directory of STEP.
ckpt() { printf '%s/checkpoints/step-%08d' "$1" "$2"; }

# same_checkpoints A B COMPARE_FLAGS...: fail unless compare_checkpoints accepts them.
same_checkpoints() {
  local a="$1" b="$2"
  shift 2
  "$PY" "$COMPARE" "$a" "$b" "$@" || fail "checkpoints differ: $a vs $b ($*)"
}

# different_checkpoints A B COMPARE_FLAGS...: fail unless compare_checkpoints rejects them
# (exit 1: readable and different; a usage or format error, exit 2, is a failure too).
different_checkpoints() {
  local a="$1" b="$2" rc=0
  shift 2
  "$PY" "$COMPARE" "$a" "$b" "$@" || rc=$?
  [[ $rc == 1 ]] || fail "expected the comparison of $a and $b ($*) to find differences; it exited with $rc"
}

# metrics_steps RUN_DIR FIRST LAST: metrics.jsonl holds exactly one record per step FIRST..LAST,
# in order (no duplicates or gaps after a resume).
metrics_steps() {
  "$PY" - "$1/metrics.jsonl" "$2" "$3" <<'EOF' || fail "metrics.jsonl of $1 is not one record per step $2..$3"
import json, sys
path, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
steps = [json.loads(l)["step"] for l in open(path) if l.strip()]
want = list(range(first, last + 1))
print(f"  {path}: steps {steps[:3]}...{steps[-3:]} ({len(steps)} records), expected {first}..{last}")
if steps != want:
    dup = sorted({s for s in steps if steps.count(s) > 1})
    back = [(a, b) for a, b in zip(steps, steps[1:]) if b <= a]
    print(f"  duplicates {dup}, out of order {back[:5]}, missing {sorted(set(want) - set(steps))[:10]}")
    sys.exit(1)
EOF
}

# same_losses RUN_A RUN_B: the logged loss of every step is the same number in both
# metrics.jsonl files (the same samples and noise reached the model at every step).
same_losses() {
  "$PY" - "$1/metrics.jsonl" "$2/metrics.jsonl" <<'EOF' || fail "per-step losses differ between $1 and $2"
import json, sys
a, b = ({r["step"]: r["loss"] for r in map(json.loads, filter(str.strip, open(p)))} for p in sys.argv[1:3])
bad = [(s, a[s], b.get(s)) for s in sorted(a) if a[s] != b.get(s)]
print(f"  losses of {len(a)} steps compared, {len(bad)} differ" + (f"; first {bad[:3]}" if bad else ""))
sys.exit(1 if bad or a.keys() != b.keys() else 0)
EOF
}

# wait_for_step RUN_DIR STEP PID TIMEOUT_S: waits until metrics.jsonl records STEP (while PID
# lives); fails on timeout or when the process ends first.
wait_for_step() {
  local run="$1" step="$2" pid="$3" deadline=$((SECONDS + $4))
  while ((SECONDS < deadline)); do
    if [[ -f "$run/metrics.jsonl" ]] && grep -q "\"step\":$step[,}]" "$run/metrics.jsonl"; then return 0; fi
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$run.log" >&2; fail "the run ended before step $step"; }
    sleep 0.05
  done
  tail -n 30 "$run.log" >&2
  fail "step $step not reached within $4 s"
}

# last_checkpoint_step RUN_DIR: the newest step-* directory's step.
# wait_stopped PID LOG: until PID has stopped itself at its LF_PAUSE_AT point (fail after 60 s,
# printing LOG).
wait_stopped() {
  for _ in $(seq 1 1200); do [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = T ] && return 0; sleep 0.05; done
  cat "$2" >&2; fail "$2: the run never reached its pause point"
}

last_checkpoint_step() {
  local d
  d=$(ls -1 "$1/checkpoints" | grep '^step-' | sort | tail -n 1)
  [[ -n "$d" ]] || fail "no checkpoint in $1/checkpoints"
  echo $((10#${d#step-}))
}
