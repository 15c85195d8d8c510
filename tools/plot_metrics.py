#!/usr/bin/python3
"""Loss curves of a run as a PNG: tools/plot_metrics.py RUN_DIR/metrics.jsonl [out.png]

Plots every loss-like series found in metrics.jsonl (loss, val_loss, recon, kl, g_loss, d_loss)
against the step, and the throughput (samples/s) on a second axis panel. Uses Debian's
python3-matplotlib (/usr/bin/python3)."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    path = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else path.rsplit("/", 1)[0] + "/loss.png" if "/" in path else "loss.png"
    records = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a torn last line of a killed run
    if not records:
        sys.exit(f"{path}: no records")
    series = ["loss", "val_loss", "recon", "kl", "g_loss", "d_loss", "psnr"]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for name in series:
        pts = [(r["step"], r[name]) for r in records if name in r and r[name] is not None]
        if pts and name != "psnr":
            ax.plot(*zip(*pts), label=name, marker="." if name == "val_loss" else None)
    ax.set_yscale("log")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    rate = [(r["step"], r["samples_per_s"]) for r in records if "samples_per_s" in r]
    if rate:
        ax2.plot(*zip(*rate), color="gray")
    ax2.set_ylabel("samples/s")
    ax2.set_xlabel("step")
    ax2.grid(alpha=0.3)
    fig.suptitle(path)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(out)


if __name__ == "__main__":
    main()
