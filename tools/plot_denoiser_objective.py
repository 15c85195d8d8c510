#!/usr/bin/python3
"""FD and class accuracy against training time for the denoiser x objective arms
(bench/denoiser_objective.sh): tools/plot_denoiser_objective.py results.jsonl out.png.
Prints a table per arm (parameters, throughput, step, minutes, FD, FD / floor, accuracy) and
each arm's best FD."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ORDER = ("unet-eps", "unet-flow", "dit-eps", "dit-flow")
STYLE = {"unet-eps": ("tab:blue", "-"), "unet-flow": ("tab:blue", "--"),
         "dit-eps": ("tab:orange", "-"), "dit-flow": ("tab:orange", "--")}

rows = {}
for line in open(sys.argv[1]):
    if line.strip():
        r = json.loads(line)
        rows[(r["arm"], r["step"])] = r  # the last evaluation of a checkpoint wins
arms = {}
for (arm, _), r in rows.items():
    arms.setdefault(arm, []).append(r)
for pts in arms.values():
    pts.sort(key=lambda r: r["step"])
names = [a for a in ORDER if a in arms] + sorted(a for a in arms if a not in ORDER)

fig, (ax_fd, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
for arm in names:
    pts = arms[arm]
    color, ls = STYLE.get(arm, (None, "-"))
    label = f"{arm} ({pts[-1]['params'] / 1e6:.1f}M, {pts[-1]['samples_per_s'] or 0:.0f} img/s)"
    minutes = [p["train_s"] / 60 for p in pts]
    ax_fd.plot(minutes, [p["fd"] for p in pts], marker="o", color=color, ls=ls, label=label)
    ax_acc.plot(minutes, [100 * (p["class_accuracy"] or 0) for p in pts], marker="o", color=color, ls=ls, label=label)
floors = [r["fd_floor"] for r in rows.values()]
if floors:
    ax_fd.axhline(sum(floors) / len(floors), color="gray", ls=":", label="floor (real images)")
ax_fd.set_yscale("log")
ax_fd.set_ylabel("FD (classifier features, N = 1,000)")
ax_acc.set_ylabel("class accuracy of the samples (%)")
for ax in (ax_fd, ax_acc):
    ax.set_xlabel("training minutes (one core)")
    ax.grid(alpha=0.3)
ax_fd.legend(fontsize=8)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=100)

print(f"{'arm':10} {'params':>8} {'img/s':>6} {'step':>6} {'min':>6} {'FD':>8} {'FD/floor':>9} {'acc':>7}")
for arm in names:
    for p in arms[arm]:
        print(f"{arm:10} {p['params'] / 1e6:7.2f}M {p['samples_per_s'] or 0:6.1f} {p['step']:6d} "
              f"{p['train_s'] / 60:6.1f} {p['fd']:8.3f} {p['fd'] / p['fd_floor']:9.2f} {100 * (p['class_accuracy'] or 0):6.1f}%")
for arm in names:
    best = min(arms[arm], key=lambda p: p["fd"])
    print(f"best {arm}: FD {best['fd']:.3f} at step {best['step']} ({best['train_s'] / 60:.1f} min), "
          f"accuracy {100 * (best['class_accuracy'] or 0):.1f}%")
print(sys.argv[2])
