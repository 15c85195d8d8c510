#!/usr/bin/env bash
# dist.shard_optimizer (ZeRO-1, docs/design.md "Sharded optimizer and checkpoints"): in float64,
#  - W = 2 and 4 sharded ranks equal 1 rank (parameters, AdamW moments, EMA; ~1e-10), also with
#    gradient accumulation, and sharded equals unsharded at W = 2 to 1e-12 (only the norm's
#    summation order differs); a negative control (LF_DEBUG_SUM_GRADS) must differ;
#  - a sharded run stopped at step 2 and resumed on the same ranks is bitwise the run never stopped;
#  - a checkpoint resumes on another layout and continues the same batches (resharding):
#    W = 4 -> 2, 2 -> 1, 2 -> 3 (global batch 48), unsharded -> sharded, each equal to 1 rank;
#  - a kill at any rank between writing its part and the commit leaves the previous checkpoint;
#  - `sample`, `inspect` and `export` read the sharded checkpoint; the export equals it.
source "$(dirname "${BASH_SOURCE[0]}")/train_common.bash"
setup train_sharded
make_cache --data.limit=28 --cache.flip=true

F=(--train.precision=f64 --train.steps=4 --train.ckpt_every=2 --train.grad_clip=1.0
  --model.dropout=0.1 --diffusion.offset_noise=0.1
  --model.channels=8 --model.head_channels=8 --model.norm_groups=4 --dist.bucket_mb=0.05)
S=(--dist.shard_optimizer=true)
TOL=(--atol=1e-13 --rtol=1e-9)

# train_np N RUN_DIR [flags...]: N ranks under mpirun; its exit status in RC.
train_np() {
  local n="$1" run="$2"
  shift 2
  RC=0
  mpirun -np "$n" --oversubscribe --bind-to none "$LF_BIN" train --cache.dir="$CACHE" "${TRAIN_FLAGS[@]}" \
    --train.run_dir="$run" "$@" >"$run.log" 2>&1 || RC=$?
}
run_np_ok() {
  local n="$1" run="$2" what="$3"
  shift 3
  train_np "$n" "$run" "$@"
  expect_rc 0 "$run" "$what"
}
resumed_from() {  # RUN STEP: the run's log shows it resumed at STEP
  grep -q "resuming from .*step-$(printf %08d "$2") at step $2" "$1.log" || fail "$1 did not resume from step $2"
}

echo "== 1 rank vs 2 and 4 sharded ranks (gradient clipping on: the norm is summed from the ranks' parts)"
run_ok "$T/w1" "1 rank" "${F[@]}"
run_np_ok 2 "$T/s2" "2 ranks, sharded" "${F[@]}" "${S[@]}"
grep -q "optimizer-00001-of-00002.safetensors" "$(ckpt "$T/s2" 4)/state.json" || fail "s2 did not write a sharded checkpoint"
same_checkpoints "$(ckpt "$T/w1" 4)" "$(ckpt "$T/s2" 4)" "${TOL[@]}"
run_np_ok 4 "$T/s4" "4 ranks, sharded" "${F[@]}" "${S[@]}"
same_checkpoints "$(ckpt "$T/w1" 4)" "$(ckpt "$T/s4" 4)" "${TOL[@]}"

echo "== sharded vs unsharded on 2 ranks: to 1e-12"
run_np_ok 2 "$T/u2" "2 ranks, unsharded" "${F[@]}"
same_checkpoints "$(ckpt "$T/u2" 4)" "$(ckpt "$T/s2" 4)" --atol=1e-15 --rtol=1e-12

echo "== f32 (bf16 and f16 autocast need a GPU; they share this path): sharded == unsharded on 2 ranks"
P=(--train.steps=4 --train.ckpt_every=4 --train.precision=f32 --model.channels=8 --model.head_channels=8
  --model.norm_groups=4 --dist.bucket_mb=0.05)
run_np_ok 2 "$T/f32u" "2 ranks, f32, unsharded" "${P[@]}"
run_np_ok 2 "$T/f32s" "2 ranks, f32, sharded" "${P[@]}" "${S[@]}"
same_checkpoints "$(ckpt "$T/f32u" 4)" "$(ckpt "$T/f32s" 4)" --atol=1e-6 --rtol=1e-4

echo "== with train.grad_accum=2"
run_ok "$T/w1a" "1 rank, accum 2" "${F[@]}" --train.grad_accum=2
run_np_ok 2 "$T/s2a" "2 ranks, sharded, accum 2" "${F[@]}" "${S[@]}" --train.grad_accum=2
same_checkpoints "$(ckpt "$T/w1a" 4)" "$(ckpt "$T/s2a" 4)" "${TOL[@]}"

echo "== negative control: LF_DEBUG_SUM_GRADS=1 on 2 sharded ranks must differ"
LF_DEBUG_SUM_GRADS=1 run_np_ok 2 "$T/sum" "2 ranks, sharded, summed gradients" "${F[@]}" "${S[@]}"
different_checkpoints "$(ckpt "$T/w1" 4)" "$(ckpt "$T/sum" 4)" "${TOL[@]}"

echo "== stop at step 2, resume on the same 2 sharded ranks: bitwise"
run_np_ok 2 "$T/r2" "2 ranks, sharded, 2 steps" "${F[@]}" "${S[@]}" --train.steps=2
run_np_ok 2 "$T/r2" "2 ranks, sharded, resumed to 4" "${F[@]}" "${S[@]}" --resume auto
resumed_from "$T/r2" 2
same_checkpoints "$(ckpt "$T/s2" 4)" "$(ckpt "$T/r2" 4)" --exact
metrics_steps "$T/r2" 1 4

