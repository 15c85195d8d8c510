#!/usr/bin/python3
"""FD against wall-clock for the latent and the pixel model (bench/latent_vs_pixel.sh):
tools/plot_latent_vs_pixel.py results.jsonl out.png [LABEL=other/results.jsonl ...]. The latent
model's clock includes its VAE training and encode. Prints a table and the first time the latent
model reaches the pixel model's final FD. Each LABEL=FILE adds the latent arm of another run (e.g.
another VAE recipe, LF_VAE_ARGS) as a line of its own, compared with the first file's pixel arm."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(path):
    rows = {}
    for line in open(path):
        if line.strip():
            r = json.loads(line)
            rows[(r["arm"], r["step"])] = r  # the last evaluation of a checkpoint wins
    return {a: sorted((r for (k, _), r in rows.items() if k == a), key=lambda r: r["wall_s"])
            for a in ("latent", "pixel")}


arms = read(sys.argv[1])
extra = []
for spec in sys.argv[3:]:
    label, sep, path = spec.partition("=")
    if not sep:
        sys.exit(f"plot_latent_vs_pixel.py: expected LABEL=results.jsonl, got '{spec}'")
    extra.append((label, read(path)["latent"]))
fig, ax = plt.subplots(figsize=(7, 4.5))
for arm, color in (("latent", "tab:blue"), ("pixel", "tab:orange")):
    pts = arms[arm]
    if pts:
        ax.plot([p["wall_s"] / 60 for p in pts], [p["fd"] for p in pts], marker="o", color=color,
                label="latent (the config's VAE)" if arm == "latent" else "pixel (f = 1)")
for (label, pts), color in zip(extra, ("tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive") * 9):
    ax.plot([p["wall_s"] / 60 for p in pts], [p["fd"] for p in pts], marker="o", color=color, label=f"latent ({label})")
floor = [r["fd_floor"] for rs in arms.values() for r in rs]
if floor:
    ax.axhline(sum(floor) / len(floor), color="gray", ls="--", label="floor (real images)")
ax.set_xlabel("wall-clock minutes (latent: VAE + encode + training)")
ax.set_ylabel("FD (classifier features)")
ax.set_yscale("log")
ax.grid(alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=100)
# Accuracy: the class accuracy of a class model, the held-out captions' macro category accuracy of
# a text model.
print(f"{'arm':7} {'step':>7} {'wall min':>9} {'FD':>9} {'FD/floor':>9} {'accuracy':>9}")
for arm, pts in list(arms.items()) + extra:
    for p in pts:
        acc = p.get("class_accuracy")
        if acc is None:
            acc = p.get("prompt_macro_accuracy")
        print(f"{arm:7} {p['step']:7d} {p['wall_s'] / 60:9.1f} {p['fd']:9.3f} {p['fd'] / p['fd_floor']:9.1f} "
              f"{(acc or 0) * 100:8.1f}%")
for name, pts in [("latent", arms["latent"])] + [(f"latent ({label})", pts) for label, pts in extra]:
    if not pts or not arms["pixel"]:
        continue
    target = arms["pixel"][-1]["fd"]
    hit = next((p for p in pts if p["fd"] <= target), None)
    pix_min = arms["pixel"][-1]["wall_s"] / 60
    if hit:
        print(f"{name} reaches the pixel model's final FD ({target:.3f} after {pix_min:.0f} min) after "
              f"{hit['wall_s'] / 60:.1f} min = {hit['wall_s'] / 60 / pix_min:.3f} of the pixel model's time")
    else:
        print(f"{name} never reaches the pixel model's final FD ({target:.3f}) within its budget")
print(sys.argv[2])
