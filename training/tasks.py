"""The task table: every task the multitask model trains, defined once.

  task   data (data/datasets.py)   encoding                   head output   loss       metric
  sst    ids-sst-*, 5 classes      one sentence               logits (B, 5)  CE         accuracy
  quora  quora-*, paraphrase 0/1   pair: --pair-mode cross|bi  logit (B,)     BCE        accuracy
  sts    sts-*, score in [0, 5]    pair: --sts-mode cross|...  score (B,)     MSE        Pearson

Everything else (loading, encoding, training, evaluation, the prediction files, distillation)
iterates over TASKS. Adding a task means one entry here and, if MultitaskBert does not build its
head, a `head` factory (tests/test_task_table.py adds one that way).

The course's overall score averages the three, mapping Pearson from [-1, 1] to [0, 1]:
    overall = (sst_acc + quora_acc + (sts_pearson + 1) / 2) / 3
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from tqdm import tqdm

from data.batching import BucketBatchSampler, collate, example_lengths, to_device
from training.checkpointing import atomic_write


@dataclass(frozen=True)
class Task:
    data: str  # the data set in data.datasets.TASKS: its files and columns
    pair: bool  # sentence pairs (quora, sts) or single sentences
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (head output, labels) -> scalar
    predict: Callable[[torch.Tensor], torch.Tensor]  # head output -> the prediction written to the file
    metric: Callable[[np.ndarray, np.ndarray], float]  # (predictions, labels) -> dev score
    teacher: Callable[[torch.Tensor], torch.Tensor]  # head output -> distillation target (training/distill.py)
    output: tuple[str, str, str]  # course prediction file prefix, its column header, value format
    cross_option: str | None = None  # the option whose value "cross" makes pairs one [CLS] a [SEP] b [SEP]
    head: Callable[[int, object], nn.Module] | None = None  # (hidden size, options) -> head, if MultitaskBert lacks it
    describe: Callable[[torch.Tensor], str] = lambda out: f"{out.item():.3f}"  # one output row, for people
    metric_name: str = "accuracy"
    # An ensemble's prediction from the members' mean teacher output (training/run_ensemble.py):
    # decide(teacher(out)) == predict(out) for one member, so a one-member ensemble is the member.
    decide: Callable[[torch.Tensor], torch.Tensor] | None = None


def loss_from_output(task: str, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # BEGIN SOLUTION
    if task == "sst":
        return F.cross_entropy(out.float(), labels)
    if task == "quora":
        return F.binary_cross_entropy_with_logits(out.float(), labels.float())
    return F.mse_loss(out.float(), labels.float())
    # END SOLUTION


def accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    return float((preds == labels).mean())


def pearson(preds: np.ndarray, labels: np.ndarray) -> float:
    if len(preds) < 2 or np.std(preds) == 0 or np.std(labels) == 0:
        return 0.0  # Pearson is undefined for a constant prediction; count it as no correlation
    return float(np.corrcoef(preds, labels)[0, 1])


SST_LABELS = ("negative", "somewhat negative", "neutral", "somewhat positive", "positive")  # SST-5 classes 0..4


def describe_sst(out: torch.Tensor) -> str:
    probs = ", ".join(f"{n} {p:.3f}" for n, p in zip(SST_LABELS, out.softmax(-1).tolist()))
    return f"{SST_LABELS[int(out.argmax())]}\t{probs}"


def describe_quora(out: torch.Tensor) -> str:
    p = torch.sigmoid(out).item()
    return f"{'paraphrase' if p > 0.5 else 'not a paraphrase'}\t{p:.3f}"


# Column headers as in the course (Similiary sic).
TASKS: dict[str, Task] = {
    "sst": Task("sst", False, lambda out, y: loss_from_output("sst", out, y), lambda out: out.argmax(dim=-1),
                accuracy, lambda out: out.softmax(-1), ("sst", "Predicted_Sentiment", "{:d}"), describe=describe_sst,
                decide=lambda probs: probs.argmax(dim=-1)),
    "quora": Task("quora", True, lambda out, y: loss_from_output("quora", out, y),
                  lambda out: (out > 0).long(),  # sigmoid(logit) > 0.5
                  accuracy, torch.sigmoid, ("para", "Predicted_Is_Paraphrase", "{:d}"), "pair_mode",
                  describe=describe_quora, decide=lambda p: (p > 0.5).long()),
    "sts": Task("sts", True, lambda out, y: loss_from_output("sts", out, y), lambda out: out.clamp(0.0, 5.0),
                pearson, lambda out: out, ("sts", "Predicted_Similiary", "{:.4f}"), "sts_mode",
                metric_name="Pearson r", decide=lambda score: score.clamp(0.0, 5.0)),
}
COURSE_TASKS = ("sst", "quora", "sts")


def overall(scores: dict[str, float]) -> float | None:
    """The course's overall score; None unless all three course tasks were evaluated."""
    if not all(t in scores for t in COURSE_TASKS):
        return None
    return (scores["sst"] + scores["quora"] + (scores["sts"] + 1) / 2) / 3


def is_cross(task: str, options) -> bool:
    option = TASKS[task].cross_option
    return option is not None and getattr(options, option) == "cross"


def inputs(batch: dict) -> list[dict]:
    """The model inputs of a collated batch: one (single sentence, cross-encoder pair) or two (bi-encoder)."""
    return [batch["inputs"]] if "inputs" in batch else [batch["inputs1"], batch["inputs2"]]


@torch.no_grad()
def outputs(model: nn.Module, encoded: list[dict], pad_id: int, device, task: str | None = None,
            autocast=contextlib.nullcontext, progress: str | None = None) -> tuple[list, np.ndarray, np.ndarray | None]:
    """Run the model over encoded examples in eval mode, in length buckets (little padding), then back
    to its mode: (ids in bucket order, float32 outputs, labels or None). task: model(task, *inputs), else
    model(*inputs). progress: a progress bar with this label (None: no bar, as during training)."""
    was_training = model.training
    model.eval()
    ids, outs, labels = [], [], []
    sampler = BucketBatchSampler(example_lengths(encoded), 128, shuffle=False, seed=0)
    for idx in tqdm(sampler, desc=progress, disable=progress is None, leave=False):
        batch = collate([encoded[i] for i in idx], pad_id)  # padded lazily, batch by batch
        with autocast():
            x = inputs(to_device(batch, device))
            out = model(*x) if task is None else model(task, *x)
        outs.append(out.float().cpu().numpy())
        ids += batch["ids"]
        if batch["labels"] is not None:
            labels.append(batch["labels"].numpy())
    model.train(was_training)
    return ids, np.concatenate(outs) if outs else np.zeros(0), np.concatenate(labels) if labels else None


def predictions(task: str, out: np.ndarray) -> np.ndarray:
    return TASKS[task].predict(torch.from_numpy(out)).numpy()


def write_predictions(path: str | os.PathLike, task: str, ids: list, preds: np.ndarray) -> None:
    """The course's format: a header `id \\t Predicted_X`, then `id , prediction` per line."""
    prefix, header, fmt = TASKS[task].output
    cast = int if fmt == "{:d}" else float
    atomic_write(path, f"id \t {header} \n" + "".join(f"{i} , {fmt.format(cast(p))} \n" for i, p in zip(ids, preds)))


def prediction_file(out_dir: str | os.PathLike, task: str, split: str) -> Path:
    return Path(out_dir) / f"{TASKS[task].output[0]}-{split}-output.csv"
