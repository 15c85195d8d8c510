#!/usr/bin/python3
"""Compares two LatentForge checkpoint directories tensor by tensor (model, EMA, optimizer).

  /usr/bin/python3 compare_checkpoints.py CKPT_A CKPT_B [--atol 0] [--files a.safetensors,...]

Reads safetensors with numpy only, as the format defines it (huggingface/safetensors README,
"Format"): 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape,
data_offsets: [begin, end]}, "__metadata__": {...}}, then the raw little-endian data, offsets
relative to the end of the header. Also compares state.json's step and samples_seen.
Prints one line per file (tensors, max |a - b|) and the first differing entries; exits 0 when
every tensor has the same name, dtype and shape and |a - b| <= atol everywhere (atol 0: equal
bit for bit, NaN equal to NaN), 1 when they differ, 2 when a file is missing or malformed.
"""
import json
import os
import struct
import sys

import numpy as np

DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
          "I8": "i1", "U8": "u1", "BOOL": "?"}
MAX_HEADER = 100 << 20  # bound what we read before trusting it


def read_safetensors(path):
    """{name: numpy array} of one file; BF16 widened to float32 exactly (it is float32's top half)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: {size} bytes, shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER or 8 + n > size:
            raise ValueError(f"{path}: header length {n} does not fit the file of {size} bytes")
        header = json.loads(f.read(n))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        if not 0 <= begin <= end <= len(data):
            raise ValueError(f"{path}: tensor {name} offsets [{begin}, {end}) outside {len(data)} data bytes")
        dtype = info["dtype"]
        buf = data[begin:end]
        if dtype == "BF16":
            arr = (np.frombuffer(buf, "<u2").astype(np.uint32) << 16).view(np.float32)
        elif dtype in DTYPES:
            arr = np.frombuffer(buf, DTYPES[dtype])
        else:
            raise ValueError(f"{path}: tensor {name} has dtype {dtype}, not one of {sorted(DTYPES)} or BF16")
        shape = tuple(info["shape"])
        if arr.size != int(np.prod(shape, dtype=np.int64)):
            raise ValueError(f"{path}: tensor {name} holds {arr.size} values, shape {shape} needs more or fewer")
        tensors[name] = (dtype, arr.reshape(shape))
    return tensors


def compare_file(path_a, path_b, atol, show=5):
    """(ok, one-line summary, detail lines) for one safetensors file present in both checkpoints."""
    a, b = read_safetensors(path_a), read_safetensors(path_b)
    details = []
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        details.append(f"  tensor names differ: only in A {only_a[:show]}, only in B {only_b[:show]}")
    worst, worst_name, bad = 0.0, "", 0
    for name in sorted(set(a) & set(b)):
        (da, ta), (db, tb) = a[name], b[name]
        if da != db or ta.shape != tb.shape:
            details.append(f"  {name}: A is {da}{list(ta.shape)}, B is {db}{list(tb.shape)}")
            bad += 1
            continue
        fa, fb = ta.astype(np.float64).ravel(), tb.astype(np.float64).ravel()
        same_nan = np.isnan(fa) & np.isnan(fb)
        diff = np.where(same_nan, 0.0, np.abs(fa - fb))
        diff = np.where(np.isnan(diff), np.inf, diff)
        m = float(diff.max()) if diff.size else 0.0
        if m > worst:
            worst, worst_name = m, name
        if m > atol:
            bad += 1
            if bad <= show:
                idx = np.flatnonzero(diff > atol)[:3]
                pairs = ", ".join(f"[{int(i)}] {fa[i]!r} vs {fb[i]!r}" for i in idx)
                details.append(f"  {name}{list(ta.shape)}: {int((diff > atol).sum())} entries differ, "
                               f"max |a-b| {m:.3e}; first: {pairs}")
    ok = bad == 0 and set(a) == set(b)
    summary = (f"{os.path.basename(path_a)}: {len(a)} tensors, max |a-b| {worst:.3e}"
               + (f" (in {worst_name})" if worst_name else "") + ("" if ok else f", {bad} differ"))
    return ok, summary, details


def main(argv):
    args, atol, files = [], 0.0, ["model.safetensors", "ema.safetensors", "optimizer.safetensors"]
    it = iter(argv)
    for arg in it:
        if arg == "--atol":
            atol = float(next(it))
        elif arg == "--files":
            files = next(it).split(",")
        else:
            args.append(arg)
    if len(args) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    a_dir, b_dir = args
    all_ok = True
    try:
        sa = json.load(open(os.path.join(a_dir, "state.json")))
        sb = json.load(open(os.path.join(b_dir, "state.json")))
        for key in ("step", "samples_seen"):
            if sa.get(key) != sb.get(key):
                print(f"state.json {key}: A {sa.get(key)} vs B {sb.get(key)}")
                all_ok = False
        for name in files:
            ok, summary, details = compare_file(os.path.join(a_dir, name), os.path.join(b_dir, name), atol)
            print(summary)
            for line in details:
                print(line)
            all_ok &= ok
    except (OSError, ValueError, KeyError) as e:
        print(f"compare_checkpoints: {e}", file=sys.stderr)
        return 2
    print(f"compare_checkpoints: {a_dir} vs {b_dir}: " + ("equal" if all_ok else "DIFFERENT")
          + (f" (atol {atol:g})" if atol else " (bit for bit)"))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
