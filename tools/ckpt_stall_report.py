#!/usr/bin/python3
"""The report of bench/ckpt_stall.sh from its logs: tools/ckpt_stall_report.py DIR ROUNDS [MODES].
Reads DIR/MODE-R.log (rank 0's glog lines) for MODES (default sync,async; sharded too when the
bench ran on several ranks) and prints the median time training was blocked per checkpoint in
each mode (the async mode's last, synchronous save left out), the background write time, and the
median step time while a background write is in flight against the other steps."""
import re, statistics, sys
from datetime import datetime
w, rounds = sys.argv[1], int(sys.argv[2])
modes = sys.argv[3].split(",") if len(sys.argv) > 3 else ["sync", "async"]
TS = re.compile(r"^[IWE](\d{4}) (\d\d:\d\d:\d\d\.\d+)")
def t(line):
    m = TS.match(line)
    return datetime.strptime(m.group(1) + " " + m.group(2), "%m%d %H:%M:%S.%f").timestamp() if m else None
res = {}
for mode in modes:
    blocked, during, clean, write_ms, bytes_ = [], [], [], [], []
    for r in range(1, rounds + 1):
        steps, saves, commits = [], [], []
        for line in open(f"{w}/{mode}-{r}.log"):
            ts = t(line)
            if ts is None:
                continue
            if m := re.search(r"\] step (\d+)/\d+ \|", line):
                steps.append((int(m.group(1)), ts))
            elif m := re.search(r"checkpoint of step (\d+): training blocked for (\d+) ms", line):
                saves.append((int(m.group(1)), ts))
                # the last step's save is synchronous in both modes: not a background one's stall
                if mode != "async" or "written synchronously" not in line:
                    blocked.append(int(m.group(2)))
            elif m := re.search(r"written and verified in (\d+) ms \(in the background\)", line):
                commits.append(ts); write_ms.append(int(m.group(1)))
        save_steps = {s for s, _ in saves}
        windows = list(zip([ts for _, ts in saves], commits))  # background writes in flight
        for (s0, t0), (s1, t1) in zip(steps, steps[1:]):
            if s0 in save_steps or s1 - 1 != s0 or s0 < 3:  # steps holding a save (and warm-up) left out
                continue
            busy = any(a < t1 <= b + 1e-3 for a, b in windows)
            (during if busy else clean).append(t1 - t0)
    res[mode] = dict(blocked=statistics.median(blocked), n=len(blocked),
                     during=statistics.median(during) if during else None, clean=statistics.median(clean),
                     write=statistics.median(write_ms) if write_ms else None, n_during=len(during))
s, a = res["sync"], res["async"]
print(f"sync:  blocked per checkpoint {s['blocked']:.0f} ms (median of {s['n']}); step {s['clean'] * 1000:.0f} ms")
if "sharded" in res:
    h = res["sharded"]
    print(f"sharded: blocked per checkpoint {h['blocked']:.0f} ms (median of {h['n']}) = "
          f"{h['blocked'] / s['blocked']:.3f} of sync; step {h['clean'] * 1000:.0f} ms")
print(f"async: blocked per checkpoint {a['blocked']:.0f} ms (median of {a['n']}) = {a['blocked'] / s['blocked']:.3f} of sync; "
      f"background write {a['write']:.0f} ms")
if a["during"]:
    print(f"async: step while a write is in flight {a['during'] * 1000:.0f} ms ({a['n_during']} steps) vs "
          f"{a['clean'] * 1000:.0f} ms otherwise = {a['during'] / a['clean']:.2f}x")
