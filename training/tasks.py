"""The three tasks of the multitask model: their losses, predictions, metrics and output files.

  sst   SST-5 sentiment, 5 classes            cross-entropy            accuracy
  quora Quora question pairs, paraphrase 0/1  binary cross-entropy     accuracy
  sts   STS-B similarity, a score in [0, 5]   mean squared error       Pearson correlation

The course's overall score averages the three, mapping Pearson from [-1, 1] to [0, 1]:
    overall = (sst_acc + quora_acc + (sts_pearson + 1) / 2) / 3
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

TASK_NAMES = ("sst", "quora", "sts")
# Course file names and column headers of the prediction files (Similiary sic, as in the course).
OUTPUT = {"sst": ("sst", "Predicted_Sentiment"), "quora": ("para", "Predicted_Is_Paraphrase"),
          "sts": ("sts", "Predicted_Similiary")}


def forward(model, task: str, batch: dict) -> torch.Tensor:
    """Raw output of a task's head: logits (B, 5) for sst, a logit (B,) for quora, a score (B,) for sts."""
    if task == "sst":
        return model.predict_sentiment(batch["inputs"])
    fn = model.predict_paraphrase if task == "quora" else model.predict_similarity
    if "inputs" in batch:  # cross-encoder: one [CLS] a [SEP] b [SEP] sequence
        return fn(batch["inputs"])
    return fn(batch["inputs1"], batch["inputs2"])


def loss_from_output(task: str, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # BEGIN SOLUTION
    if task == "sst":
        return F.cross_entropy(out.float(), labels)
    if task == "quora":
        return F.binary_cross_entropy_with_logits(out.float(), labels.float())
    return F.mse_loss(out.float(), labels.float())
    # END SOLUTION


def loss(model, task: str, batch: dict) -> torch.Tensor:
    return loss_from_output(task, forward(model, task, batch), batch["labels"])


def predictions(task: str, out: torch.Tensor) -> torch.Tensor:
    """Head output -> the course's prediction: a class, 0/1, or a clipped score."""
    if task == "sst":
        return out.argmax(dim=-1)
    if task == "quora":
        return (out > 0).long()  # sigmoid(logit) > 0.5
    return out.clamp(0.0, 5.0)


def metric(task: str, preds: np.ndarray, labels: np.ndarray) -> float:
    if task == "sts":
        if len(preds) < 2 or np.std(preds) == 0 or np.std(labels) == 0:
            return 0.0  # Pearson is undefined for a constant prediction; count it as no correlation
        return float(np.corrcoef(preds, labels)[0, 1])
    return float((preds == labels).mean())


def overall(scores: dict[str, float]) -> float:
    """The course's overall score; defined only when all three tasks were evaluated."""
    return (scores["sst"] + scores["quora"] + (scores["sts"] + 1) / 2) / 3


@torch.no_grad()
def predict(model, task: str, batches, device, autocast=None, progress=None) -> tuple[list, np.ndarray, np.ndarray | None]:
    """Run a task over collated batches: (ids, predictions, labels or None)."""
    from data.batching import to_device
    was_training = model.training
    model.eval()
    ids, preds, labels = [], [], []
    for batch in (progress(batches) if progress else batches):
        b = to_device(batch, device)
        with autocast() if autocast else torch.autocast("cpu", enabled=False):
            out = forward(model, task, b)
        preds.append(predictions(task, out).float().cpu().numpy())
        ids += batch["ids"]
        if batch["labels"] is not None:
            labels.append(batch["labels"].numpy())
    model.train(was_training)
    return ids, np.concatenate(preds) if preds else np.zeros(0), np.concatenate(labels) if labels else None


def write_predictions(path: str | os.PathLike, task: str, ids: list, preds: np.ndarray) -> None:
    """The course's format: a header `id \\t Predicted_X`, then `id , prediction` per line.
    Written to a temp file and renamed, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = OUTPUT[task][1]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"id \t {header} \n")
        for i, p in zip(ids, preds):
            value = f"{p:.4f}" if task == "sts" else f"{int(p)}"
            f.write(f"{i} , {value} \n")
    os.replace(tmp, path)


def prediction_file(out_dir: str | os.PathLike, task: str, split: str) -> Path:
    return Path(out_dir) / f"{OUTPUT[task][0]}-{split}-output.csv"
