#!/usr/bin/env bash
# The quickstart pipeline at a tiny size, end to end through the CLI: vae train -> encode ->
# train -> sample -> eval train-classifier -> eval; sample determinism across batch sizes and
# difference across seeds; eval on real images gives FD near its floor and on noise a large FD;
# an unlabelled image folder trains an unconditional model.
set -euo pipefail
BIN=${LF_BIN:?}
PY=/usr/bin/python3
T=${LF_TEST_TMP:-/tmp}/e2e_pipeline
rm -rf "$T" && mkdir -p "$T" && cd "$T"
fail() { echo "FAIL: $*" >&2; exit 1; }
COMMON=(--threads 1 --data.limit=384 --vae.channels=8,16,16 --vae.norm_groups=8
        --vae_train.run_dir=runs/vae --vae.weights=runs/vae/vae)
MODEL=(--model.channels=16 --model.channel_mult=1,2 --model.num_res_blocks=1 --model.attention_ds=2
       --model.head_channels=16 --model.norm_groups=8)

echo "== vae train"
"$BIN" vae train "${COMMON[@]}" --vae_train.steps=12 --vae_train.batch_size=16 --vae_train.log_every=4 \
  --vae_train.eval_samples=64
[ -f runs/vae/vae/config.json ] && [ -f runs/vae/vae/diffusion_pytorch_model.safetensors ] || fail "no VAE written"
[ -f runs/vae/reconstructions.png ] || fail "no reconstructions.png"

echo "== encode (train, test)"
"$BIN" encode "${COMMON[@]}" --cache.dir=cache/train --cache.shard_size=128
"$BIN" encode "${COMMON[@]}" --data.split=test --cache.dir=cache/test
"$BIN" inspect cache/train | tee inspect.txt | tail -2
grep -q "all 3 shards verified" inspect.txt || fail "inspect did not verify the 3 shards"

echo "== train"
"$BIN" train "${COMMON[@]}" "${MODEL[@]}" --cache.dir=cache/train --train.run_dir=runs/ldm --train.steps=8 \
  --train.batch_size=32 --train.log_every=4 --train.val_cache=cache/test --train.val_samples=64 --train.grid_steps=3 \
  --train.grid_per_class=2
[ -f runs/ldm/grid.png ] || fail "no training grid"
[ "$(wc -l < runs/ldm/metrics.jsonl)" -ge 2 ] || fail "metrics.jsonl has fewer than 2 records"
"$BIN" inspect runs/ldm >/dev/null || fail "inspect of the run dir failed"

echo "== export: the model whole and the KL VAE it was trained with, in the diffusers layout"
"$BIN" export runs/ldm export > export.log 2>&1 || { cat export.log; fail "export failed"; }
for f in model.safetensors ema.safetensors model_config.json vae/config.json vae/diffusion_pytorch_model.safetensors; do
  [ -f "export/$f" ] || fail "export wrote no $f"
done
"$BIN" inspect export/vae > export_vae.txt || fail "inspect of the exported VAE failed"
/usr/bin/python3 - runs/vae/vae/diffusion_pytorch_model.safetensors export/vae/diffusion_pytorch_model.safetensors <<'EOF' \
  || fail "the exported VAE differs from the one the model was trained with"