echo "== resharding: 4 -> 2 sharded, 2 sharded -> 1 rank, unsharded 2 -> sharded 2"
run_np_ok 4 "$T/d42" "4 ranks, sharded, 2 steps" "${F[@]}" "${S[@]}" --train.steps=2
run_np_ok 2 "$T/d42" "2 ranks, sharded, resumed" "${F[@]}" "${S[@]}" --resume auto
resumed_from "$T/d42" 2
same_checkpoints "$(ckpt "$T/w1" 4)" "$(ckpt "$T/d42" 4)" "${TOL[@]}"
run_np_ok 2 "$T/d21" "2 ranks, sharded, 2 steps" "${F[@]}" "${S[@]}" --train.steps=2
run_ok "$T/d21" "1 rank, resumed" "${F[@]}" --resume auto
resumed_from "$T/d21" 2
same_checkpoints "$(ckpt "$T/w1" 4)" "$(ckpt "$T/d21" 4)" "${TOL[@]}"
run_np_ok 2 "$T/us" "2 ranks, unsharded, 2 steps" "${F[@]}" --train.steps=2
run_np_ok 2 "$T/us" "2 ranks, sharded, resumed" "${F[@]}" "${S[@]}" --resume auto
resumed_from "$T/us" 2
same_checkpoints "$(ckpt "$T/w1" 4)" "$(ckpt "$T/us" 4)" "${TOL[@]}"

echo "== a checkpoint of format_version 1 (written before sharding) resumes on 2 sharded ranks"
mkdir -p "$T/v1/checkpoints"
cp -r "$(ckpt "$T/w1" 2)" "$T/v1/checkpoints/"
"$PY" - "$(ckpt "$T/v1" 2)/state.json" <<'EOF' || fail "cannot make the format-1 checkpoint"
import json, sys
p = sys.argv[1]; s = json.load(open(p))
assert s["format_version"] == 2 and "shards" not in s
s["format_version"] = 1
json.dump(s, open(p, "w"), indent=2)
EOF
run_np_ok 2 "$T/v1" "2 ranks, sharded, resumed from format 1" "${F[@]}" "${S[@]}" --resume auto
resumed_from "$T/v1" 2
same_checkpoints "$(ckpt "$T/w1" 4)" "$(ckpt "$T/v1" 4)" "${TOL[@]}"

echo "== resharding 2 -> 3 ranks (global batch 48: 16 per rank; 3 does not divide the buckets evenly)"
B48=(--train.batch_size=48)
run_ok "$T/w48" "1 rank, batch 48" "${F[@]}" "${B48[@]}"
run_np_ok 2 "$T/d23" "2 ranks, sharded, batch 48, 2 steps" "${F[@]}" "${S[@]}" "${B48[@]}" --train.steps=2
run_np_ok 3 "$T/d23" "3 ranks, sharded, resumed" "${F[@]}" "${S[@]}" "${B48[@]}" --resume auto
resumed_from "$T/d23" 2
same_checkpoints "$(ckpt "$T/w48" 4)" "$(ckpt "$T/d23" 4)" "${TOL[@]}"

echo "== a kill after the ranks wrote their parts, before state.json: step 2 stays the newest valid"
LF_CRASH_AT=ckpt.shards_written:2 train_np 2 "$T/crash" "${F[@]}" "${S[@]}"
[[ "$RC" != 0 ]] || fail "the run killed at ckpt.shards_written exited 0"
[[ ! -e "$(ckpt "$T/crash" 4)" ]] || fail "a checkpoint of step 4 exists after the kill"
"$LF_BIN" inspect "$T/crash" >"$T/crash.inspect" || { cat "$T/crash.inspect"; fail "inspect of the killed run failed"; }
grep -q "newest valid: .*step-00000002" "$T/crash.inspect" || { cat "$T/crash.inspect"; fail "step 2 is not the newest valid"; }
run_np_ok 2 "$T/crash" "2 ranks, sharded, resumed after the kill" "${F[@]}" "${S[@]}" --resume auto
resumed_from "$T/crash" 2
same_checkpoints "$(ckpt "$T/s2" 4)" "$(ckpt "$T/crash" 4)" --exact

echo "== inspect, sample and export read the sharded checkpoint"
"$LF_BIN" inspect "$(ckpt "$T/s2" 4)" >"$T/s2.inspect" || fail "inspect failed"
grep -q "sharded (dist.shard_optimizer): ema (2 files), model (2 files), optimizer (2 files)" "$T/s2.inspect" ||
  { cat "$T/s2.inspect"; fail "inspect does not describe the shards"; }
"$LF_BIN" export "$T/s2" "$T/export" >"$T/export.log" 2>&1 || { cat "$T/export.log"; fail "export failed"; }
same_checkpoints "$(ckpt "$T/s2" 4)" "$T/export" --exact --files=model.safetensors,ema.safetensors --skip=num_updates
grep -q '"kind": "ldm"' "$T/export/model_config.json" || fail "export wrote no model_config.json"
SF=(--sample.num=4 --sample.steps=2 --sample.batch_size=4 --threads=1)
"$LF_BIN" sample --sample.checkpoint="$T/s2" --sample.out_dir="$T/samp_s" "${SF[@]}" >"$T/samp_s.log" 2>&1 ||
  { tail "$T/samp_s.log"; fail "sample from the sharded checkpoint failed"; }
"$LF_BIN" train --cache.dir="$CACHE" "${TRAIN_FLAGS[@]}" "${F[@]}" --train.run_dir="$T/init" --train.steps=1 \
  --train.init_from="$(ckpt "$T/s2" 4)" >"$T/init.log" 2>&1 || { tail "$T/init.log"; fail "init_from a sharded checkpoint failed"; }
echo "PASS"
