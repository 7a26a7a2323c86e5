"""Which examples a run trains and evaluates on: limits, fractions, labelled subsets; and encoding.

Every subset is a seeded random one kept in file order: the files are sorted (SST by label), so
their first N rows would be skewed.
"""
from __future__ import annotations

import math

import numpy as np

from data.batching import encode_examples
from data.datasets import load_task
from training.multitask import tasks

NUM_CLASSES = {"sst": 5, "cfimdb": 2}  # the single-sentence classification data sets (run_classifier, run_gan)


def sample(examples: list, limit: int | None) -> list:
    """At most `limit` examples, a fixed random sample kept in file order (the same for every --seed)."""
    if not limit or limit >= len(examples):
        return list(examples)
    keep = np.random.default_rng(0).permutation(len(examples))[:limit]
    return [examples[i] for i in sorted(keep)]


def labelled_subset(n: int, fraction: float, seed: int) -> list[int]:
    """Sorted indices of a seeded random fraction (at least one example) of n training examples.
    Nested across fractions: one permutation per seed, of which the first ceil(fraction * n) are kept."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    order = np.random.default_rng([seed, 424242]).permutation(n)  # own stream: independent of model init
    return sorted(order[:max(1, math.ceil(fraction * n))].tolist())


def load_examples(args, data: str, split: str, fraction: float = 1.0) -> list[dict]:
    """One split of a data set, bad rows skipped if --skip-bad-rows, limited by --limit-train /
    --limit-eval (and a training fraction)."""
    examples, skipped = load_task(data, split, args.data_dir, skip_bad=args.skip_bad_rows)
    if skipped:
        print(f"  {data}-{split}: skipped {skipped} bad rows")
    limit = args.limit_train if split == "train" else args.limit_eval
    if fraction < 1.0:
        limit = min(limit or len(examples), max(1, round(len(examples) * fraction)))
    return sample(examples, limit)


def load_split(args, tok, task: str, split: str) -> list[dict]:
    """One split of a task of the table, limited and encoded as the multitask options say."""
    examples = load_examples(args, tasks.TASKS[task].data, split, args.train_fraction if split == "train" else 1.0)
    if split == "train" and args.augment_symmetric and tasks.TASKS[task].pair:
        examples = examples + [dict(e, sentence1=e["sentence2"], sentence2=e["sentence1"]) for e in examples]
    # A second loss on each sentence's own vector (--quora-mnrl) needs the sentences encoded on their
    # own too; only training computes it.
    return encode_examples(tok, examples, tasks.TASKS[task].data, max_length=args.max_length,
                           cross_encoder=tasks.is_cross(task, args),
                           sentences=split == "train" and tasks.aux_weight(task, args) > 0)


def load_sentences(args, tok) -> dict[str, list[dict]]:
    """Train, dev and test of the single-sentence data set --task (run_classifier, run_gan), encoded."""
    return {s: encode_examples(tok, load_examples(args, args.task, s), args.task, args.max_length)
            for s in ("train", "dev", "test")}
