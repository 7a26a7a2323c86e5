"""Resident memory of the encoded data of a default multitask run (issue 15, memory goal).

Loads the checkpoint and tokenizer as training/multitask.build does, then every split of sst, quora
and sts through training.multitask.splits.load_split with the default options, reading the process's resident
set size (/proc/self/statm) and its peak (VmHWM in /proc/self/status) before and after. Linux only.

    PYTHONPATH=. MINBERT_DATA_DIR=/work/shared/data python docs/results/perf/data_memory.py
"""
import gc
import os
import sys

from training.multitask import recipe, options
from training.multitask.splits import load_split

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def peak_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


args = options.parse_args(["--device", "cpu", *sys.argv[1:]])
tok, encoder = recipe.load_checkpoint(args)
gc.collect()
before = rss_mb()
print(f"tasks {','.join(args.tasks)}, max_length {args.max_length}, pair_mode {args.pair_mode}, "
      f"sts_mode {args.sts_mode}")
print(f"RSS after loading the checkpoint: {before:.1f} MB (peak so far {peak_mb():.1f} MB)")
data, tokens, examples = {}, 0, 0
for t in args.tasks:
    for s in ("train", "dev", "test"):
        data[t, s] = enc = load_split(args, tok, t, s)
        examples += len(enc)
        tokens += sum(len(v) for e in enc for k, v in e.items() if k.startswith("input_ids"))
        print(f"  {t}-{s}: {len(enc)} examples, RSS {rss_mb():.1f} MB")
gc.collect()
after = rss_mb()
print(f"RSS after loading and encoding every split: {after:.1f} MB (peak {peak_mb():.1f} MB)")
print(f"the encoded data adds {after - before:.1f} MB resident: {examples} examples, {tokens} tokens, "
      f"{(after - before) * 2**20 / examples:.0f} bytes per example")
