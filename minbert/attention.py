"""Multi-head self-attention, the heart of BERT (Vaswani et al. 2017, section 3.2).

The math is written out, softmax(Q K^T / sqrt(hs) + mask) V, as in the paper. PyTorch's fused kernel
for the same math (scaled_dot_product_attention) is one of the opt-in fast paths in fast.py (not in
the student release, where the model computes attention here).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import BertConfig


def extended_attention_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, T) of 1 = real token / 0 = padding  ->  additive mask (B, 1, 1, T).

    Adding a very negative number before the softmax gives padding keys ~0 probability. BERT uses
    the dtype's minimum rather than -inf so that a fully padded row yields uniform weights, not NaN.
    """
    # BEGIN SOLUTION
    mask = attention_mask[:, None, None, :].to(dtype)  # (B, 1, 1, T): broadcast over heads and queries
    return (1.0 - mask) * torch.finfo(dtype).min
    # END SOLUTION


class SelfAttention(nn.Module):
    """Q, K, V projections (fused in one Linear), per-head attention, merge heads, output projection."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.n_head = config.num_attention_heads
        self.head_size = config.head_size
        C = config.hidden_size
        # One (C -> 3C) matmul instead of three (C -> C): same math, fewer kernel launches.
        # Rows [0:C] are the query weights, [C:2C] key, [2C:3C] value (see checkpoint.py's table).
        self.qkv = nn.Linear(C, 3 * C)
        self.proj = nn.Linear(C, C)  # HF: attention.output.dense
        self.attn_dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, nh, T, hs): each head's slice of the channels, heads before time."""
        # BEGIN SOLUTION
        B, T, C = x.shape
        return x.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        # END SOLUTION

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  mask: torch.Tensor | None) -> torch.Tensor:
        """The explicit math: q, k, v are (B, nh, T, hs), mask is additive (B, 1, 1, T) or None."""
        # BEGIN SOLUTION
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_size)  # (B, nh, T, T)
        if mask is not None:
            att = att + mask
        att = F.softmax(att, dim=-1)
        # Dropping whole attention probabilities looks odd but is what the original BERT does.
        att = self.attn_dropout(att)
        return att @ v  # (B, nh, T, hs)
        # END SOLUTION

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, C), mask: additive (B, 1, 1, T) or None -> (B, T, C)."""
        # BEGIN SOLUTION
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)  # (B, nh, T, hs)
        y = self.attention(q, k, v, mask)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, nh * hs): merge the heads back
        return self.proj(y)
        # END SOLUTION
