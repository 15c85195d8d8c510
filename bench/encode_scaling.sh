#!/usr/bin/env bash
# Encode throughput on 2 ranks (mpirun -np 2) against the machine's own ceiling for two
# processes: two independent single-process encodes of the two halves (job-array tasks 0 and 1
# of 2, the same shards the two ranks get) run at the same time; and the memory peak of a
# 1-process encode at two dataset sizes (it must not grow with the dataset).
#
#   bash bench/encode_scaling.sh [repeats=5] [images=20000]
# Needs build/latentforge and a VAE (made here with one training step: throughput does not
# depend on the weights). Prints every round and the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${1:-5}
N=${2:-20000}
BIN=$PWD/build/latentforge
W=${LF_BENCH_DIR:-/tmp/lf-bench-encode}
CONFIG=$PWD/configs/fmnist-quick.ini
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$W" && cd "$W"
if [ ! -d vae/vae ]; then
  "$BIN" vae train --config "$CONFIG" --vae_train.run_dir=vae --vae_train.steps=1 --vae_train.eval_samples=16 \
    --threads 1 > vae.log 2>&1
fi
ENC=(--config "$CONFIG" --vae.weights=vae/vae --data.limit="$N" --cache.shard_size=2500 --threads 1)
now() { date +%s.%N; }
r2=() rb=()
for i in $(seq 1 "$REPEATS"); do
  rm -rf c2 && t0=$(now)
  mpirun --oversubscribe --bind-to none -np 2 "$BIN" encode "${ENC[@]}" --cache.dir=c2 > enc2.log 2>&1
  t2=$(echo "$(now) - $t0" | bc)
  rm -rf cb && t0=$(now)
  "$BIN" encode "${ENC[@]}" --cache.dir=cb --task-index 0 --task-count 2 --no-finalize > encb0.log 2>&1 &
  p0=$!
  "$BIN" encode "${ENC[@]}" --cache.dir=cb --task-index 1 --task-count 2 --no-finalize > encb1.log 2>&1
  wait $p0
  tb=$(echo "$(now) - $t0" | bc)
  r2+=("$(echo "$N / $t2" | bc -l)") rb+=("$(echo "$N / $tb" | bc -l)")
  printf 'round %d: 2 ranks %.1f s (%.0f img/s) | two independent halves %.1f s (%.0f img/s)\n' "$i" "$t2" \
    "${r2[-1]}" "$tb" "${rb[-1]}"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
m2=$(median "${r2[@]}") mb=$(median "${rb[@]}")
printf 'median: 2 ranks %.0f img/s, independent halves %.0f img/s -> %.1f%% of the ceiling\n' "$m2" "$mb" \
  "$(echo "100 * $m2 / $mb" | bc -l)"
for n in 10000 60000; do
  rm -rf cm
  /usr/bin/time -v "$BIN" encode "${ENC[@]}" --data.limit="$n" --cache.dir=cm > encm.log 2> time.log || true
  printf 'memory peak, 1 process, %d images: %s kB\n' "$n" "$(sed -n 's/.*Maximum resident set size (kbytes): //p' time.log)"
done
