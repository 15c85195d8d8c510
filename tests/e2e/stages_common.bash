# Shared set-up of the tests/e2e/sample_*.sh and eval_*.sh tests (sourced, not a test itself:
# ctest only picks up *.sh). A tiny trained pipeline: a KL VAE (f = 2, trained for 2 steps),
# a 64-image Fashion-MNIST cache and a tiny class-conditional UNet trained for 2 steps, so the
# stages after it run in about a second each on one core. Quality is irrelevant here: the tests
# compare runs of the same model.
#
# Environment (set by ctest, defaulted here for a manual run from the repository root):
#   LF_BIN, LF_SOURCE_DIR, LF_TEST_TMP.
source "$(dirname "${BASH_SOURCE[0]}")/e2e_env.bash"

# Flags every stage of the tiny pipeline shares.
tiny_flags() {
  COMMON=(--threads=1 --data.limit=64 --vae.channels=8,16 --vae.norm_groups=8 --vae.mid_attention=false
          --vae_train.run_dir="$T/vae" --vae.weights="$T/vae/vae" --dist.timeout_s=60)
}

# make_vae: the tiny VAE at $T/vae/vae.
make_vae() {
  tiny_flags
  "$LF_BIN" vae train "${COMMON[@]}" --vae_train.steps=2 --vae_train.batch_size=8 --vae_train.log_every=1 \
    --vae_train.eval_samples=8 >"$T/vae.log" 2>&1 || { cat "$T/vae.log"; fail "vae train failed"; }
}

# make_model: the VAE, its cache and a UNet trained for 2 steps at $T/run.
make_model() {
  make_vae
  "$LF_BIN" encode "${COMMON[@]}" --cache.dir="$T/cache" --cache.shard_size=32 >"$T/encode.log" 2>&1 ||
    { cat "$T/encode.log"; fail "encode failed"; }
  "$LF_BIN" train "${COMMON[@]}" --cache.dir="$T/cache" --train.run_dir="$T/run" --train.steps=2 \
    --train.batch_size=8 --train.log_every=1 --train.grid_per_class=1 --train.grid_steps=1 \
    --model.channels=16 --model.channel_mult=1,2 --model.num_res_blocks=1 --model.attention_ds=2 \
    --model.head_channels=16 --model.norm_groups=8 >"$T/train.log" 2>&1 || { cat "$T/train.log"; fail "train failed"; }
}

# expect_rc WANT LOG WHAT: fail, showing the log's tail, unless RC is WANT.
expect_rc() {
  if [[ "$RC" != "$1" ]]; then
    tail -n 40 "$2" >&2
    fail "$3 exited with $RC, expected $1 (log: $2)"
  fi
  echo "  $3: exit $RC as expected"
}

# expect_in LOG PATTERN...: every extended regex PATTERN matches LOG.
expect_in() {
  local log="$1"
  shift
  for pat in "$@"; do
    grep -Eq -- "$pat" "$log" || { tail -n 40 "$log" >&2; fail "$log does not match /$pat/"; }
  done
}

# same_samples A B WHAT: the two samples.h5 hold the same images and labels, bit for bit.
same_samples() {
  "$PY" - "$1" "$2" "$3" <<'PY' || fail "$3: samples differ ($1 vs $2)"
import sys, h5py, numpy as np
a, b, what = h5py.File(sys.argv[1]), h5py.File(sys.argv[2]), sys.argv[3]
ia, ib = a["images"][:], b["images"][:]
assert ia.shape == ib.shape, (ia.shape, ib.shape)
diff = np.argwhere((ia != ib).reshape(len(ia), -1).any(1)).ravel()
if len(diff):
    print(f"  {what}: {len(diff)} of {len(ia)} images differ, first {diff[:5]}, max |diff| "
          f"{np.abs(ia.astype(int) - ib.astype(int)).max()}")
    sys.exit(1)
assert (a["labels"][:] == b["labels"][:]).all(), "labels differ"
print(f"  {what}: {len(ia)} images and labels identical")
PY
}
