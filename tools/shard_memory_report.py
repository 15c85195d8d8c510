#!/usr/bin/python3
"""The report of bench/shard_memory.sh from its logs: tools/shard_memory_report.py DIR ROUNDS.

Memory: from DIR/mem-w{1,2,4}-{unsharded,sharded}.log, the lines rank 0 logs for every rank
("optimizer + EMA state per rank (bytes): ..." and "peak resident memory (RSS) per rank (bytes):
..."), as the largest rank's value and its ratio to W = 1. Time: from DIR/time-{sharded,unsharded}-R
/metrics.jsonl is not kept, so from the logs' "step N/M" lines: rank 0's glog timestamps, the gaps
between consecutive steps after the first two, median over all rounds."""
import re
import statistics
import sys
from datetime import datetime

w, rounds = sys.argv[1], int(sys.argv[2])
TS = re.compile(r"^[IWE](\d{4}) (\d\d:\d\d:\d\d\.\d+)")


def per_rank(path, what):
    for line in open(path):
        if what + " per rank (bytes): " in line:
            return [int(x) for x in line.split("(bytes): ")[1].split("(")[0].split()]
    raise SystemExit(f"{path}: no '{what}' line")


def mb(b):
    return f"{b / 2**20:,.0f} MB"


print("| W | optimizer + EMA state per rank | of W = 1 | goal 1/W + 5% | peak RSS per rank (max) | vs unsharded |")
print("| --- | --- | --- | --- | --- | --- |")
base = per_rank(f"{w}/mem-w1-unsharded.log", "optimizer + EMA state")[0]
for n in (1, 2, 4):
    unsharded_rss = max(per_rank(f"{w}/mem-w{n}-unsharded.log", "peak resident memory (RSS)"))
    for mode in (("unsharded",) if n == 1 else ("unsharded", "sharded")):
        log = f"{w}/mem-w{n}-{mode}.log"
        state = max(per_rank(log, "optimizer + EMA state"))
        rss = per_rank(log, "peak resident memory (RSS)")
        goal = base * (1 / n + 0.05)
        verdict = "-" if mode == "unsharded" else f"{'met' if state <= goal else 'MISSED'} ({mb(goal)})"
        print(f"| {n} {mode} | {mb(state)} | {state / base:.3f} | {verdict}"
              f" | {mb(max(rss))} (ranks: {', '.join(mb(r) for r in rss)}) |"
              f" {mb(max(rss) - unsharded_rss) if mode == 'sharded' else '-'} |")


def step_times(path):
    stamps = []
    for line in open(path):
        m = TS.match(line)
        s = re.search(r"\] step (\d+)/\d+ \|", line)
        if m and s:
            stamps.append(datetime.strptime(m.group(1) + " " + m.group(2), "%m%d %H:%M:%S.%f").timestamp())
    return [b - a for a, b in zip(stamps[2:], stamps[3:])]


times = {}
for mode in ("unsharded", "sharded"):
    times[mode] = [t for r in range(1, rounds + 1) for t in step_times(f"{w}/time-{mode}-{r}.log")]
u, s = statistics.median(times["unsharded"]), statistics.median(times["sharded"])
print(f"\nstep time on 2 ranks (median of {len(times['unsharded'])} / {len(times['sharded'])} steps over {rounds} "
      f"interleaved rounds): unsharded {u * 1000:.0f} ms, sharded {s * 1000:.0f} ms, ratio {s / u:.3f} "
      f"({'within' if abs(s / u - 1) <= 0.05 else 'OUTSIDE'} 5%)")
