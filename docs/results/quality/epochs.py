"""Print each epoch's dev scores of run logs (log.jsonl) as Markdown rows; with --ema runs the raw
weights' scores (raw_*) and the EMA weights' scores both. Usage: python epochs.py NAME=LOG ..."""
import json
import sys

print("| run | epoch | weights | SST | Quora | STS | overall | minutes |")
print("|---|---:|---|---:|---:|---:|---:|---:|")
for arg in sys.argv[1:]:
    name, path = arg.split("=", 1)
    for line in open(path):
        row = json.loads(line)
        if row.get("eval") != "dev":
            continue
        kinds = [("raw", "raw_"), ("EMA", "")] if "raw_overall" in row else [("raw", "")]
        for kind, p in kinds:
            print(f"| {name} | {row['epoch']} | {kind} | {row[p + 'sst']:.4f} | {row[p + 'quora']:.4f} | "
                  f"{row[p + 'sts']:.4f} | {row[p + 'overall']:.4f} | {row['minutes']} |")
