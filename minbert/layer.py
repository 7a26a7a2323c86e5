"""One BERT layer: attention and a feed-forward network, each wrapped post-LN style.

BERT (Devlin et al. 2018) keeps the original Transformer's *post*-LayerNorm:
    x = LN(x + Dropout(Attention(x)))
    x = LN(x + Dropout(FFN(x)))
(GPT-2 and most newer models moved LN before each branch; checkpoints are not interchangeable.)
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import SelfAttention
from .config import BertConfig


def activation(name: str):
    # BERT's "gelu" is the exact erf form; "gelu_new" (GPT-2) is the tanh approximation.
    return {"gelu": F.gelu, "gelu_new": lambda x: F.gelu(x, approximate="tanh"), "relu": F.relu}[name]


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        C, eps = config.hidden_size, config.layer_norm_eps
        self.attn = SelfAttention(config)
        self.ln1 = nn.LayerNorm(C, eps=eps)                         # HF: attention.output.LayerNorm
        self.ffn_in = nn.Linear(C, config.intermediate_size)        # HF: intermediate.dense
        self.ffn_out = nn.Linear(config.intermediate_size, C)       # HF: output.dense
        self.ln2 = nn.LayerNorm(C, eps=eps)                         # HF: output.LayerNorm
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.act = activation(config.hidden_act)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, C), mask: additive (B, 1, 1, T) or None -> (B, T, C)."""
        # BEGIN SOLUTION
        x = self.ln1(x + self.dropout(self.attn(x, mask)))
        x = self.ln2(x + self.dropout(self.ffn_out(self.act(self.ffn_in(x)))))
        return x
        # END SOLUTION
