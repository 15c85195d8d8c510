#!/usr/bin/env bash
# dist.shard_optimizer (ZeRO-1) on a UNet of 116M parameters (model.channels = 256, channel_mult
# 1,2,2, two res blocks, attention at 2 and 4) on the quickstart's latents, f32 on CPU:
#   memory  the bytes of the optimizer + EMA state tensors on each rank (AdamW's two moments, the
#           EMA; the training loop logs them per rank at start) and each rank's peak RSS (logged at
#           the end), at W = 1, 2, 4, sharded and not;
#   time    the median time per step on 2 ranks, sharded vs unsharded, rounds interleaved (the
#           first 2 steps of each run left out as warm-up).
# Every rank runs one thread (W = 4 oversubscribes the 2-core VM: its step times are not quoted).
#
#   bash bench/shard_memory.sh [rounds=3] [steps=12] [parts=mem,time]
# Writes runs/shard_memory/*.log and prints the tables (tools/shard_memory_report.py, re-runnable
# on the logs). Needs runs/quick (the quickstart).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3} STEPS=${2:-12} PARTS=${3:-mem,time}
BIN=${LF_BIN:-build/latentforge}
W=${LF_BENCH_DIR:-runs/shard_memory}
[ -e runs/quick/cache/train/manifest.json ] || { echo "shard_memory: runs/quick/cache/train not found: run bash cluster/quickstart.sh first" >&2; exit 2; }
mkdir -p "$W"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MODEL=(--model.channels=256 --model.channel_mult=1,2,2 --model.num_res_blocks=2 --model.attention_ds=2,4)
run() {  # run NAME RANKS SHARD STEPS
  local name=$1 n=$2 shard=$3 steps=$4 dir=$W/$1
  rm -rf "$dir"
  mpirun -np "$n" --oversubscribe --bind-to none "$BIN" train --config configs/fmnist-quick.ini --threads 1 "${MODEL[@]}" \
    --train.run_dir="$dir" --train.steps="$steps" --train.ckpt_every=100000 --train.batch_size=8 --train.log_every=1 \
    --train.val_cache= --train.sample_every=0 --train.grid_per_class=1 --train.grid_steps=2 \
    --dist.shard_optimizer="$shard" > "$W/$name.log" 2>&1 ||
    { tail -20 "$W/$name.log" >&2; exit 1; }
  rm -rf "$dir/checkpoints"
}
if [[ ,$PARTS, == *,mem,* ]]; then
  for n in 1 2 4; do
    run "mem-w$n-unsharded" "$n" false 3
    [ "$n" = 1 ] || run "mem-w$n-sharded" "$n" true 3
  done
fi
if [[ ,$PARTS, == *,time,* ]]; then
  for ((r = 1; r <= ROUNDS; r++)); do
    if (( r % 2 )); then order="false true"; else order="true false"; fi
    for shard in $order; do run "time-$([ "$shard" = true ] && echo sharded || echo unsharded)-$r" 2 "$shard" "$STEPS"; done
  done
fi
/usr/bin/python3 tools/shard_memory_report.py "$W" "$ROUNDS"
