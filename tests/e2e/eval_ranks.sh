#!/usr/bin/env bash
# docs/design.md, invariant 9 for `eval`: 2 ranks give the metrics of 1 rank (features are
# computed in the same batches, so they are the same bits; the float64 sums of features and
# their outer products are all-reduced, so the statistics agree to float64 rounding and FD, which
# takes square roots of their eigenvalues, to an absolute 1e-6; counts and accuracies exactly;
# PSNR/SSIM to relative 1e-12). A user-supplied
# classifier in LatentForge's safetensors layout without any metadata gives the same metrics as
# the file `eval train-classifier` wrote.
source "$(dirname "${BASH_SOURCE[0]}")/stages_common.bash"
setup e2e_eval_ranks
make_vae

echo "== the evaluation classifier (tiny) and 300 real test images as samples.h5"
"$LF_BIN" eval train-classifier --threads=1 --data.limit=512 --eval.classifier_epochs=1 \
  --eval.classifier="$T/clf.safetensors" >"$T/clf.log" 2>&1 || { cat "$T/clf.log"; fail "train-classifier failed"; }
"$PY" - "$T" <<'PY'
import gzip, sys, json, struct, h5py, numpy as np
T = sys.argv[1]
raw = gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").read()
imgs = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)[5000:5300]
lab = np.frombuffer(gzip.open("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)[5000:5300]
real = np.zeros((300, 1, 32, 32), np.uint8); real[:, 0, 2:30, 2:30] = imgs
with h5py.File(f"{T}/real.h5", "w") as f:
    f["images"] = real; f["labels"] = lab.astype(np.int64)
# The same classifier as a user would export it: the tensors alone, no metadata.
blob = open(f"{T}/clf.safetensors", "rb").read()
n = struct.unpack("<Q", blob[:8])[0]
header = json.loads(blob[8:8 + n]); header.pop("__metadata__", None)
h = json.dumps(header).encode(); h += b" " * (-len(h) % 8)
open(f"{T}/user.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + blob[8 + n:])
PY

# 1,000 test images in 16 batches of 64: the ranks take 8 batches each.
E=(--threads=1 --data.limit=1000 --vae.weights="$T/vae/vae" --eval.samples="$T/real.h5" --eval.batch_size=64
   --eval.vae_images=200 --dist.timeout_s=60)
# run_eval OUT CLASSIFIER [launcher...]: eval with that classifier, metrics to OUT.json.
run_eval() {
  local out="$1" clf="$2"
  shift 2
  RC=0
  "$@" "$LF_BIN" eval "${E[@]}" --eval.classifier="$clf" --eval.out="$out.json" >"$out.log" 2>&1 || RC=$?
}

echo "== 1 rank, 2 ranks"
run_eval "$T/one" "$T/clf.safetensors"
expect_rc 0 "$T/one.log" "1-rank eval"
expect_in "$T/one.log" "eval test features .*images/s" "eval sample features" "eval VAE reconstructions"
run_eval "$T/two" "$T/clf.safetensors" "${MPIRUN[@]}"
expect_rc 0 "$T/two.log" "2-rank eval"
expect_in "$T/two.log" "eval on 2 rank\(s\), cpu, f32" "eval test features \(rank 0 of 2\)"
run_eval "$T/user" "$T/user.safetensors"
expect_rc 0 "$T/user.log" "eval with the metadata-less classifier"

"$PY" - "$T" <<'PY' || fail "metrics differ"
import json, sys
T = sys.argv[1]
one, two, user = (json.load(open(f"{T}/{n}.json")) for n in ("one", "two", "user"))
def close(a, b, rel):
    return abs(a - b) <= rel * max(abs(a), abs(b))
for k in ("num_samples", "fd_floor_num_real", "feature_dim"):
    assert one[k] == two[k], (k, one[k], two[k])
for k in ("class_accuracy", "classifier_test_accuracy", "real_class_accuracy"):
    assert one[k] == two[k], (k, one[k], two[k])
# FD = |mu1 - mu2|^2 + Tr S1 + Tr S2 - 2 Tr sqrt(S1^1/2 S2 S1^1/2): the square root turns the float64
# rounding (~1e-16) of each (near-)zero eigenvalue into ~1e-8, so over D = 128 feature dimensions
# FD agrees to an absolute 1e-6 (docs/cli.md), not to 1e-16.
for k in ("fd", "fd_floor"):
    assert abs(one[k] - two[k]) <= 1e-6 * (1 + abs(one[k])), (k, one[k], two[k])
for k in ("psnr", "ssim"):
    assert close(one["vae"][k], two["vae"][k], 1e-12), (k, one["vae"][k], two["vae"][k])
assert one["vae"]["images"] == two["vae"]["images"] == 200
print(f"  2 ranks == 1 rank: FD {one['fd']:.12g} vs {two['fd']:.12g} (abs {abs(one['fd'] - two['fd']):.1e}), "
      f"floor {one['fd_floor']:.12g} vs {two['fd_floor']:.12g}, class accuracy {one['class_accuracy']}")
for k in ("fd", "fd_floor", "class_accuracy", "classifier_test_accuracy"):
    assert one[k] == user[k], (k, one[k], user[k])
print("  the metadata-less classifier gives the same metrics")
PY
echo "PASS"
