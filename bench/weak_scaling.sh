#!/usr/bin/env bash
# Weak scaling on this machine: training throughput of 2 ranks x 1 thread at a per-rank batch
# b, against two independent 1-rank runs (batch b each) at the same time (the two cores' own
# ceiling, contention included), and against 1 rank alone. The quickstart's model and cache.
#
#   bash bench/weak_scaling.sh [repeats=5] [per_rank_batch=64] [steps=60]
# Throughput = samples/s of each run's logged steps after the first 20 (warm-up excluded).
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${1:-5} B=${2:-64} STEPS=${3:-60}
BIN=$PWD/build/latentforge
CONFIG=$PWD/configs/fmnist-quick.ini
W=${LF_BENCH_DIR:-/tmp/lf-bench-scaling}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$W" && cd "$W"
if [ ! -f cache/manifest.json ]; then
  "$BIN" vae train --config "$CONFIG" --vae_train.run_dir=vae --vae_train.steps=1 --vae_train.eval_samples=16 --threads 1 > vae.log 2>&1
  "$BIN" encode --config "$CONFIG" --vae.weights=vae/vae --data.limit=20000 --cache.dir=cache --threads 2 > enc.log 2>&1
fi
T=(--config "$CONFIG" --vae.weights=vae/vae --cache.dir=cache --train.steps="$STEPS" --train.log_every=10
   --train.ckpt_every=100000 --train.val_cache= --train.sample_every=0 --threads 1)
rate() {  # samples/s over the logged windows after step 20 of a run dir's metrics.jsonl
  /usr/bin/python3 -c "
import json,sys
r=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]
w=[x for x in r if x['step']>20]
print(sum(x['samples_per_s'] for x in w)/len(w))" "$1/metrics.jsonl"
}
run() { rm -rf "$1"; "$BIN" train "${T[@]}" --train.run_dir="$1" --train.batch_size="$2" --train.grid_steps=1 \
          --train.grid_per_class=1 > "$1.log" 2>&1; }
two=() ind=() one=()
for i in $(seq 1 "$REPEATS"); do
  rm -rf r2
  mpirun --oversubscribe --bind-to none -np 2 "$BIN" train "${T[@]}" --train.run_dir=r2 --train.batch_size=$((2 * B)) \
    --train.grid_steps=1 --train.grid_per_class=1 > r2.log 2>&1
  two+=("$(rate r2)")
  run ra "$B" & pa=$!; run rb "$B"; wait $pa
  ind+=("$(echo "$(rate ra) + $(rate rb)" | bc -l)")
  run r1 "$B"
  one+=("$(rate r1)")
  printf 'round %d: 2 ranks %.0f samples/s | 2 independent %.0f | 1 rank alone %.0f\n' "$i" "${two[-1]}" "${ind[-1]}" "${one[-1]}"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
m2=$(median "${two[@]}") mi=$(median "${ind[@]}") m1=$(median "${one[@]}")
printf 'median samples/s: 2 ranks %.0f, two independent 1-rank runs %.0f, 1 rank %.0f\n' "$m2" "$mi" "$m1"
printf '2 ranks = %.1f%% of the two-process ceiling, %.2fx one rank\n' "$(echo "100*$m2/$mi" | bc -l)" "$(echo "$m2/$m1" | bc -l)"
