#!/usr/bin/env bash
# Text-to-image end to end on a captioned image folder the test makes (coloured shapes, RGBA on a
# transparent background, metadata.jsonl with captions and labels): the captions reach the cache
# as UTF-8 and tokens (the manifest records the tokenizer, context length and the truncation
# count), cache.flip is refused; a text UNet and a text DiT train with keyed caption dropout so
# that 2 ranks == 1 rank in float64, a resumed run equals a straight one bitwise; `sample` takes
# prompts (samples.h5 records them, 2 ranks == 1 rank) and refuses them for a class model. Then
# the same with caption embeddings from an HDF5 file (a stand-in for a frozen encoder's): matched
# by file name into the cache, bad files refused with their name, a model of the embeddings
# (2 ranks == 1 rank, resume bitwise) sampled from the prompts' embeddings.
source "$(dirname "${BASH_SOURCE[0]}")/train_common.bash"
setup train_text

echo "== a captioned folder of 48 shapes (16x16 RGBA)"
"$PY" - "$T/shapes" <<'EOF'
import json, os, sys
import numpy as np
from PIL import Image
out, side = sys.argv[1], 16
os.makedirs(out)
colours = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (40, 60, 220), "yellow": (230, 200, 20)}
wheres = {"left": (0.3, 0.5), "right": (0.7, 0.5), "top": (0.5, 0.3), "bottom": (0.5, 0.7)}
yy, xx = np.mgrid[0:side, 0:side] / side
with open(os.path.join(out, "metadata.jsonl"), "w") as meta:
    for k, (shape, (cname, rgb), (wname, (cx, cy))) in enumerate(
            (s, c, w) for s in ["square", "disc", "bar"] for c in colours.items() for w in wheres.items()):
        m = {"square": (abs(xx - cx) < 0.2) & (abs(yy - cy) < 0.2),
             "disc": (xx - cx) ** 2 + (yy - cy) ** 2 < 0.04,
             "bar": (abs(xx - cx) < 0.2) & (abs(yy - cy) < 0.07)}[shape]
        img = np.zeros((side, side, 4), np.uint8)
        img[m] = (*rgb, 255)
        name = f"img{k:03d}.png"
        Image.fromarray(img, "RGBA").save(os.path.join(out, name))
        # One caption per shape with a multi-byte character, cut inside it by the context length.
        text = f"{cname} {shape} at the {wname}" + (" ✓✓✓" if k % 12 == 0 else "")
        meta.write(json.dumps({"file_name": name, "text": text, "label": shape}, ensure_ascii=False) + "\n")
EOF

CTX=24
CACHE="$T/textcache"
"$LF_BIN" encode --vae.kind=identity --data.source="$T/shapes" --data.image_size=16 --cache.dir="$CACHE" \
  --cache.shard_size=16 --cache.dtype=f32 --model.context_length=$CTX --threads=1 >"$T/encode.log" 2>&1 ||
  { cat "$T/encode.log"; fail "encode failed"; }

echo "== the cache holds the captions, their tokens, and the manifest counts the truncations"
"$PY" - "$CACHE" "$T/shapes/metadata.jsonl" $CTX <<'EOF' || fail "the cache's text does not match metadata.jsonl"
import glob, json, sys
import h5py
cache, meta, ctx = sys.argv[1], sys.argv[2], int(sys.argv[3])
captions = [json.loads(l)["text"] for l in open(meta, encoding="utf-8")]
m = json.load(open(f"{cache}/manifest.json"))
t = m["text"]
want_truncated = sum(len(c.encode()) > ctx - 2 for c in captions)
assert t["tokenizer"] == "bytes-v1" and t["context_length"] == ctx, t
assert t["truncated"] == want_truncated, (t, want_truncated)
assert want_truncated > 0 and want_truncated < len(captions)
seen = 0
for path in sorted(glob.glob(f"{cache}/shard-*.h5")):
    f = h5py.File(path, "r")
    for row, index in enumerate(f["index"][:]):
        caption = captions[index]
        stored = bytes(f["caption"][row]).rstrip(b"\0").decode()
        assert stored == caption, (stored, caption)
        b = caption.encode()
        if len(b) > ctx - 2:  # cut before the character that does not fit whole
            n = ctx - 2
            while n > 0 and (b[n] & 0xC0) == 0x80:
                n -= 1
            b = b[:n]
        want = [256] + list(b) + [257]
        want += [258] * (ctx - len(want))
        assert list(f["tokens"][row]) == want, (list(f["tokens"][row]), want)
        seen += 1
