#!/usr/bin/env bash
# Sampling throughput on 2 ranks x 1 thread against 1 rank x 1 thread: `latentforge sample` of
# N quickstart images (configs/fmnist-quick.ini's VAE and UNet, its [sample] settings: DDIM 20
# steps, guidance 2, batch 500, chunks of 1,000), the two configurations interleaved round by
# round, wall time of the whole command (start-up, sampling, decoding, merge, grid), medians.
# Also the CPU seconds (user + sys of all processes) each configuration spent, which a machine
# shared with other work leaves nearly unchanged, and a check that both wrote the same samples.h5.
#
#   bash bench/sample_scaling.sh [rounds=3] [images=10000]
# Needs build/latentforge. The model is trained here for a few steps only: sampling cost does
# not depend on the weights. LF_BENCH_DIR (default /tmp/lf-bench-sample) keeps the model between
# runs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
N=${2:-10000}
BIN=$PWD/build/latentforge
W=${LF_BENCH_DIR:-/tmp/lf-bench-sample}
CONFIG=$PWD/configs/fmnist-quick.ini
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$W" && cd "$W"
Q=(--config "$CONFIG" --threads 1 --vae.weights=vae/vae)
if [ ! -d ldm/checkpoints ]; then
  "$BIN" vae train "${Q[@]}" --vae_train.run_dir=vae --vae_train.steps=20 --vae_train.eval_samples=16 > vae.log 2>&1
  "$BIN" encode "${Q[@]}" --data.limit=2000 --cache.dir=cache > encode.log 2>&1
  "$BIN" train "${Q[@]}" --cache.dir=cache --train.run_dir=ldm --train.steps=20 --train.val_cache= \
    --train.sample_every=0 --train.grid_per_class=1 --train.grid_steps=1 --train.log_every=10 > train.log 2>&1
fi
S=("${Q[@]}" --sample.checkpoint=ldm --sample.num="$N")
now() { date +%s.%N; }
cpu() { awk '{print $1 + $2}' "$1"; }  # user + sys seconds written by /usr/bin/time -f '%U %S'
t1s=() t2s=() c1s=() c2s=()
for i in $(seq 1 "$ROUNDS"); do
  load=$(cut -d' ' -f1 /proc/loadavg)
  rm -rf s1 && t0=$(now)
  /usr/bin/time -f '%U %S' -o cpu1.txt "$BIN" sample "${S[@]}" --sample.out_dir=s1 > s1.log 2>&1
  t1=$(echo "$(now) - $t0" | bc)
  rm -rf s2 && t0=$(now)
  /usr/bin/time -f '%U %S' -o cpu2.txt \
    mpirun --oversubscribe --bind-to none -np 2 "$BIN" sample "${S[@]}" --sample.out_dir=s2 > s2.log 2>&1
  t2=$(echo "$(now) - $t0" | bc)
  t1s+=("$t1") t2s+=("$t2") c1s+=("$(cpu cpu1.txt)") c2s+=("$(cpu cpu2.txt)")
  printf 'round %d (load %s): 1 rank x 1 thread %.1f s (%.1f img/s, %.0f CPU s) | 2 ranks x 1 thread %.1f s (%.1f img/s, %.0f CPU s) | speed-up %.2fx\n' \
    "$i" "$load" "$t1" "$(echo "$N / $t1" | bc -l)" "${c1s[-1]}" "$t2" "$(echo "$N / $t2" | bc -l)" "${c2s[-1]}" \
    "$(echo "$t1 / $t2" | bc -l)"
done
/usr/bin/python3 - <<'PY'
import h5py, numpy as np
a, b = h5py.File("s1/samples.h5"), h5py.File("s2/samples.h5")
same = np.array_equal(a["images"][:], b["images"][:]) and np.array_equal(a["labels"][:], b["labels"][:])
print("samples.h5 of 1 and 2 ranks identical:", same)
PY
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
m1=$(median "${t1s[@]}") m2=$(median "${t2s[@]}") mc1=$(median "${c1s[@]}") mc2=$(median "${c2s[@]}")
printf 'median: 1 rank %.1f s, 2 ranks %.1f s -> speed-up %.2fx (%s images)\n' "$m1" "$m2" "$(echo "$m1 / $m2" | bc -l)" "$N"
printf 'median CPU seconds: 1 rank %.0f, 2 ranks %.0f (2 ranks spend %.1f%% more CPU for the same images)\n' \
  "$mc1" "$mc2" "$(echo "100 * ($mc2 - $mc1) / $mc1" | bc -l)"
