#!/usr/bin/python3
"""Build a captioned 64x64 emoji dataset (Noto + Twemoji) in Hugging Face "imagefolder" layout.

Fetches two pinned npm packages from iamcal/emoji-data with `npm pack`, checks each tarball
against its pinned sha512 integrity, and writes

    OUT/train/{google,twitter}_<code>.png     + OUT/train/metadata.jsonl
    OUT/heldout/{google,twitter}_<code>.png   + OUT/heldout/metadata.jsonl
    OUT/labels.txt                             the 9 category names, one a line

Each metadata line is {"file_name": ..., "text": ..., "label": ...}: text is the emoji's
Unicode name in lower case plus its skin tone(s), CLDR-style ("father christmas: medium skin
tone"); label is its emoji-data category. The "Component" category (bare skin-tone swatches)
is left out. The held-out split is chosen by a hash of the base emoji's code point, so an emoji,
all its skin-tone variants and both sets' images fall on the same side (base emoji with
byte-identical images are grouped, so no picture is on both sides).

Only the Google (Apache-2.0) and Twitter (CC-BY-4.0) sets are used; the Apple and Facebook sets
are not licensed for this. See docs/emoji-data.md. Standard library only.

Usage: /usr/bin/python3 tools/emoji_dataset.py OUT_DIR [--work DIR] [--heldout-percent 10]
"""
import argparse
import base64
import collections
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile

VERSION = "16.0.0"  # newest version published for both packages (npm view ... versions)
# Image set -> (npm package, dist.integrity from `npm view NAME@VERSION dist.integrity`).
PACKAGES = {
    "google": ("emoji-datasource-google",
               "sha512-ZRexfzs7MVoLnmzZmNsO4TKhnAJp5D++Vm6PpUpH/jEQQlemp3l88CjZ+DoZ2faM9R4QxZkOPJCoT8DlPhfQ3A=="),
    "twitter": ("emoji-datasource-twitter",
                "sha512-7F+uCuHH+7Qnrc15P5tnbvKkg9E6tlzi4MnT2uW1RlN4pLYTza6cP/dstIfSDMtpjFLWuZewWg8jBbuL2eyELQ=="),
}
SKIPPED_CATEGORY = "Component"  # the five skin-tone swatches, not pictures
TONES = {"1F3FB": "light skin tone", "1F3FC": "medium-light skin tone",
         "1F3FD": "medium skin tone", "1F3FE": "medium-dark skin tone", "1F3FF": "dark skin tone"}


class Failure(Exception):
    """A runtime failure (exit status 1); the message names the package or file."""


def sha512_integrity(path):
    """The npm-style "sha512-<base64>" integrity string of a file."""
    h = hashlib.sha512()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha512-" + base64.b64encode(h.digest()).decode("ascii")


def fetch(package, integrity, work, version=VERSION):
    """Path of the verified tarball of package@version in `work`, running `npm pack` if needed."""
    path = os.path.join(work, f"{package}-{version}.tgz")
    spec = f"{package}@{version}"
    if not os.path.exists(path):
        print(f"fetching {spec} with npm pack ...", flush=True)
        try:
            r = subprocess.run(["npm", "pack", spec, "--silent"], cwd=work,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        except FileNotFoundError:
            raise Failure(f"{spec}: the npm command was not found; install Node.js/npm")
        if r.returncode != 0:
            raise Failure(f"{spec}: npm pack failed (exit {r.returncode}): {r.stderr.strip()}")
        if not os.path.exists(path):
            raise Failure(f"{spec}: npm pack did not write {path} (stdout: {r.stdout.strip()})")
    got = sha512_integrity(path)
    if got != integrity:
        raise Failure(f"{path}: integrity mismatch for {spec}: expected {integrity}, "
                      f"got {got}; delete the file to fetch it again, refusing to use it")
    return path


def read_package(tarball, image_set):
    """(emoji.json data, {image file name: PNG bytes}) read from the tarball without extracting."""
    prefix = f"package/img/{image_set}/64/"
    meta, pngs = None, {}
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                if m.name == "package/emoji.json":
                    meta = json.load(tar.extractfile(m))
                elif m.name.startswith(prefix) and m.name.endswith(".png") \
                        and "/" not in m.name[len(prefix):]:
                    pngs[m.name[len(prefix):]] = tar.extractfile(m).read()
    except (tarfile.TarError, OSError, ValueError) as e:
        raise Failure(f"{tarball}: cannot read: {e}")
    if meta is None:
        raise Failure(f"{tarball}: has no package/emoji.json")
    if not pngs:
        raise Failure(f"{tarball}: has no PNGs under {prefix}")
    return meta, pngs


def tone_text(key):
    """Skin-tone words for a skin_variations key: "1F3FD" or "1F3FB-1F3FF" (two people)."""
    tones = [TONES[t] for t in key.split("-")]
    if len(set(tones)) == 1:  # "1F3FB-1F3FB": both people the same tone
        return tones[0]
    return ", ".join(tones)


def base_names(emoji):
    """{unified: caption without tone}. Lower-cased Unicode name, or the short name where the
    name is missing or shared (1F935 and its ZWJ "man" form are both named MAN IN TUXEDO)."""
    def short(e):
        return e["short_name"].replace("_", " ").replace("-", " ")
    counts = collections.Counter((e.get("name") or "").lower() for e in emoji)
    return {e["unified"]: (e["name"].lower() if e.get("name") and counts[e["name"].lower()] == 1
                           else short(e)) for e in emoji}


def split_groups(emoji, pngs):
    """{base unified: group key}. Normally the emoji's own code; base emoji whose images are
    byte-identical (Twemoji draws most two-parent families alike, Australia and Heard Island
    share a flag) share the smallest code, so one picture never lands on both sides."""
    parent = {}

    def find(u):
        while parent.get(u, u) != u:
            u = parent[u]
        return u
    owner = {}  # sha256 of a PNG -> the first base emoji seen with it
    for e in emoji:
        for v in [e] + list((e.get("skin_variations") or {}).values()):
            for image_set in PACKAGES:
                data = pngs[image_set].get(v["image"])
                if data is not None:
                    first = owner.setdefault(hashlib.sha256(data).digest(), e["unified"])
                    a, b = find(e["unified"]), find(first)
                    if a != b:
                        parent[max(a, b)] = min(a, b)
    return {e["unified"]: find(e["unified"]) for e in emoji}


Record = collections.namedtuple("Record", "split base image_set image meta toned")


def build_records(emoji, pngs, percent):
    """A Record for every image: its split, base emoji, set, file name in the package,
    metadata line and whether it is a skin-tone variant."""
    emoji = [e for e in emoji if e["category"] != SKIPPED_CATEGORY]
    names, groups = base_names(emoji), split_groups(emoji, pngs)
    records = []
    for e in sorted(emoji, key=lambda e: e["sort_order"]):
        base = e["unified"]
        # Deterministic split by the base emoji: sha256 of its unified code point(s), or of
        # its group's when another base emoji has a byte-identical image.
        bucket = int(hashlib.sha256(groups[base].encode("ascii")).hexdigest(), 16) % 100
        split = "heldout" if bucket < percent else "train"
        variants = [("", e)] + sorted((e.get("skin_variations") or {}).items())
        for key, v in variants:
            text = names[base]
            if key:  # the tones after ": ", also when the name has a colon already
                text += ": " + tone_text(key)
            for image_set in PACKAGES:
                if v.get(f"has_img_{image_set}") and v["image"] in pngs[image_set]:
                    meta = {"file_name": f"{image_set}_{v['image']}", "text": text,
                            "label": e["category"]}
                    records.append(Record(split, base, image_set, v["image"], meta, bool(key)))
    return records


def write_dataset(out, records, pngs, labels):
    """Write the PNGs, metadata.jsonl files and labels.txt under `out`."""
    for split in ("train", "heldout"):
        d = os.path.join(out, split)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "metadata.jsonl"), "w", encoding="utf-8") as meta:
            for r in records:
                if r.split == split:
                    with open(os.path.join(d, r.meta["file_name"]), "wb") as f:
                        f.write(pngs[r.image_set][r.image])
                    meta.write(json.dumps(r.meta, ensure_ascii=False) + "\n")
    with open(os.path.join(out, "labels.txt"), "w", encoding="utf-8") as f:
        f.write("".join(label + "\n" for label in labels))


