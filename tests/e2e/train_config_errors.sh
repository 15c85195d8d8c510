#!/usr/bin/env bash
# docs/design.md, invariant 6 for `train`: config errors exit 2 before any work, naming the key,
# the value and what was expected; a corrupted checkpoint is refused naming the file.
source "$(dirname "${BASH_SOURCE[0]}")/train_common.bash"
setup train_config_errors
make_cache

# expect_error RUN_DIR WANT_RC PATTERN... : the last run exited WANT_RC and its output
# matches every (extended) regex PATTERN.
expect_error() {
  local run="$1" want="$2"
  shift 2
  expect_rc "$want" "$run" "$(basename "$run")"
  for pat in "$@"; do
    grep -Eq -- "$pat" "$run.log" || { cat "$run.log" >&2; fail "$(basename "$run"): the output does not match /$pat/"; }
  done
  grep -m1 "error: " "$run.log" | sed 's/^/  message: /' || true
}

echo "== unknown key -> 2, naming the closest key"
train "$T/unknown" --train.batch_sise=8
expect_error "$T/unknown" 2 "unknown config key 'train.batch_sise'" "did you mean 'train.batch_size'"

echo "== batch not divisible by ranks x grad_accum -> 2, naming both"
train_np2 "$T/indivisible" --train.batch_size=6 --train.grad_accum=2 --train.steps=1
expect_error "$T/indivisible" 2 "train.batch_size = 6 must be divisible by train.grad_accum = 2 times the number of ranks \\(2\\)" "e.g. train.batch_size = 8"

echo "== dist.shard_optimizer with bf16 on the wire, or with a background checkpoint -> 2, naming both keys"
train "$T/shard_bf16" --dist.shard_optimizer=true --dist.grad_wire=bf16 --train.steps=1
expect_error "$T/shard_bf16" 2 "dist.shard_optimizer = true all-gathers the parameters themselves, which dist.grad_wire = bf16"
train "$T/shard_async" --dist.shard_optimizer=true --train.async_checkpoint=true --train.steps=1
expect_error "$T/shard_async" 2 "train.async_checkpoint = true with dist.shard_optimizer = true"

echo "== a run dir with checkpoints and no --resume -> 2"
run_ok "$T/run" "one step" --train.steps=1
train "$T/run" --train.steps=2
expect_error "$T/run" 2 "already holds checkpoints" "--resume auto"

echo "== resume with a changed frozen key -> 2, naming it"
train "$T/run" --train.steps=2 --resume auto --model.channels=32
expect_error "$T/run" 2 'model\.channels = "32" but the checkpoint .*step-00000001 was trained with model\.channels = "16"'

echo "== resume on another cache (other samples, so another order) -> 2, naming both"
"$LF_BIN" encode --vae.kind=identity --data.limit=59 --cache.dir="$T/cache59" --cache.shard_size=16 --cache.dtype=f32 \
  --threads=1 >"$T/encode59.log" 2>&1 || fail "encode of the second cache failed"
train "$T/run" --train.steps=2 --resume auto --cache.dir="$T/cache59"
expect_error "$T/run" 2 "cache.dir = $T/cache59 has num_samples 59 but the checkpoint .*step-00000001 was trained on a cache with num_samples 60"

echo "== --resume PATH to a corrupted checkpoint -> 2, naming the file"
c=$(ckpt "$T/run" 1)
"$PY" -c 'import sys; f = open(sys.argv[1], "r+b"); f.seek(-5, 2); b = f.read(1); f.seek(-5, 2); f.write(bytes([b[0] ^ 1]))' \
  "$c/model.safetensors"
train "$T/run" --train.steps=2 --resume "$c"
expect_error "$T/run" 2 "--resume $c: .*model\.safetensors: checksum .* does not match state\.json"

echo "== --resume PATH that is not a checkpoint -> 2"
train "$T/run" --train.steps=2 --resume "$T/nowhere"
expect_error "$T/run" 2 "--resume $T/nowhere: not a checkpoint directory"
echo "PASS"