assert seen == len(captions)
print(f"  {seen} captions and tokens as written, {want_truncated} truncated")
EOF

"$LF_BIN" inspect "$CACHE" >"$T/inspect.log" 2>&1 || { cat "$T/inspect.log"; fail "inspect failed"; }
grep -q "captions:     bytes-v1 tokens, context length $CTX, [0-9]* of 48 cut to it; sample 0: \"red square at the left" \
  "$T/inspect.log" || fail "inspect does not describe the captions: $(grep captions "$T/inspect.log")"

echo "== cache.flip is refused for captions; a context length other than the cache's is refused"
rc=0
"$LF_BIN" encode --vae.kind=identity --data.source="$T/shapes" --data.image_size=16 --cache.dir="$T/flip" \
  --cache.flip=true --threads=1 >"$T/flip.log" 2>&1 || rc=$?
[[ $rc == 2 ]] || fail "encode with cache.flip on captions exited with $rc, expected 2"
grep -q "cache.flip = true with a captioned data set" "$T/flip.log" || fail "no flip message: $(tail -2 "$T/flip.log")"
TEXT=(--model.context_length=$CTX --model.text_width=16 --model.text_depth=1 --model.text_heads=2
  --train.label_dropout=0.5)
train "$T/badctx" "${TEXT[@]}" --model.context_length=30 --train.steps=1
expect_rc 2 "$T/badctx" "train with another context length"
grep -q "model.context_length = 30 but the cache .* holds captions tokenised to $CTX tokens" "$T/badctx.log" ||
  fail "no context length message: $(tail -2 "$T/badctx.log")"

F=(--train.precision=f64 --train.steps=4 --train.ckpt_every=2 --train.grad_clip=0 "${TEXT[@]}")
TOL=(--atol=1e-13 --rtol=1e-9)
echo "== text UNet: 1 rank vs 2 ranks in float64 (caption dropout keyed per sample)"
run_ok "$T/u1" "1 rank" "${F[@]}"
grep -q "sample grid" "$T/u1.log" || fail "no training grid"
run_np2_ok "$T/u2" "2 ranks" "${F[@]}"
same_checkpoints "$(ckpt "$T/u1" 4)" "$(ckpt "$T/u2" 4)" "${TOL[@]}"
echo "== text UNet: 2 steps, resume, 2 more == 4 straight (bitwise)"
run_ok "$T/ur" "first 2 steps" "${F[@]}" --train.steps=2
run_ok "$T/ur" "resume to 4" "${F[@]}" --resume auto
same_checkpoints "$(ckpt "$T/u1" 4)" "$(ckpt "$T/ur" 4)" --exact
echo "  (not vacuous: the captions drive the model: without dropout the weights differ)"
run_ok "$T/u0" "no caption dropout" "${F[@]}" --train.label_dropout=0
different_checkpoints "$(ckpt "$T/u1" 4)" "$(ckpt "$T/u0" 4)" --exact >/dev/null

echo "== text DiT: 1 rank vs 2 ranks in float64"
DIT=(--model.kind=dit --model.patch_size=4 --model.depth=2 --model.width=16 --model.heads=2)
run_ok "$T/d1" "DiT, 1 rank" "${F[@]}" "${DIT[@]}"
run_np2_ok "$T/d2" "DiT, 2 ranks" "${F[@]}" "${DIT[@]}"
same_checkpoints "$(ckpt "$T/d1" 4)" "$(ckpt "$T/d2" 4)" "${TOL[@]}"

echo "== sample with prompts: samples.h5 records them; 2 ranks == 1 rank"
printf 'red disc at the left\n\nblue bar at the top\n' >"$T/prompts.txt"
S=(--sample.checkpoint="$T/u1" --sample.prompt="green square at the right" --sample.prompt_file="$T/prompts.txt"
  --sample.num=7 --sample.steps=2 --sample.batch_size=3 --sample.chunk_size=4 --threads=1)
"$LF_BIN" sample "${S[@]}" --sample.out_dir="$T/s1" >"$T/s1.log" 2>&1 || { tail "$T/s1.log"; fail "sample failed"; }
"${MPIRUN[@]}" "$LF_BIN" sample "${S[@]}" --sample.out_dir="$T/s2" >"$T/s2.log" 2>&1 ||
  { tail "$T/s2.log"; fail "sample on 2 ranks failed"; }