import json, struct, sys
def tensors(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); d = b[8 + n:]
    return {k: (v["dtype"], v["shape"], d[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in h.items() if k != "__metadata__"}
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
print(f"  exported VAE: {len(b)} tensors, " + ("equal to the trained one" if a == b else "DIFFERENT"))
sys.exit(0 if a == b else 1)
EOF

echo "== sample: batch size does not change the images; the seed does"
S=(--sample.checkpoint=runs/ldm --sample.num=12 --sample.steps=4 --threads 1)
"$BIN" sample "${S[@]}" --sample.batch_size=12 --sample.out_dir=s_b12
"$BIN" sample "${S[@]}" --sample.batch_size=5 --sample.out_dir=s_b5
"$BIN" sample "${S[@]}" --sample.batch_size=12 --sample.seed=7 --sample.out_dir=s_seed7
[ -f s_b12/grid.png ] || fail "no sample grid"
$PY - <<'PY' || fail "sample determinism"
import h5py, numpy as np
a = h5py.File("s_b12/samples.h5")["images"][:]
b = h5py.File("s_b5/samples.h5")["images"][:]
c = h5py.File("s_seed7/samples.h5")["images"][:]
labels = h5py.File("s_b12/samples.h5")["labels"][:]
assert a.shape == (12, 1, 32, 32) and a.dtype == np.uint8, a.shape
assert np.array_equal(a, b), "batch size 12 and 5 gave different images"
assert not np.array_equal(a, c), "seeds 0 and 7 gave the same images"
assert list(labels[:10]) == list(range(10)), labels
print("samples identical across batch sizes, different across seeds")
PY

echo "== eval train-classifier (tiny), eval of the samples"
"$BIN" eval train-classifier --threads 1 --data.limit=1000 --eval.classifier_epochs=1 --eval.classifier=clf.safetensors
"$BIN" eval "${COMMON[@]}" --eval.classifier=clf.safetensors --eval.samples=s_b12/samples.h5 --eval.vae_images=64
$PY - <<'PY' || fail "metrics.json"
import json
m = json.load(open("s_b12/metrics.json"))
for k in ("fd", "fd_floor", "fd_ratio", "class_accuracy", "num_samples", "vae"):
    assert k in m, k
assert m["num_samples"] == 12 and m["fd"] > 0 and m["fd_floor"] > 0, m
assert 0 < m["vae"]["psnr"] < 100, m["vae"]
print("metrics.json complete:", {k: m[k] for k in ("fd", "fd_floor", "class_accuracy")})
PY

echo "== eval on real test images (FD near the floor) and on noise (large FD)"
$PY - <<'PY'
import gzip, h5py, numpy as np
raw = gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").read()
imgs = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)[5000:5400]
lab = np.frombuffer(gzip.open("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)[5000:5400]
real = np.zeros((400, 1, 32, 32), np.uint8); real[:, 0, 2:30, 2:30] = imgs
rng = np.random.default_rng(0)
noise = rng.integers(0, 256, size=(400, 1, 32, 32), dtype=np.uint8)
for name, x in (("real", real), ("noise", noise)):
    with h5py.File(f"{name}.h5", "w") as f:
        f["images"] = x; f["labels"] = lab.astype(np.int64)
PY
"$BIN" eval --threads 1 --eval.vae=false --eval.classifier=clf.safetensors --eval.samples=real.h5 --eval.out=real.json
"$BIN" eval --threads 1 --eval.vae=false --eval.classifier=clf.safetensors --eval.samples=noise.h5 --eval.out=noise.json
$PY - <<'PY' || fail "FD of real images vs noise"
import json
r, n = json.load(open("real.json")), json.load(open("noise.json"))
print(f"real: FD {r['fd']:.3f} (floor {r['fd_floor']:.3f}, ratio {r['fd_ratio']:.2f}); noise: FD {n['fd']:.3f} (ratio {n['fd_ratio']:.1f})")
assert r["fd_ratio"] < 3.0, "real test images should score near the floor"
assert n["fd_ratio"] > 20.0 and n["fd"] > 10 * r["fd"], "noise should score far above the floor"
PY

echo "== an unlabelled image folder: unconditional model"
$PY - <<'PY'
import os, numpy as np
import matplotlib; matplotlib.use("Agg")
import matplotlib.pyplot as plt
os.makedirs("folder", exist_ok=True)
rng = np.random.default_rng(1)
for i in range(40):
    img = np.zeros((20, 20)); r = rng.integers(3, 8); c = rng.integers(5, 15, size=2)
    yy, xx = np.mgrid[:20, :20]; img[(yy - c[0]) ** 2 + (xx - c[1]) ** 2 < r * r] = 1.0
    plt.imsave(f"folder/img{i:03d}.png", img, cmap="gray", vmin=0, vmax=1)
PY
"$BIN" encode --threads 1 --vae.kind=identity --data.source=folder --data.color=gray --data.image_size=16 \
  --cache.dir=cache/folder
"$BIN" train --threads 1 --vae.kind=identity "${MODEL[@]}" --cache.dir=cache/folder --train.run_dir=runs/uncond \
  --train.steps=4 --train.batch_size=8 --train.log_every=2 --train.grid_steps=2
"$BIN" sample --threads 1 --sample.checkpoint=runs/uncond --sample.num=4 --sample.steps=2 --sample.out_dir=s_uncond
$PY - <<'PY' || fail "unconditional samples"
import h5py, numpy as np
f = h5py.File("s_uncond/samples.h5")
assert f["images"].shape == (4, 1, 16, 16), f["images"].shape
assert (f["labels"][:] == -1).all(), f["labels"][:]
print("unconditional model sampled from a folder without classes")
PY
echo "PASS"
