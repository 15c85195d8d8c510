#!/usr/bin/env bash
# Each stage picks its device like train (cache.device for encode, sample.device, eval.device):
# asked for cuda where no GPU is usable, it exits 2 before any work with a message naming the key
# and the reason (a CPU-only LibTorch, or no visible device); CUDA_VISIBLE_DEVICES= hides every
# GPU, so this holds on GPU machines too. A GPU-only precision on the CPU is refused the same way.
source "$(dirname "${BASH_SOURCE[0]}")/stages_common.bash"
setup e2e_stage_device_errors
export CUDA_VISIBLE_DEVICES=
REASON="(this build's LibTorch is CPU-only|no CUDA device is visible to this process)"

run() { local log="$1"; shift; RC=0; "$@" >"$log" 2>&1 || RC=$?; }

echo "== encode --cache.device=cuda"
run "$T/encode.log" "$LF_BIN" encode --threads=1 --vae.kind=identity --data.limit=8 --cache.dir="$T/cache" --cache.device=cuda
expect_rc 2 "$T/encode.log" "encode on cuda"
expect_in "$T/encode.log" "cache.device = cuda, but $REASON.*; set cache.device = cpu or auto"
[[ ! -e "$T/cache" ]] || fail "encode wrote $T/cache before refusing the device"

echo "== encode --cache.device=cuda on 2 ranks"
run "$T/encode2.log" "${MPIRUN[@]}" "$LF_BIN" encode --threads=1 --vae.kind=identity --data.limit=8 --cache.dir="$T/cache" --cache.device=cuda
expect_rc 2 "$T/encode2.log" "2-rank encode on cuda"
expect_in "$T/encode2.log" "cache.device = cuda, but $REASON"

echo "== sample --sample.device=cuda, eval --eval.device=cuda"
run "$T/sample.log" "$LF_BIN" sample --threads=1 --sample.checkpoint="$T/nowhere" --sample.device=cuda
expect_rc 2 "$T/sample.log" "sample on cuda"
expect_in "$T/sample.log" "sample.device = cuda, but $REASON"
run "$T/eval.log" "$LF_BIN" eval --threads=1 --eval.device=cuda
expect_rc 2 "$T/eval.log" "eval on cuda"
expect_in "$T/eval.log" "eval.device = cuda, but $REASON"

echo "== a GPU precision on the CPU"
run "$T/prec.log" "$LF_BIN" sample --threads=1 --sample.checkpoint="$T/nowhere" --sample.device=cpu --sample.precision=bf16
expect_rc 2 "$T/prec.log" "sample.precision=bf16 on cpu"
expect_in "$T/prec.log" "sample.precision = bf16 needs a CUDA device; on CPU use f32 or f64"
echo "PASS"