[[ -f "$T/s1/grid.png" ]] || fail "no grid"
"$PY" - "$T/s1/samples.h5" "$T/s2/samples.h5" <<'EOF' || fail "samples.h5 of the prompts is wrong"
import json, sys
import h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
prompts = json.loads(a.attrs["prompts"])
assert prompts == ["green square at the right", "red disc at the left", "blue bar at the top"], prompts
assert list(a["labels"][:]) == [0, 1, 2, 0, 1, 2, 0], list(a["labels"][:])
assert np.array_equal(a["images"][:], b["images"][:]), "2 ranks sampled other images"
assert not np.array_equal(a["images"][0], a["images"][1]), "two prompts gave the same image"
print("  prompts recorded; 2 ranks == 1 rank")
EOF

echo "== eval: the category accuracy of the prompts' samples, beside the classifier's and the baseline"
SHAPES=(--data.source="$T/shapes" --data.test_source="$T/shapes" --data.image_size=16 --data.color=rgb
  --eval.classifier="$T/clf.safetensors" --threads=1)
"$LF_BIN" eval train-classifier "${SHAPES[@]}" --eval.classifier_epochs=8 >"$T/clf.log" 2>&1 ||
  { tail "$T/clf.log"; fail "train-classifier failed"; }
"$LF_BIN" eval "${SHAPES[@]}" --eval.samples="$T/s1/samples.h5" --eval.out="$T/metrics.json" >"$T/eval.log" 2>&1 ||
  { tail "$T/eval.log"; fail "eval failed"; }
"$PY" - "$T/metrics.json" <<'EOF' || fail "eval's prompt metrics are wrong"
import json, sys
m = json.load(open(sys.argv[1]))
assert m["prompts"] == 3 and m["samples_with_a_test_caption"] == 7, m
# 16 images of each of the 3 shapes: the majority class is a third, micro and macro.
assert abs(m["majority_baseline_accuracy"] - 1 / 3) < 1e-12, m
assert abs(m["majority_baseline_macro_accuracy"] - 1 / 3) < 1e-12, m
for k in ["prompt_category_accuracy", "prompt_category_macro_accuracy", "classifier_test_macro_accuracy"]:
    assert 0 <= m[k] <= 1, (k, m[k])
assert "class_accuracy" not in m, "samples of prompts have no class labels"
per = m["prompt_category_per_class"]
assert set(per) == {"square", "disc", "bar"} and sum(v[0] for v in per.values()) == 7, per
assert abs(sum(v[1] for v in per.values()) / 3 - m["prompt_category_macro_accuracy"]) < 1e-12, per
print(f"  prompt category accuracy {m['prompt_category_macro_accuracy']:.2f} (macro), "
      f"classifier {m['classifier_test_macro_accuracy']:.2f}")
EOF

echo "== prompts for a model without text, and no prompt for a text model, are usage errors"
rc=0
"$LF_BIN" sample --sample.checkpoint="$T/u1" --sample.out_dir="$T/s3" --threads=1 >"$T/s3.log" 2>&1 || rc=$?
[[ $rc == 2 ]] && grep -q "give sample.prompt or sample.prompt_file" "$T/s3.log" ||
  fail "sampling a text model without prompts: exit $rc, $(tail -1 "$T/s3.log")"
make_cache --data.limit=16
run_ok "$T/c1" "a class model" --train.steps=1
rc=0
"$LF_BIN" sample --sample.checkpoint="$T/c1" --sample.prompt=hello --sample.out_dir="$T/s4" --threads=1 \
  >"$T/s4.log" 2>&1 || rc=$?
[[ $rc == 2 ]] && grep -q "sample.prompt / sample.prompt_file / sample.prompt_embeddings are for text models" "$T/s4.log" ||
  fail "prompts for a class model: exit $rc, $(tail -1 "$T/s4.log")"
echo "== external caption embeddings: an HDF5 of N x L x D + mask, matched by file name, cached as f16"
# A stand-in for a frozen encoder's output: one fixed random vector per word (and position), the
# mask covering the words; written with the h5py lines docs/cache.md gives. Rows are in reverse
# order and with "./" prefixes, so only the file names can match them.
"$PY" - "$T/shapes/metadata.jsonl" "$T" <<'EOF' || fail "could not write the embedding files"
import json, sys
import h5py, numpy as np
meta, out = sys.argv[1], sys.argv[2]
L, D = 6, 8
rng = np.random.default_rng(0)
table, pos = {}, rng.standard_normal((L, D)).astype(np.float32)
def embed(text):
    words = text.split()[:L]
    e = np.zeros((L, D), np.float32)
    for i, w in enumerate(words):
        if w not in table:
            table[w] = rng.standard_normal(D).astype(np.float32)
        e[i] = table[w] + pos[i]
    m = np.zeros(L, np.uint8)
    m[:len(words)] = 1
    return e, m
