#!/usr/bin/env bash
# Checkpoint stall: how long training is blocked per checkpoint, synchronous (rank 0 writes
# while every rank waits) vs train.async_checkpoint (host copies at the step boundary, written
# in a background thread), and how much slower steps run while a background write is in
# progress. The same run (a 35M-parameter UNet on the quickstart's latents: checkpoints of
# ~560 MB = weights + EMA + two AdamW moments) in both modes, rounds interleaved; the numbers
# come from the runs' logs (rank 0's glog timestamps):
#   blocked      "checkpoint of step N: training blocked for X ms" (both modes)
#   step times   the gaps between consecutive "step N/M" lines: a step whose line comes while a
#                background write is in flight (between its start and its "written ... (in the
#                background)" line) is "during", one after the commit "clean"; the steps that
#                contain a save are left out of both.
#
#   bash bench/ckpt_stall.sh [rounds=3] [steps=40] [ckpt_every=8] [threads=2] [--key=value ...]
# With LF_RANKS=N (default 1) every run has N ranks (mpirun) of `threads` threads each, and a third
# mode joins: dist.shard_optimizer, where every rank writes its part of the checkpoint in parallel.
# Writes runs/ckpt_stall/MODE-R.log and prints medians (tools/ckpt_stall_report.py, which can be
# re-run on the logs). Needs runs/quick (the quickstart).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3} STEPS=${2:-40} EVERY=${3:-8} THREADS=${4:-2}
shift $(( $# < 4 ? $# : 4 ))
BIN=${LF_BIN:-build/latentforge}
W=${LF_BENCH_DIR:-runs/ckpt_stall}
[ -e runs/quick/cache/train/manifest.json ] || { echo "ckpt_stall: runs/quick/cache/train not found: run bash cluster/quickstart.sh first" >&2; exit 2; }
mkdir -p "$W"
RANKS=${LF_RANKS:-1}
MODES=(sync async)
(( RANKS > 1 )) && MODES=(sync sharded async)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
LAUNCH=()
(( RANKS > 1 )) && LAUNCH=(mpirun -np "$RANKS" --oversubscribe --bind-to none)
MODEL=(--model.channels=128 --model.channel_mult=1,2,2 --model.num_res_blocks=2 --model.attention_ds=2,4)
run() {  # run MODE ROUND
  local mode=$1 r=$2 dir=$W/$1-$2
  rm -rf "$dir"
  "${LAUNCH[@]}" "$BIN" train --config configs/fmnist-quick.ini --threads "$THREADS" "${MODEL[@]}" --train.run_dir="$dir" \
    --train.steps="$STEPS" --train.ckpt_every="$EVERY" --train.keep_last=2 --train.batch_size=32 --train.log_every=1 \
    --train.val_cache= --train.sample_every=0 --train.async_checkpoint=$([ "$mode" = async ] && echo true || echo false) \
    --dist.shard_optimizer=$([ "$mode" = sharded ] && echo true || echo false) \
    "$@" > "$W/$mode-$r.log" 2>&1 || { tail -20 "$W/$mode-$r.log" >&2; exit 1; }
  rm -rf "$dir/checkpoints"
}
for ((r = 1; r <= ROUNDS; r++)); do  # interleaved: forward order in odd rounds, backward in even ones
  if (( r % 2 )); then order=("${MODES[@]}"); else order=(); for m in "${MODES[@]}"; do order=("$m" "${order[@]}"); done; fi
  for m in "${order[@]}"; do run "$m" "$r" "$@"; done
done
/usr/bin/python3 tools/ckpt_stall_report.py "$W" "$ROUNDS" "$(IFS=,; echo "${MODES[*]}")"
