#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) in a separate build directory and runs
# each for a set time, one after another, keeping what they find (docs/fuzzing.md).
#
#   tests/fuzz/run.sh [-t SECONDS_PER_TARGET] [-o OUT_DIR] [-b BUILD_DIR] [TARGET ...]
#
# Defaults: 300 s per target, every target, OUT_DIR=fuzz-out, BUILD_DIR=build-fuzz. Per target,
# OUT_DIR/<target>/corpus grows (seeded from tests/fuzz_corpus/<target>), crashes land in
# OUT_DIR/<target>/crashes, and OUT_DIR/<target>/run-K.log holds libFuzzer's output; a table of
# executions, exec/s and crashes per target ends the run. Each fuzzer uses one core.
# A crash is minimised with:  build-fuzz/fuzz/fuzz_<target> -minimize_crash=1 -runs=10000 FILE
# then copied into tests/fuzz_corpus/<target>/ so that the replay test keeps it fixed.
set -euo pipefail
cd "$(dirname "$0")/../.."

SECONDS_PER=300
OUT=fuzz-out
BUILD=build-fuzz
while getopts "t:o:b:h" opt; do
  case $opt in
    t) SECONDS_PER=$OPTARG ;;
    o) OUT=$OPTARG ;;
    b) BUILD=$OPTARG ;;
    *) sed -n '2,13p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
ALL=(safetensors vae_config idx idx_gz image manifest state_json ini shard)
TARGETS=("${@:-${ALL[@]}}")

# clang and its libFuzzer/sanitizer runtimes are a development need only: CI runs the corpus
# replay (test_fuzz_replay) in the ordinary gcc build, never the fuzzers.
missing=()
command -v clang++ >/dev/null || missing+=(clang)
ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 || missing+=(libclang-rt-14-dev)
if ((${#missing[@]})); then
  echo "tests/fuzz/run.sh: needs ${missing[*]}, which cluster/install-deps.sh does not install;" >&2
  echo "  on Debian 12: apt-get install clang libclang-rt-14-dev" >&2
  exit 2
fi

export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD} CCACHE_SLOPPINESS=${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_COMPILER=clang++ -DLF_FUZZ=ON -DLF_BUILD_TESTS=OFF -DLF_BUILD_BENCH=OFF "${launcher[@]}" >/dev/null
cmake --build "$BUILD" -j "${LF_FUZZ_JOBS:-2}" --target $(printf 'fuzz_%s ' "${TARGETS[@]}")

mkdir -p "$OUT"
# HDF5's own leak of its global state at exit is not ours; UB and memory errors abort.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_NUM_THREADS=1 LF_TEST_TMP=${LF_TEST_TMP:-/tmp}
for t in "${TARGETS[@]}"; do
  mkdir -p "$OUT/$t/corpus" "$OUT/$t/crashes"
  rm -f "$OUT/$t"/run-*.log
  seeds=()
  [[ -d tests/fuzz_corpus/$t ]] && seeds=(tests/fuzz_corpus/$t)
  echo "== $t: ${SECONDS_PER}s"
  # A crash ends a libFuzzer run: start again until the time is used, so one finding does not
  # cut the others short. -rss_limit_mb/-malloc_limit_mb: an input that makes us allocate
  # gigabytes is a finding too.
  start=$(date +%s)
  k=0
  while left=$((SECONDS_PER - ($(date +%s) - start))); ((left > 5)); do
    k=$((k + 1))
    "$BUILD/fuzz/fuzz_$t" "$OUT/$t/corpus" "${seeds[@]}" -max_total_time="$left" \
      -artifact_prefix="$OUT/$t/crashes/" -rss_limit_mb=2560 -malloc_limit_mb=2048 -timeout=20 \
      -max_len=65536 -print_final_stats=1 > "$OUT/$t/run-$k.log" 2>&1 || true
  done
  echo "$(($(date +%s) - start))" > "$OUT/$t.seconds"
done

echo "target        execs   seconds   exec/s  crashes"
for t in "${TARGETS[@]}"; do
  # A crashing run may print its final stats more than once: take each run's largest count.
  execs=0
  for log in "$OUT/$t"/run-*.log; do
    n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | sort -n | tail -1)
    execs=$((execs + ${n:-0}))
  done
  secs=$(cat "$OUT/$t.seconds")
  printf '%-12s %10s %8s %8s %8s\n' "$t" "$execs" "$secs" "$((execs / (secs > 0 ? secs : 1)))" \
    "$(ls "$OUT/$t/crashes" | wc -l)"
done