rows = [json.loads(l) for l in open(meta, encoding="utf-8")][::-1]
emb, mask = zip(*(embed(r["text"]) for r in rows))
with h5py.File(f"{out}/emb.h5", "w") as f:
    f["embedding"] = np.stack(emb).astype(np.float16)
    f["mask"] = np.stack(mask)
    f.create_dataset("file_name", data=["./" + r["file_name"] for r in rows], dtype=h5py.string_dtype())
prompts = ["red disc at the left", "blue bar at the top"]
pe, pm = zip(*(embed(p) for p in prompts))
with h5py.File(f"{out}/prompt-emb.h5", "w") as f:
    f["embedding"] = np.stack(pe)
    f["mask"] = np.stack(pm)
    f.create_dataset("text", data=prompts, dtype=h5py.string_dtype())
# Broken files: a missing image, a bool mask, a name twice.
with h5py.File(f"{out}/emb-missing.h5", "w") as f:
    f["embedding"], f["mask"] = np.stack(emb)[1:], np.stack(mask)[1:]
    f.create_dataset("file_name", data=[r["file_name"] for r in rows[1:]], dtype=h5py.string_dtype())
with h5py.File(f"{out}/emb-dup.h5", "w") as f:  # one image twice, spelled two ways
    f["embedding"], f["mask"] = np.stack(emb), np.stack(mask)
    names = [r["file_name"] for r in rows]
    names[1] = "./" + names[0]
    f.create_dataset("file_name", data=names, dtype=h5py.string_dtype())
with h5py.File(f"{out}/emb-bool.h5", "w") as f:
    f["embedding"], f["mask"] = np.stack(emb), np.stack(mask).astype(bool)
    f.create_dataset("file_name", data=[r["file_name"] for r in rows], dtype=h5py.string_dtype())
EOF
ECACHE="$T/embcache"
"$LF_BIN" encode --vae.kind=identity --data.source="$T/shapes" --data.image_size=16 --cache.dir="$ECACHE" \
  --cache.shard_size=16 --cache.dtype=f32 --model.context_length=$CTX --data.text_embeddings="$T/emb.h5" --threads=1 \
  >"$T/eencode.log" 2>&1 || { cat "$T/eencode.log"; fail "encode with embeddings failed"; }
"$PY" - "$ECACHE" "$T/emb.h5" "$T/shapes/metadata.jsonl" <<'EOF' || fail "the cached embeddings do not match the file"
import glob, hashlib, json, sys
import h5py, numpy as np
cache, emb, meta = sys.argv[1:]
m = json.load(open(f"{cache}/manifest.json"))
e = m["text"]["embedding"]
assert e == {"length": 6, "dim": 8, "sha256": hashlib.sha256(open(emb, "rb").read()).hexdigest()}, e
src = h5py.File(emb, "r")
row_of = {n.decode()[2:]: i for i, n in enumerate(src["file_name"][:])}
names = [json.loads(l)["file_name"] for l in open(meta, encoding="utf-8")]
seen = 0
for path in sorted(glob.glob(f"{cache}/shard-*.h5")):
    f = h5py.File(path, "r")
    assert f["text_embedding"].dtype == np.float16 and f["text_mask"].dtype == np.uint8
    for row, index in enumerate(f["index"][:]):
        r = row_of[names[index]]
        assert np.array_equal(f["text_embedding"][row], src["embedding"][r]), (path, row)
        assert np.array_equal(f["text_mask"][row], src["mask"][r]), (path, row)
        seen += 1
assert seen == len(names)
print(f"  {seen} embeddings matched by file name")
EOF
"$LF_BIN" inspect "$ECACHE" >"$T/einspect.log" 2>&1 || { cat "$T/einspect.log"; fail "inspect failed"; }
grep -q "embeddings:   6 x 8 per caption (f16, external" "$T/einspect.log" ||
  fail "inspect does not describe the embeddings: $(grep -A1 captions "$T/einspect.log")"
for bad in missing bool dup; do
  rc=0
  "$LF_BIN" encode --vae.kind=identity --data.source="$T/shapes" --data.image_size=16 --cache.dir="$T/bad-$bad" \
    --model.context_length=$CTX --data.text_embeddings="$T/emb-$bad.h5" --threads=1 >"$T/bad-$bad.log" 2>&1 || rc=$?
  [[ $rc == 2 ]] || fail "encode with emb-$bad.h5 exited with $rc, expected 2: $(tail -1 "$T/bad-$bad.log")"
