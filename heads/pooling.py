"""Pooling: one vector per sentence from BERT's token vectors (B, T, C) -> (B, C).

[CLS] pooling reads the first token, which BERT's pre-training (next-sentence prediction) taught to
summarise the input. Mean pooling averages the real tokens; Reimers & Gurevych 2019 (Sentence-BERT)
found it the best of CLS / mean / max for sentence embeddings, and all-MiniLM-L6-v2 was trained with it.
"""
from __future__ import annotations

import torch


def _check(h: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    if h.dim() != 3:
        raise ValueError(f"hidden states must be (B, T, C), got shape {tuple(h.shape)}")
    if mask is not None and mask.shape != h.shape[:2]:
        raise ValueError(f"attention_mask must be (B, T) = {tuple(h.shape[:2])} to match the hidden "
                         f"states, got {tuple(mask.shape)}")


def cls_pool(h: torch.Tensor) -> torch.Tensor:
    """h: (B, T, C) -> (B, C), the vector of the first ([CLS]) token."""
    _check(h)
    return h[:, 0]


def mean_pool(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over the real tokens. h: (B, T, C), mask: (B, T), 1 = real token, 0 = padding
    -> (B, C). Padding never leaks in (not even inf/nan there), and a row that is all padding
    pools to zeros instead of 0/0 = nan."""
    _check(h, mask)
    # BEGIN SOLUTION
    keep = mask.bool().unsqueeze(-1)  # (B, T, 1)
    # masked_fill, not h * mask: nan/inf * 0 is still nan, so padding could poison the sum
    total = h.masked_fill(~keep, 0.0).sum(dim=1)  # (B, C)
    count = keep.sum(dim=1).clamp(min=1).to(h.dtype)  # (B, 1); clamp: all-pad rows give 0, not nan
    return total / count
    # END SOLUTION