def summarize(records, labels):
    """Print counts per split, per category and per image set."""
    by = collections.Counter((r.split, r.meta["label"]) for r in records)
    print(f"{'category':<20}{'train':>8}{'heldout':>9}")
    for label in labels:
        print(f"{label:<20}{by['train', label]:>8}{by['heldout', label]:>9}")
    for split in ("train", "heldout"):
        n = sum(1 for r in records if r.split == split)
        sets = collections.Counter(r.image_set for r in records if r.split == split)
        bases = len({r.base for r in records if r.split == split})
        print(f"{split}: {n} images of {bases} base emoji "
              f"({', '.join(f'{k} {v}' for k, v in sorted(sets.items()))})")
    tones = sum(1 for r in records if r.toned)
    print(f"total: {len(records)} images in {len(labels)} categories, {tones} of them "
          f"skin-tone variants ({len({r.meta['text'] for r in records})} distinct captions)")


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", metavar="OUT_DIR", help="output folder (must be absent or empty)")
    p.add_argument("--work", metavar="DIR",
                   help="keep the npm tarballs here and reuse them (default: a temporary folder)")
    p.add_argument("--heldout-percent", type=int, default=10, metavar="P",
                   help="percent of base emoji held out, 0-100 (default 10)")
    a = p.parse_args(argv)
    if not 0 <= a.heldout_percent <= 100:
        p.error(f"--heldout-percent must be in 0..100, got {a.heldout_percent}")
    if os.path.exists(a.out) and (not os.path.isdir(a.out) or os.listdir(a.out)):
        p.error(f"OUT_DIR {a.out} exists and is not an empty folder; refusing to overwrite it")
    try:
        with tempfile.TemporaryDirectory(prefix="emoji-npm-") as tmp:
            work = a.work or tmp
            os.makedirs(work, exist_ok=True)
            emoji, pngs = None, {}
            for image_set, (package, integrity) in PACKAGES.items():
                meta, pngs[image_set] = read_package(fetch(package, integrity, work), image_set)
                if emoji is not None and meta != emoji:
                    raise Failure(f"{package}@{VERSION}: emoji.json differs from the other set's")
                emoji = meta
        labels = []  # categories in emoji-data's order (by sort_order)
        for e in sorted(emoji, key=lambda e: e["sort_order"]):
            if e["category"] != SKIPPED_CATEGORY and e["category"] not in labels:
                labels.append(e["category"])
        records = build_records(emoji, pngs, a.heldout_percent)
        write_dataset(a.out, records, pngs, labels)
    except OSError as e:
        raise Failure(f"{getattr(e, 'filename', None) or a.out}: {e.strerror or e}")
    summarize(records, labels)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Failure as e:
        print(f"emoji_dataset.py: error: {e}", file=sys.stderr)
        sys.exit(1)
