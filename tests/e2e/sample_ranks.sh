#!/usr/bin/env bash
# docs/design.md, invariants 2 and 9 for `sample`: 2 ranks give the samples.h5 of 1 rank, and
# sample.batch_size 7 that of 10, bit for bit (with stochastic DDIM steps, so sampler noise is
# drawn too); a job killed after two of its five chunks and re-run (on another number of ranks)
# equals the uninterrupted one and samples only the missing chunks; a kill while merging is
# recovered by a re-run (before or after the rename); the chunks of another job (another seed)
# in the same directory are dropped, never mixed in; per-rank seeding (a negative control) differs.
source "$(dirname "${BASH_SOURCE[0]}")/stages_common.bash"
setup e2e_sample_ranks
make_model

S=(--threads=1 --sample.checkpoint="$T/run" --sample.num=23 --sample.chunk_size=5 --sample.steps=3
   --sample.eta=0.5 --sample.guidance=2 --dist.timeout_s=60)
# sample OUT_DIR LOG [flags...] (one rank) / sample_np2 ...: the exit status in RC.
sample() { local out="$1" log="$2"; shift 2; RC=0; "$LF_BIN" sample "${S[@]}" --sample.out_dir="$out" "$@" >"$log" 2>&1 || RC=$?; }
sample_np2() { local out="$1" log="$2"; shift 2; RC=0; "${MPIRUN[@]}" "$LF_BIN" sample "${S[@]}" --sample.out_dir="$out" "$@" >"$log" 2>&1 || RC=$?; }

echo "== 1 rank, batch 10 (the reference)"
sample "$T/one" "$T/one.log" --sample.batch_size=10
expect_rc 0 "$T/one.log" "1-rank sample"
[[ -f "$T/one/grid.png" && ! -e "$T/one/parts" ]] || fail "grid.png missing or parts/ left behind"
# Progress with rate on every long phase: sampling + decoding, the merge, and (in train) the
# verification of the cache.
expect_in "$T/one.log" "sample 23/23 images \(100.0%\) [0-9.]+ images/s" "merge 23/23 images .*images/s"
expect_in "$T/train.log" "verification of the cache $T/cache [0-9]+/[0-9]+ MB \(100.0%\) [0-9.]+ MB/s"

echo "== 2 ranks == 1 rank"
sample_np2 "$T/two" "$T/two.log" --sample.batch_size=10
expect_rc 0 "$T/two.log" "2-rank sample"
expect_in "$T/two.log" "2 rank\(s\) on cpu, f32; 5 chunk\(s\) of 5, 5 to sample"
same_samples "$T/one/samples.h5" "$T/two/samples.h5" "2 ranks vs 1 rank"
cmp -s "$T/one/grid.png" "$T/two/grid.png" || fail "grid.png differs between 1 and 2 ranks"

echo "== one chunk for 2 ranks: the same samples, and a warning that rank 1 idles"
sample_np2 "$T/onechunk" "$T/onechunk.log" --sample.batch_size=10 --sample.chunk_size=23
expect_rc 0 "$T/onechunk.log" "2-rank sample of one chunk"
expect_in "$T/onechunk.log" "the job has 1 chunk\(s\) for 2 ranks: 1 rank\(s\) will have nothing to sample \(sample.chunk_size = 23; 12 or less"
same_samples "$T/one/samples.h5" "$T/onechunk/samples.h5" "one chunk on 2 ranks vs 1 rank"

echo "== negative control: per-rank noise (LF_DEBUG_RANK_NOISE=1) on 2 ranks must differ"
LF_DEBUG_RANK_NOISE=1 sample_np2 "$T/ranknoise" "$T/ranknoise.log" --sample.batch_size=10
expect_rc 0 "$T/ranknoise.log" "2-rank sample with per-rank noise"
if (same_samples "$T/one/samples.h5" "$T/ranknoise/samples.h5" "per-rank noise") >/dev/null 2>&1; then
  fail "per-rank noise gave the same samples: the comparison cannot see a broken invariant"
fi
echo "  per-rank noise: samples differ, as they must"

echo "== sample.batch_size 7 == 10"
sample "$T/b7" "$T/b7.log" --sample.batch_size=7
expect_rc 0 "$T/b7.log" "batch 7"
same_samples "$T/one/samples.h5" "$T/b7/samples.h5" "batch 7 vs batch 10"

echo "== killed after 2 of 5 chunks, resumed on 2 ranks == uninterrupted"
LF_CRASH_AT=samples.chunk_written:3 sample "$T/killed" "$T/killed1.log" --sample.batch_size=10
[[ "$RC" == 137 ]] || { tail "$T/killed1.log"; fail "the run was not killed at its third chunk (exit $RC)"; }
[[ ! -e "$T/killed/samples.h5" ]] || fail "samples.h5 exists after a kill"
n=$(ls "$T/killed/parts" | grep -c '^chunk-[0-9]*\.h5$') || true
[[ "$n" == 2 ]] || fail "expected 2 finished chunks after the kill, found $n: $(ls "$T/killed/parts")"
sample_np2 "$T/killed" "$T/killed2.log" --sample.batch_size=10
expect_rc 0 "$T/killed2.log" "resumed sample"
expect_in "$T/killed2.log" "3 to sample \(2 already in"
same_samples "$T/one/samples.h5" "$T/killed/samples.h5" "resumed vs uninterrupted"

echo "== killed while merging, re-run == uninterrupted"
LF_CRASH_AT=samples.merge sample "$T/merge" "$T/merge1.log" --sample.batch_size=10
[[ "$RC" == 137 ]] || fail "the merge was not killed (exit $RC)"
[[ ! -e "$T/merge/samples.h5" ]] || fail "a half-merged samples.h5 is visible"
sample "$T/merge" "$T/merge2.log" --sample.batch_size=10
expect_rc 0 "$T/merge2.log" "re-run after a killed merge"
expect_in "$T/merge2.log" "0 to sample \(5 already in"
same_samples "$T/one/samples.h5" "$T/merge/samples.h5" "re-merged vs uninterrupted"

echo "== killed after the merge's rename, before parts/ is removed: a re-run merges again"
LF_CRASH_AT=samples.merged sample "$T/merged" "$T/merged1.log" --sample.batch_size=10
[[ "$RC" == 137 && -e "$T/merged/samples.h5" && -d "$T/merged/parts" ]] || fail "not killed between rename and clean-up (exit $RC)"
sample "$T/merged" "$T/merged2.log" --sample.batch_size=10
expect_rc 0 "$T/merged2.log" "re-run after the kill"
expect_in "$T/merged2.log" "0 to sample \(5 already in"
[[ ! -e "$T/merged/parts" ]] || fail "parts/ left behind"
same_samples "$T/one/samples.h5" "$T/merged/samples.h5" "re-merged after a late kill vs uninterrupted"

echo "== chunks of another seed in the same directory are dropped"
LF_CRASH_AT=samples.chunk_written:3 sample "$T/seeds" "$T/seed7.log" --sample.batch_size=10 --sample.seed=7
[[ "$RC" == 137 ]] || fail "the seed-7 run was not killed (exit $RC)"
sample "$T/seeds" "$T/seed0.log" --sample.batch_size=10
expect_rc 0 "$T/seed0.log" "seed 0 after seed 7"
expect_in "$T/seed0.log" "removed 3 stale or unfinished file" "5 to sample \(0 already in"
same_samples "$T/one/samples.h5" "$T/seeds/samples.h5" "seed 0 after a killed seed-7 job"
echo "PASS"
