"""Cross-encoder head: both sentences in ONE input, `[CLS] s1 [SEP] s2 [SEP]` with token types 0 / 1.

Every layer's attention then compares the two sentences token by token, which usually makes
cross-encoders more accurate than bi-encoders on pair tasks (Humeau et al. 2020, "Poly-encoders"),
at the cost of one encoder pass per *pair* and no reusable sentence vectors. The pair is read off [CLS], as in
BERT's own sentence-pair fine-tuning (Devlin et al. 2018, Fig. 4).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .pooling import cls_pool


class CrossEncoderHead(nn.Module):
    def __init__(self, hidden_size: int, num_outputs: int = 1, dropout: float = 0.1,
                 scale: float | None = None):
        """scale=None returns raw logits (paraphrase: a logit for BCE-with-logits); scale=s returns
        s * sigmoid(logit) in [0, s] (STS: scale=5 for scores in the gold 0..5 range)."""
        super().__init__()
        if num_outputs < 1:
            raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
        if scale is not None and not scale > 0:
            raise ValueError(f"scale must be > 0 or None (raw logits), got {scale}")
        self.num_outputs = num_outputs
        self.scale = scale
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, num_outputs)

    def forward(self, last_hidden_state: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """last_hidden_state: (B, T, C) of the pair input -> (B,) if num_outputs == 1 else (B, k).
        attention_mask is unused ([CLS] is never padding); it is accepted so every
        token-level head is called the same way."""
        y = self.out(self.dropout(cls_pool(last_hidden_state)))  # (B, k)
        if self.num_outputs == 1:
            y = y.squeeze(-1)  # (B,)
        return y if self.scale is None else self.scale * torch.sigmoid(y)
