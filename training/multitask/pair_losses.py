"""Pair objectives, the options of the task table's pair tasks (training/multitask/tasks.py).

CoSENT (Su 2022; sentence-transformers' CoSENTLoss), `--sts-loss cosent`: STS is scored by Pearson
correlation, which only cares that more similar pairs score higher, not by how much. MSE asks for
each score's exact value; CoSENT asks only for the order, over every pair of pairs in the batch:
    loss = log(1 + sum over (i, j) with y_i > y_j of exp(lambda * (s_j - s_i))),   lambda = 20
(a smooth maximum of the violations s_j > s_i: the pairs in the wrong order dominate it).

Multiple-negatives ranking (Henderson et al. 2017; SBERT's MultipleNegativesRankingLoss),
`--quora-mnrl WEIGHT`: over the batch's n duplicate pairs (a_i, b_i), the mean-pooled vectors u_i
of a_i must be nearer to v_i (its duplicate) than to every other v_j of the batch:
    loss = mean_i cross_entropy(scale * cos(u_i, v_j) over j, target j = i),   scale = 20
It trains the sentence vectors (what the cosine STS head and the export use) on Quora's duplicates,
which the cross-encoder Quora head alone never does. A batch with fewer than 2 duplicates has no
negative to rank against and contributes 0. The negatives are the batch's other duplicates only; a
v_j that happens to paraphrase a_i too (Quora repeats questions; --augment-symmetric puts (a, b)
and (b, a) in one epoch) is a false negative, as in SBERT.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

COSENT_LAMBDA = 20.0  # Su 2022's lambda; sentence-transformers' CoSENTLoss default scale
MNRL_SCALE = 20.0  # 1 / temperature of the cosines; SBERT's default


def cosent_loss(scores: torch.Tensor, labels: torch.Tensor, lam: float = COSENT_LAMBDA) -> torch.Tensor:
    """scores, labels: (B,) -> scalar CoSENT loss. A batch without two different labels has no
    ordered pair: log(1 + 0) = 0."""
    if scores.dim() != 1 or scores.shape != labels.shape:
        raise ValueError(f"scores and labels must both be (B,), got {tuple(scores.shape)} and {tuple(labels.shape)}")
    s, y = scores.float(), labels.float()
    diff = lam * (s[None, :] - s[:, None])  # (B, B): [i, j] = lam * (s_j - s_i)
    ordered = y[:, None] > y[None, :]  # (B, B): pair i should score above pair j
    # log(1 + sum exp(d)) = logsumexp over [0, d...]: stable for large violations
    return torch.logsumexp(torch.cat([diff.new_zeros(1), diff[ordered]]), dim=0)


def mnrl_loss(u: torch.Tensor, v: torch.Tensor, scale: float = MNRL_SCALE) -> torch.Tensor:
    """u, v: (n, C), row i of both a duplicate pair -> scalar in-batch ranking loss (n >= 2)."""
    if u.shape != v.shape or u.dim() != 2 or u.shape[0] < 2:
        raise ValueError(f"u and v must both be (n, C) with n >= 2, got {tuple(u.shape)} and {tuple(v.shape)}")
    u, v = F.normalize(u.float(), dim=-1), F.normalize(v.float(), dim=-1)
    scores = scale * u @ v.T  # (n, n): [i, j] = scale * cos(u_i, v_j)
    return F.cross_entropy(scores, torch.arange(len(u), device=u.device))


def _rows(inputs: dict[str, torch.Tensor], keep: torch.Tensor) -> dict[str, torch.Tensor]:
    """The rows `keep` of a padded batch, cut to their longest real length (less padding to encode)."""
    mask = inputs["attention_mask"][keep]  # (n, T)
    T = int(mask.sum(dim=1).max())
    return {k: x[keep][:, :T] for k, x in inputs.items()}  # each (n, T')


def quora_mnrl(model: nn.Module, batch: dict) -> torch.Tensor:
    """The MNRL term of a collated Quora batch that carries each sentence's own encoding (inputs1,
    inputs2; data/batching.py): one extra encoder pass over the duplicates' sentences only."""
    dup = batch["labels"] == 1  # (B,)
    if int(dup.sum()) < 2:  # one duplicate has no negative, none no loss: contributes 0
        return batch["labels"].new_zeros((), dtype=torch.float32)
    u, v = model.encode_pair(_rows(batch["inputs1"], dup), _rows(batch["inputs2"], dup))  # (n, C) each
    return mnrl_loss(u, v)
