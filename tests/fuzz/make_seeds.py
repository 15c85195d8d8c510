#!/usr/bin/python3
"""Writes the seed inputs of tests/fuzz_corpus/<target>/seed-* (docs/fuzzing.md): one small,
valid input of each kind a target reads, so the fuzzers start from deep inside the parsers and
the replay test checks that valid inputs are still read. Standard library (and Pillow for the
JPEG, when present); deterministic.

    /usr/bin/python3 tests/fuzz/make_seeds.py
"""
import gzip
import hashlib
import json
import os
import struct
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz_corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors, metadata=None):
    header, blob = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + blob


VAE_CONFIG = {"_class_name": "AutoencoderKL", "in_channels": 1, "out_channels": 1, "latent_channels": 4,
              "layers_per_block": 1, "norm_num_groups": 8, "block_out_channels": [16, 32],
              "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2,
              "act_fn": "silu", "sample_size": 32, "scaling_factor": 0.5}


def idx(dims, data):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + bytes(data)


def png(w, h, grey=True):
    raw = b"".join(b"\0" + bytes((x * 7 + y * 3) % 256 for x in range(w * (1 if grey else 3))) for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0 if grey else 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def bmp(w, h):
    pad = b"\0" * (-3 * w % 4)
    pixels = b"".join(bytes((x * 5 + y) % 256 for x in range(w) for _ in range(3)) + pad for y in range(h))
    return (b"BM" + struct.pack("<IHHI", 54 + len(pixels), 0, 0, 54)
            + struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(pixels), 2835, 2835, 0, 0) + pixels)


def manifest():
    shards = [{"file": "shard-00000.h5", "begin": 0, "count": 4, "sha256": "a" * 64,
               "file_sha256": "b" * 64, "bytes": 12345},
              {"file": "shard-00001.h5", "begin": 4, "count": 2, "sha256": "c" * 64}]
    return {"format": "latentforge-latent-cache", "format_version": 1, "producer": "LatentForge 0.1.0",
            "source": {"kind": "idx", "path": "/data", "count": 6}, "num_samples": 6,
            "image_shape": [1, 32, 32], "latent_shape": [4, 8, 8], "store": "moments", "dtype": "f16",
            "flip": False, "datasets": ["mean", "logvar"], "vae": {"sha256": "d" * 64, "config": VAE_CONFIG},
            "scale_factor": 0.8, "scale_factor_mode": "auto",
            "latent_stats": {"channel_mean": [0.1, 0.2, 0.3, 0.4], "channel_std": [1, 1, 1, 1], "mean": 0.25, "std": 1.1},
            "label_names": ["a", "b"], "num_classes": 2, "shard_size": 4, "shards": shards,
            "skipped": [{"path": "/data/x.png", "reason": "cannot decode"}]}


def main():
    put("safetensors", "vae", safetensors(
        {"w": ("F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)), "b": ("BOOL", [3], b"\1\0\1"),
         "i": ("I64", [], struct.pack("<q", -5))},
        {"format": "pt", "config": json.dumps(VAE_CONFIG)}))
    put("safetensors", "empty", safetensors({}))
    put("vae_config", "config.json", json.dumps(VAE_CONFIG, indent=2))
    images = idx([3, 28, 28], [(i * 7) % 256 for i in range(3 * 28 * 28)])
    put("idx", "images", images)
    put("idx_gz", "images", images)
    put("image", "grey.png", png(12, 5))
    put("image", "rgb.png", png(6, 9, grey=False))
    put("image", "rgb.bmp", bmp(7, 4))
    put("image", "grey.pgm", b"P5\n5 3\n255\n" + bytes(range(0, 150, 10)))
    put("image", "rgb.ppm", b"P6\n2 2\n255\n" + bytes(range(12)))
    try:  # JPEG needs an encoder: Pillow (python3-pil) when present
        import io
        from PIL import Image
        buf = io.BytesIO()
        Image.frombytes("RGB", (8, 6), bytes((i * 11) % 256 for i in range(8 * 6 * 3))).save(buf, "JPEG", quality=80)
        put("image", "rgb.jpg", buf.getvalue())
    except ImportError:
        pass
    put("manifest", "manifest.json", json.dumps(manifest(), indent=2))
    put("state_json", "state.json", json.dumps({
        "format_version": 1, "kind": "ldm", "step": 10, "epoch": 0.5, "world_size": 2,
        "vae": {"kind": "file", "sha256": "d" * 64, "weights": "vae.safetensors"},
        "cache": {"dir": "cache", "scale_factor": 0.8},
        # The target writes the three files an ldm checkpoint must have, empty, into its folder
        # (step-00000010, which `step` must name).
        "files": {name: {"bytes": 0, "sha256": hashlib.sha256(b"").hexdigest()}
                  for name in ("model.safetensors", "optimizer.safetensors", "ema.safetensors")}}, indent=2))
    with open(os.path.join(os.path.dirname(ROOT), "..", "configs", "fmnist-quick.ini"), "rb") as f:
        put("ini", "fmnist-quick.ini", f.read())
    # The shard target's input drives a generator: any bytes make a file. A zero byte is every
    # choice's "what the reader wants": all zeros is a sample-f32 shard, and the leading flags
    # make a moments-f16 one with flipped copies.
    put("shard", "sample-f32", bytes(256))
    put("shard", "moments-f16-flip", bytes([1, 1, 1]) + bytes(600))
    # The text_embeddings target's input drives a generator too: all zeros is one caption of one
    # token of width 1 (f32 embedding, u8 mask, variable-length file names); a 2 in the fourth
    # byte makes three captions.
    put("text_embeddings", "one-row", bytes(64))
    put("text_embeddings", "three-rows", bytes([0, 0, 0, 2]) + bytes(200))


if __name__ == "__main__":
    main()
