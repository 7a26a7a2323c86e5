"""Sentence classification head for SST-5 (five sentiment classes): pool, dropout, linear.

Which vector to classify:
- "cls": the raw last-layer [CLS] vector. The default: it is always fine-tuned with the head.
- "pooler": BertModel's pooler_output, tanh(W h_cls + b). BERT's own run_classifier.py classifies
  on it (get_pooled_output), as does Hugging Face's BertForSequenceClassification: bert-base's
  pooler was trained by the next-sentence objective. all-MiniLM-L6-v2's pooler was never part of
  its sentence-embedding training (that objective mean-pools), so there it is an arbitrary layer.
- "mean": masked mean of all real tokens, usually the strongest start from a sentence-embedding model.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .pooling import cls_pool, mean_pool

POOLINGS = ("cls", "mean", "pooler")


def classifier(in_features: int, out_features: int, dropout: float, mlp_hidden: int | None) -> nn.Sequential:
    """dropout -> linear, or dropout -> linear -> GELU -> dropout -> linear when mlp_hidden is set."""
    if mlp_hidden is None:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, out_features))
    if mlp_hidden < 1:
        raise ValueError(f"mlp_hidden must be a positive int or None (a single linear layer), got {mlp_hidden}")
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, mlp_hidden), nn.GELU(),
                         nn.Dropout(dropout), nn.Linear(mlp_hidden, out_features))


class SentimentHead(nn.Module):
    def __init__(self, hidden_size: int, num_classes: int = 5, pooling: str = "cls",
                 dropout: float = 0.1, mlp_hidden: int | None = None):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.pooling = pooling
        self.classifier = classifier(hidden_size, num_classes, dropout, mlp_hidden)

    def forward(self, last_hidden_state: torch.Tensor, attention_mask: torch.Tensor,
                pooler_output: torch.Tensor | None = None) -> torch.Tensor:
        """last_hidden_state: (B, T, C), attention_mask: (B, T), pooler_output: (B, C), needed only
        for pooling="pooler" -> logits (B, num_classes), before softmax (use cross-entropy)."""
        if self.pooling == "pooler" and pooler_output is None:
            raise ValueError("pooling='pooler' needs pooler_output=model(...)['pooler_output']")
        # BEGIN SOLUTION
        if self.pooling == "cls":
            x = cls_pool(last_hidden_state)  # (B, C)
        elif self.pooling == "mean":
            x = mean_pool(last_hidden_state, attention_mask)  # (B, C)
        else:
            x = pooler_output  # (B, C)
        return self.classifier(x)  # (B, num_classes)
        # END SOLUTION
