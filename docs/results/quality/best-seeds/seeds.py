"""Mean and sample sd over seeds of the kept epoch's dev scores (the epoch with the best overall of the
weights the loop scores: the EMA's under --preset best). Usage: python seeds.py NAME=LOG ..."""
import json
import statistics
import sys

kept = {}
print("| run | kept epoch | SST | Quora | STS | overall | raw weights' overall, same epoch | minutes to that epoch |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for arg in sys.argv[1:]:
    name, path = arg.split("=", 1)
    evals = [r for r in map(json.loads, open(path)) if r.get("eval") == "dev"]
    best = max(evals, key=lambda r: r["overall"])  # max() keeps the first of equals, as the loop does
    kept[name] = best
    print(f"| {name} | {best['epoch']} | {best['sst']:.4f} | {best['quora']:.4f} | {best['sts']:.4f} | "
          f"{best['overall']:.4f} | {best.get('raw_overall', float('nan')):.4f} | {best['minutes']} |")
for k in ("sst", "quora", "sts", "overall", "raw_overall"):
    v = [r[k] for r in kept.values() if k in r]
    if len(v) > 1:
        print(f"{k}: mean {statistics.mean(v):.4f} sd {statistics.stdev(v):.4f} (n={len(v)}, min {min(v):.4f}, max {max(v):.4f})")
