"""BERT's input representation: word + position + segment embeddings, summed, then LN and dropout.

Devlin et al. 2018, figure 2. Positions are learned (not sinusoidal), which is why BERT cannot read
more than max_position_embeddings tokens.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .config import BertConfig


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        C = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, C, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, C)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, C)
        self.ln = nn.LayerNorm(C, eps=config.layer_norm_eps)  # HF: embeddings.LayerNorm
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids, token_type_ids: (B, T) -> (B, T, C)."""
        B, T = input_ids.shape
        if T > self.position_embeddings.num_embeddings:
            raise ValueError(f"input has {T} tokens but the model knows only "
                             f"{self.position_embeddings.num_embeddings} positions; truncate it")
        # BEGIN SOLUTION
        pos = torch.arange(T, device=input_ids.device)  # (T,), broadcast over the batch
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)  # everything is segment A
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.ln(x))
        # END SOLUTION
