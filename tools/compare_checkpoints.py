#!/usr/bin/python3
"""Compares two training checkpoints tensor by tensor (the e2e tests' judge of invariants 2-3).

A checkpoint directory holds model.safetensors, ema.safetensors and optimizer.safetensors
(launch/ldm_trainer.cpp), or, written by a sharded run (dist.shard_optimizer), each of them as
the shard files its state.json lists under "shards": segments "NAME@OFFSET" (1-D, from element
OFFSET of the flattened tensor NAME, whose shape is in the file's metadata under "shape:NAME"),
which are put back together here, so a sharded checkpoint compares with an unsharded one. The safetensors format is parsed here with numpy alone: an 8-byte
little-endian header length, a JSON header {name: {dtype, shape, data_offsets}} (plus an
optional "__metadata__"), then the raw little-endian data (docs of huggingface/safetensors).

  compare_checkpoints.py A B --exact            bitwise equality of every tensor
  compare_checkpoints.py A B --atol X --rtol Y  |a - b| <= atol + rtol * |b| everywhere

Both checkpoints must hold the same files, tensor names, dtypes and shapes. Prints one line per
file (tensors compared, max abs and max rel error), then the first differing tensors with their
first differing entries. Exit status: 0 equal, 1 different, 2 unreadable input or bad usage.
Run with /usr/bin/python3 (Debian's numpy).
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
    "I8": "i1", "U8": "u1", "BOOL": "?",
}
FILES = ("model.safetensors", "ema.safetensors", "optimizer.safetensors")
MAX_HEADER = 100 << 20  # bound what we read before trusting it (docs/design.md, invariant 5)


class FormatError(Exception):
    pass


def read_safetensors(path, with_metadata=False):
    """Returns {name: (dtype string, numpy array)} of one safetensors file (and its metadata)."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise FormatError(f"{path}: {len(blob)} bytes, too short for the 8-byte header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > MAX_HEADER or 8 + n > len(blob):
        raise FormatError(f"{path}: header length {n} does not fit the file of {len(blob)} bytes")
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{path}: header is not JSON: {e}")
    data = memoryview(blob)[8 + n:]
    out = {}
    metadata = header.get("__metadata__", {}) or {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = info.get("dtype")
        if dtype not in DTYPES:
            raise FormatError(f"{path}: tensor '{name}' has dtype {dtype!r}; expected one of {sorted(DTYPES)}")
        shape = tuple(int(d) for d in info["shape"])
        begin, end = (int(x) for x in info["data_offsets"])
        want = int(np.prod(shape, dtype=np.int64)) * np.dtype(DTYPES[dtype]).itemsize
        if not 0 <= begin <= end <= len(data) or end - begin != want:
            raise FormatError(f"{path}: tensor '{name}' offsets [{begin}, {end}) do not hold {dtype} {list(shape)}")
        out[name] = (dtype, np.frombuffer(data[begin:end], dtype=DTYPES[dtype]).reshape(shape))
    return (out, metadata) if with_metadata else out


def read_part(ckpt, name):
    """Returns {tensor: (dtype, array)} of part `name` (model.safetensors...) of a checkpoint, whole
    or put together from its shards."""
    stem = name[:-len(".safetensors")]
    state_path = os.path.join(ckpt, "state.json")
    shards = []
    if os.path.isfile(state_path):
        with open(state_path) as f:
            shards = json.load(f).get("shards", {}).get(stem, [])
    if not shards:
        path = os.path.join(ckpt, name)
        if not os.path.isfile(path):
            raise FormatError(f"{path}: missing (expected a checkpoint directory holding {name})")
        return read_safetensors(path)
    pieces, shapes, out = {}, {}, {}
    for shard in shards:
        path = os.path.join(ckpt, shard)
        content, metadata = read_safetensors(path, with_metadata=True)
        for key, (dtype, arr) in content.items():
            base, at, offset = key.rpartition("@")
            if not at or not offset.isdigit():
                out[key] = (dtype, arr)
                continue
            shape = metadata.get("shape:" + base)
            if shape is None:
                raise FormatError(f"{path}: segment {key} has no shape:{base} in its metadata")
            shapes[base] = (dtype, tuple(int(d) for d in shape.split(",")) if shape else ())
            pieces.setdefault(base, []).append((int(offset), arr))
    for base, parts in pieces.items():
        dtype, shape = shapes[base]
        flat = np.zeros(int(np.prod(shape, dtype=np.int64)), dtype=DTYPES[dtype])
        covered = 0
        for offset, arr in sorted(parts, key=lambda p: p[0]):
            if offset != covered:
                raise FormatError(f"{ckpt}: {stem} tensor {base} has a gap or overlap at element {min(offset, covered)}")
            flat[offset:offset + arr.size] = arr
            covered += arr.size
        if covered != flat.size:
            raise FormatError(f"{ckpt}: {stem} tensor {base} holds {covered} of {flat.size} elements")
        out[base] = (dtype, flat.reshape(shape))
    return out


def compare_file(name, a_path, b_path, exact, atol, rtol, show, skip=()):
    """Prints a summary line; returns a list of (tensor, message) differences. a_path and b_path
    are (checkpoint directory, file name) pairs."""
    a, b = read_part(*a_path), read_part(*b_path)
    for k in skip:
        a.pop(k, None)
        b.pop(k, None)
    for path, content in ((a_path, a), (b_path, b)):
        if not content:
            raise FormatError(f"{os.path.join(*path)}: holds no tensors, nothing to compare")
    diffs = []
    for k in sorted(set(a) ^ set(b)):
        diffs.append((k, f"only in {'A' if k in a else 'B'}"))
    max_abs = max_rel = 0.0
    for k in sorted(set(a) & set(b)):
        (da, ta), (db, tb) = a[k], b[k]
        if da != db or ta.shape != tb.shape:
            diffs.append((k, f"A is {da} {list(ta.shape)}, B is {db} {list(tb.shape)}"))
            continue
        fa, fb = ta.astype(np.float64), tb.astype(np.float64)
        with np.errstate(invalid="ignore"):
            err = np.abs(fa - fb)
            rel = np.where(err == 0, 0.0, err / np.maximum(np.abs(fb), 1e-300))
        if err.size:
            max_abs = float(np.maximum(max_abs, np.max(err)))  # NaN propagates: it is a difference
            max_rel = float(np.maximum(max_rel, np.max(rel)))
        if exact:
            # Bitwise: compare the raw bits of each entry (so -0.0 vs 0.0 and NaN payloads count).
            bits = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[ta.dtype.itemsize]
            viol = ta.view(bits) != tb.view(bits)
        else:
            viol = ~(err <= atol + rtol * np.abs(fb))  # NaN counts as a violation
        if not viol.any():
            continue
        idx = np.nonzero(viol.reshape(-1))[0]
        flat_a, flat_b = fa.reshape(-1), fb.reshape(-1)
        first = ", ".join(f"[{i}] {flat_a[i]!r} vs {flat_b[i]!r}" for i in idx[:show])
        diffs.append((k, f"{len(idx)} of {fa.size} entries differ, max abs {float(np.max(err)):.3e}, "
                         f"max rel {float(np.max(rel)):.3e}; first: {first}"))
    print(f"  {name}: {len(set(a) & set(b))} tensors, max abs err {max_abs:.3e}, max rel err {max_rel:.3e}"
          f", {len(diffs)} differing")
    return diffs


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("a", help="checkpoint directory A")
    p.add_argument("b", help="checkpoint directory B (the reference for --rtol)")
    p.add_argument("--exact", action="store_true", help="require bitwise equality")
    p.add_argument("--atol", type=float, default=0.0)
    p.add_argument("--rtol", type=float, default=0.0)
    p.add_argument("--files", default=",".join(FILES), help="comma-separated files to compare")
    p.add_argument("--skip", default="", help="comma-separated tensor names to leave out (e.g. num_updates)")
    p.add_argument("--show", type=int, default=5, help="differing tensors (and entries each) to print")
    args = p.parse_args()
    if not args.exact and args.atol == 0 and args.rtol == 0:
        p.error("give --exact or a tolerance (--atol/--rtol)")

    mode = "bitwise" if args.exact else f"|a-b| <= {args.atol:g} + {args.rtol:g}*|b|"
    print(f"compare_checkpoints ({mode}):\n  A = {args.a}\n  B = {args.b}")
    total = []
    try:
        for f in args.files.split(","):
            pa, pb = (args.a, f), (args.b, f)
            total += [(f, k, m) for k, m in compare_file(f, pa, pb, args.exact, args.atol, args.rtol, args.show,
                                                          [k for k in args.skip.split(",") if k])]
    except (FormatError, OSError) as e:
        print(f"compare_checkpoints: error: {e}", file=sys.stderr)
        return 2
    if not total:
        print("  EQUAL")
        return 0
    print(f"  DIFFERENT: {len(total)} tensors; first {min(len(total), args.show)}:")
    for f, k, m in total[:args.show]:
        print(f"    {f}:{k}: {m}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
