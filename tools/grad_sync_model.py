#!/usr/bin/python3
"""Gradient sync on paper: bytes and time per training step of data-parallel training for flat
and hierarchical all-reduce, f32 and bf16 on the wire (docs/cluster.md, "Gradient sync across
hosts", where the assumptions are discussed).

The byte counts are those of distributed/bucket_sync.h, which bench/grad_sync.sh measured on
the test cluster (bytes a host sends per step: hierarchical f32 1.00 S, bf16 0.50 S for 2 hosts,
as 2(H-1)/H predicts). With S the f32 gradient bytes, L GPUs per node, N nodes, W = N L:

  flat f32 (NCCL's ring, ranks of a node adjacent): each node link carries 2(W-1)/W S
  flat bf16 (all_to_all reduce-scatter + ring all-gather): L(W-L)/W S/2 + (W-1)/W S/2
  hierarchical f32: 2(L-1)/L S within the node, 2(N-1)/N S over each node link
  hierarchical bf16: the same within the node, (N-1)/N S over each node link

Time = bytes / bandwidth (bandwidth terms only: at 3.4 GB per step the latency terms, about
2(W-1) or 2(N-1) message hops of ~10 us, are below 10 ms). The step is `compute` seconds; with
overlap the sync runs during the last micro-batch's backward (`window` seconds) and only what
exceeds it adds to the step.

  /usr/bin/python3 tools/grad_sync_model.py [--params 860e6] [--link-gbit 200] [--gpus-per-node 8]
      [--nvlink-gbyte 200] [--compute 1.0] [--window 0.33]
"""
import argparse


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", type=float, default=860e6, help="parameters (SD 1.x UNet: 860M)")
    p.add_argument("--link-gbit", type=float, default=200, help="each node's link, Gbit/s per direction")
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--nvlink-gbyte", type=float, default=200, help="per-GPU bandwidth within a node, GB/s")
    p.add_argument("--compute", type=float, default=1.0, help="compute seconds per step (assumed)")
    p.add_argument("--window", type=float, default=0.33, help="backward seconds the sync can overlap")
    p.add_argument("--gpus", default="8,64,512")
    a = p.parse_args()
    S = 4 * a.params
    L = a.gpus_per_node
    link = a.link_gbit * 1e9 / 8
    nv = a.nvlink_gbyte * 1e9
    print(f"{a.params / 1e6:.0f}M parameters: S = {S / 1e9:.2f} GB of f32 gradients; nodes of {L} GPUs, "
          f"{a.link_gbit:.0f} Gbit/s = {link / 1e9:.0f} GB/s per node link, {a.nvlink_gbyte:.0f} GB/s within; "
          f"compute {a.compute:.2f} s per step, overlap window {a.window:.2f} s")
    print("| GPUs | nodes | algorithm | wire | GB over each node link | GB per GPU within the node | sync s "
          "| step s, no overlap | step s, overlap |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for W in (int(g) for g in a.gpus.split(",")):
        N = max(1, W // L)
        Lw = min(L, W)
        for algo in ("flat", "hierarchical"):
            for wire, size in (("f32", S), ("bf16", S / 2)):
                if algo == "flat" and wire == "f32":
                    inter = 2 * (W - 1) / W * S if N > 1 else 0.0
                    intra = 2 * (W - 1) / W * S if N == 1 else 0.0
                elif algo == "flat":
                    inter = (Lw * (W - Lw) / W * size + (W - 1) / W * size) if N > 1 else 0.0
                    intra = 2 * (W - 1) / W * size if N == 1 else 0.0
                else:
                    inter = 2 * (N - 1) / N * size
                    intra = 2 * (Lw - 1) / Lw * S  # full precision within the node
                t = inter / link + intra / nv
                print(f"| {W} | {N} | {algo} | {wire} | {inter / 1e9:.2f} | {intra / 1e9:.2f} | {t:.3f} "
                      f"| {a.compute + t:.2f} | {a.compute + max(0.0, t - a.window):.2f} |")


if __name__ == "__main__":
    main()
