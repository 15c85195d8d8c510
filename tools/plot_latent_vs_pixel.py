#!/usr/bin/python3
"""FD against wall-clock for the latent and the pixel model (bench/latent_vs_pixel.sh):
tools/plot_latent_vs_pixel.py results.jsonl out.png. The latent model's clock includes its VAE
training and encode. Prints a table and the first time the latent model reaches the pixel
model's final FD."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

rows = {}
for line in open(sys.argv[1]):
    if line.strip():
        r = json.loads(line)
        rows[(r["arm"], r["step"])] = r  # the last evaluation of a checkpoint wins
arms = {a: sorted((r for (k, _), r in rows.items() if k == a), key=lambda r: r["wall_s"]) for a in ("latent", "pixel")}
fig, ax = plt.subplots(figsize=(7, 4.5))
for arm, color in (("latent", "tab:blue"), ("pixel", "tab:orange")):
    pts = arms[arm]
    if pts:
        ax.plot([p["wall_s"] / 60 for p in pts], [p["fd"] for p in pts], marker="o", color=color,
                label="latent (the config's VAE)" if arm == "latent" else "pixel (f = 1)")
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
for arm, pts in arms.items():
    for p in pts:
        acc = p.get("class_accuracy")
        if acc is None:
            acc = p.get("prompt_macro_accuracy")
        print(f"{arm:7} {p['step']:7d} {p['wall_s'] / 60:9.1f} {p['fd']:9.3f} {p['fd'] / p['fd_floor']:9.1f} "
              f"{(acc or 0) * 100:8.1f}%")
if arms["latent"] and arms["pixel"]:
    target = arms["pixel"][-1]["fd"]
    hit = next((p for p in arms["latent"] if p["fd"] <= target), None)
    pix_min = arms["pixel"][-1]["wall_s"] / 60
    if hit:
        print(f"latent reaches the pixel model's final FD ({target:.3f} after {pix_min:.0f} min) after "
              f"{hit['wall_s'] / 60:.1f} min = {hit['wall_s'] / 60 / pix_min:.2f} of the pixel model's time")
    else:
        print(f"latent never reaches the pixel model's final FD ({target:.3f}) within its budget")
print(sys.argv[2])
