"""The task table: every task the multitask model trains, defined once.

  task   data (data/datasets.py)   encoding                   head output   loss       metric    R-Drop divergence
  sst    ids-sst-*, 5 classes      one sentence               logits (B, 5)  CE         accuracy  symmetric KL, softmaxes
  quora  quora-*, paraphrase 0/1   pair: --pair-mode cross|bi  logit (B,)     BCE        accuracy  symmetric KL, Bernoullis
  sts    sts-*, score in [0, 5]    pair: --sts-mode cross|...  score (B,)     MSE        Pearson   squared difference
                                                                             or CoSENT (--sts-loss)
An option can also add a second loss computed with the model itself from each sentence's own
encoding: quora's multiple-negatives ranking loss (--quora-mnrl WEIGHT; training/multitask/pair_losses.py).

Everything else (loading, encoding, training, evaluation, the prediction files, distillation)
iterates over TASKS. Adding a task means one entry here and, if MultitaskBert does not build its
head, a `head` factory (tests/test_task_table.py adds one that way).

The course's overall score averages the three, mapping Pearson from [-1, 1] to [0, 1]:
    overall = (sst_acc + quora_acc + (sts_pearson + 1) / 2) / 3
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from data.batching import BucketBatchSampler, collate, example_lengths, to_device
from data.datasets import TASK_NAMES
from heads.similarity import MAX_SCORE
from training.engine.checkpointing import atomic_write
from training.multitask.pair_losses import cosent_loss, quora_mnrl


@dataclass(frozen=True)
class Task:
    data: str  # the data set in data.datasets.DATASETS: its files and columns
    pair: bool  # sentence pairs (quora, sts) or single sentences
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (head output, labels) -> scalar
    predict: Callable[[torch.Tensor], torch.Tensor]  # head output -> the prediction written to the file
    metric: Callable[[np.ndarray, np.ndarray], float]  # (predictions, labels) -> dev score
    teacher: Callable[[torch.Tensor], torch.Tensor]  # head output -> distillation target (training/methods/distill.py)
    output: tuple[str, str, str]  # course prediction file prefix, its column header, value format
    cross_option: str | None = None  # the option whose value "cross" makes pairs one [CLS] a [SEP] b [SEP]
    head: Callable[[int, object], nn.Module] | None = None  # (hidden size, options) -> head, if MultitaskBert lacks it
    describe: Callable[[torch.Tensor], str] = lambda out: f"{out.item():.3f}"  # one output row, for people
    metric_name: str = "accuracy"
    loss_option: str | None = None  # the option that picks the training loss from `losses` by name
    losses: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = field(default_factory=dict)
    aux_option: str | None = None  # an option whose non-zero value adds WEIGHT * aux_loss to the loss
    aux_loss: Callable[[nn.Module, dict], torch.Tensor] | None = None  # (model, batch on the device) -> scalar;
    # its batches carry each sentence's own encoding (inputs1, inputs2) beside the model's inputs
    # (output, output) -> scalar >= 0, 0 for equal outputs: how far two dropout masks' outputs of the same
    # batch are apart (--rdrop, R-Drop); None: the task cannot be trained with --rdrop
    divergence: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
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


# R-Drop's divergences (Liang et al. 2021): the symmetric KL 1/2 (KL(P1||P2) + KL(P2||P1)) of the two
# outputs' distributions, batch mean. Its two terms add up to sum_c (p1 - p2)(log p1 - log p2); for a
# Bernoulli that is (p1 - p2)(logit1 - logit2), with no log of a probability near 0 or 1.


def symmetric_kl_softmax(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Class logits (B, C), (B, C) -> the symmetric KL of their softmaxes."""
    log_p, log_q = F.log_softmax(a.float(), -1), F.log_softmax(b.float(), -1)
    return 0.5 * ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(-1).mean()


def symmetric_kl_bernoulli(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Logits (B,), (B,) -> the symmetric KL of the Bernoullis sigmoid(a), sigmoid(b)."""
    a, b = a.float(), b.float()
    return 0.5 * ((torch.sigmoid(a) - torch.sigmoid(b)) * (a - b)).mean()


def squared_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Scores (B,), (B,) -> the mean squared difference (a regression output has no distribution)."""
    return (a.float() - b.float()).square().mean()


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


# The STS losses --sts-loss chooses from. CoSENT ranks scores in [0, 1], the range of the cosine
# its lambda = 20 was chosen for: every head's output / 5 (cosine head: relu(cos), which is cos on
# every pair with cos >= 0, ~99% of STS dev pairs at the start (heads/similarity.py); the other
# heads: their sigmoid). The raw cosine of the rest would need a second output threaded through
# MultitaskBert and the heads; their relu gives them no gradient under MSE, the default, either.
STS_LOSSES = {"mse": lambda out, y: loss_from_output("sts", out, y),
              "cosent": lambda out, y: cosent_loss(out / MAX_SCORE, y)}

# Column headers as in the course (Similiary sic).
TASKS: dict[str, Task] = {
    "sst": Task(data="sst", pair=False, loss=lambda out, y: loss_from_output("sst", out, y),
                predict=lambda out: out.argmax(dim=-1), metric=accuracy, teacher=lambda out: out.softmax(-1),
                output=("sst", "Predicted_Sentiment", "{:d}"), describe=describe_sst,
                divergence=symmetric_kl_softmax, decide=lambda probs: probs.argmax(dim=-1)),
    "quora": Task(data="quora", pair=True, loss=lambda out, y: loss_from_output("quora", out, y),
                  predict=lambda out: (out > 0).long(),  # sigmoid(logit) > 0.5
                  metric=accuracy, teacher=torch.sigmoid, output=("para", "Predicted_Is_Paraphrase", "{:d}"),
                  cross_option="pair_mode", describe=describe_quora, aux_option="quora_mnrl", aux_loss=quora_mnrl,
                  divergence=symmetric_kl_bernoulli, decide=lambda p: (p > 0.5).long()),
    "sts": Task(data="sts", pair=True, loss=STS_LOSSES["mse"], predict=lambda out: out.clamp(0.0, 5.0),
                metric=pearson, teacher=lambda out: out, output=("sts", "Predicted_Similiary", "{:.4f}"),
                cross_option="sts_mode", metric_name="Pearson r", loss_option="sts_loss", losses=STS_LOSSES,
                divergence=squared_difference, decide=lambda score: score.clamp(0.0, 5.0)),
}


def overall(scores: dict[str, float]) -> float | None:
    """The course's overall score; None unless all three course tasks were evaluated."""
    if not all(t in scores for t in TASK_NAMES):
        return None
    return (scores["sst"] + scores["quora"] + (scores["sts"] + 1) / 2) / 3


def is_cross(task: str, options) -> bool:
    option = TASKS[task].cross_option
    return option is not None and getattr(options, option) == "cross"


def task_loss(task: str, options) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss of a task: the one its loss option names (--sts-loss), else its `loss`."""
    option = TASKS[task].loss_option
    name = getattr(options, option, None) if option else None
    return TASKS[task].loss if name is None else TASKS[task].losses[name]


def aux_weight(task: str, options) -> float:
    """The weight of a task's second loss (e.g. --quora-mnrl); 0 when the task has none or it is off."""
    option = TASKS[task].aux_option
    return float(getattr(options, option, 0.0) or 0.0) if option else 0.0


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