done
grep -q "emb-missing.h5: no embedding for 1 of the 48 images .* e.g. 'img047.png'" "$T/bad-missing.log" ||
  fail "no missing-image message: $(tail -1 "$T/bad-missing.log")"
grep -q "emb-dup.h5: dataset 'file_name' names 'img047.png' twice (rows 0 and 1)" "$T/bad-dup.log" ||
  fail "no repeated-name message: $(tail -1 "$T/bad-dup.log")"
grep -q "emb-bool.h5: dataset 'mask' holds an enum (h5py's bool), expected integers .*mask.astype" "$T/bad-bool.log" ||
  fail "no bool-mask message: $(tail -1 "$T/bad-bool.log")"
# The test split reads its own folder's file (data.test_text_embeddings), not the training one's
# (here one that lacks an image, so using it would fail), and names that key when it is absent.
"$LF_BIN" encode --vae.kind=identity --data.source="$T/shapes" --data.test_source="$T/shapes" --data.split=test \
  --data.image_size=16 --cache.dir="$T/etest" --cache.dtype=f32 --model.context_length=$CTX \
  --data.text_embeddings="$T/emb-missing.h5" --data.test_text_embeddings="$T/emb.h5" --threads=1 >"$T/etest.log" 2>&1 ||
  { tail -3 "$T/etest.log"; fail "encode of the test split with data.test_text_embeddings failed"; }
"$PY" -c 'import json, sys; a, b = (json.load(open(p + "/manifest.json"))["text"]["embedding"] for p in sys.argv[1:]); assert a == b, (a, b)' \
  "$T/etest" "$ECACHE" || fail "the test split's cache does not hold data.test_text_embeddings' file"
rc=0
"$LF_BIN" encode --vae.kind=identity --data.source="$T/shapes" --data.test_source="$T/shapes" --data.split=test \
  --data.image_size=16 --cache.dir="$T/etest2" --model.context_length=$CTX --data.text_embeddings="$T/emb.h5" \
  --data.test_text_embeddings="$T/absent.h5" --threads=1 >"$T/etest2.log" 2>&1 || rc=$?
[[ $rc == 2 ]] && grep -q "data.test_text_embeddings = .*absent.h5: no such file" "$T/etest2.log" ||
  fail "a missing data.test_text_embeddings: exit $rc, $(tail -1 "$T/etest2.log")"

echo "== a text UNet on the cached embeddings: 1 rank vs 2 ranks in float64, resume bitwise; no joint encoder"
CACHE="$ECACHE"
run_ok "$T/e1" "1 rank" "${F[@]}"
run_np2_ok "$T/e2" "2 ranks" "${F[@]}"
same_checkpoints "$(ckpt "$T/e1" 4)" "$(ckpt "$T/e2" 4)" "${TOL[@]}"
run_ok "$T/er" "first 2 steps" "${F[@]}" --train.steps=2
run_ok "$T/er" "resume to 4" "${F[@]}" --resume auto
same_checkpoints "$(ckpt "$T/e1" 4)" "$(ckpt "$T/er" 4)" --exact
"$PY" - "$(ckpt "$T/e1" 4)/model.safetensors" <<'EOF' || fail "the model is not the projection of the embeddings"
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
names = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
assert names["text_encoder.caption_projection.linear_1.weight"]["shape"] == [16, 8], names
assert not any("token_embedding" in n for n in names), "a joint encoder was built"
EOF
echo "== sample from the prompts' embeddings; text prompts are refused for this model"
"$LF_BIN" sample --sample.checkpoint="$T/e1" --sample.prompt_embeddings="$T/prompt-emb.h5" --sample.num=4 \
  --sample.steps=2 --sample.out_dir="$T/es" --threads=1 >"$T/es.log" 2>&1 || { tail "$T/es.log"; fail "sample failed"; }
"$PY" - "$T/es/samples.h5" <<'EOF' || fail "samples.h5 of the prompt embeddings is wrong"
import json, sys
import h5py
a = h5py.File(sys.argv[1], "r")
assert json.loads(a.attrs["prompts"]) == ["red disc at the left", "blue bar at the top"]
assert list(a["labels"][:]) == [0, 1, 0, 1]
EOF
rc=0
"$LF_BIN" sample --sample.checkpoint="$T/e1" --sample.prompt=hello --sample.out_dir="$T/es2" --threads=1 \
  >"$T/es2.log" 2>&1 || rc=$?
[[ $rc == 2 ]] && grep -q "give the prompts' embeddings in sample.prompt_embeddings" "$T/es2.log" ||
  fail "a text prompt for an embeddings model: exit $rc, $(tail -1 "$T/es2.log")"
echo "PASS"
