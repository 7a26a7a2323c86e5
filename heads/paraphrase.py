"""Bi-encoder pair classifier for Quora paraphrase detection.

Each question is encoded on its own into u and v (B, C); a small classifier reads pair features
[u; v; |u - v|; u * v]. Sentence-BERT (Reimers & Gurevych 2019) found [u; v; |u - v|] best for NLI;
InferSent (Conneau et al. 2017) also adds the element-wise product u * v. |u - v| and u * v are
symmetric in (u, v), [u; v] lets the classifier see each sentence itself.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .sentiment import classifier


def pair_features(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """u, v: (B, C) -> (B, 4C) laid out as [u, v, |u - v|, u * v] along the last dim."""
    if u.shape != v.shape or u.dim() != 2:
        raise ValueError(f"u and v must both be (B, C) with the same shape, got {tuple(u.shape)} and {tuple(v.shape)}")
    # BEGIN SOLUTION
    return torch.cat([u, v, (u - v).abs(), u * v], dim=-1)  # (B, 4C)
    # END SOLUTION


class ParaphraseHead(nn.Module):
    def __init__(self, hidden_size: int, dropout: float = 0.1, mlp_hidden: int | None = None):
        super().__init__()
        self.classifier = classifier(4 * hidden_size, 1, dropout, mlp_hidden)

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """u, v: (B, C) sentence vectors -> (B,) logits of "is a paraphrase" (use
        binary_cross_entropy_with_logits; sigmoid > 0.5, i.e. logit > 0, predicts 1)."""
        return self.classifier(pair_features(u, v)).squeeze(-1)  # (B,)
