"""Masked-LM pre-training of an encoder on new text (Devlin et al. 2018, section 3.1, "Task #1").

    inputs, labels = mask_tokens(input_ids, attention_mask, special_ids, mask_id, vocab_size, generator)
    loss = mlm_loss(MaskedLM(encoder), inputs, attention_mask, token_type_ids, labels)

Used by training/run_mlm.py to adapt a checkpoint to the tasks' own sentences before fine-tuning
(Gururangan et al. 2020, "Don't Stop Pretraining": task-adaptive pre-training).

The head is BERT's (transformers' BertLMPredictionHead): a transform dense -> activation ->
LayerNorm, then a decoder whose weight IS the word-embedding matrix (tied, as in BERT) plus a bias of
one value per vocabulary entry. all-MiniLM-L6-v2 was distilled without an MLM head, so the transform
and the bias start fresh (BERT's init); the decoder needs nothing new, since it is the embeddings.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from minbert import BertModel
from minbert.layer import activation

IGNORE = -100  # the label of a position without a prediction (F.cross_entropy's ignore_index)


class MlmHead(nn.Module):
    """hidden (..., C) -> logits over the vocabulary (..., V); HF names in the comments."""

    def __init__(self, encoder: BertModel):
        super().__init__()
        cfg = encoder.config
        C = cfg.hidden_size
        self.dense = nn.Linear(C, C)                                   # HF: cls.predictions.transform.dense
        self.act = activation(cfg.hidden_act)
        self.ln = nn.LayerNorm(C, eps=cfg.layer_norm_eps)              # HF: cls.predictions.transform.LayerNorm
        self.decoder = nn.Linear(C, cfg.vocab_size, bias=False)
        # Tied: the same Parameter object, not a copy. An input word and the output word it predicts
        # share one vector, and nothing of V x C is added to train (Press & Wolf 2017).
        self.decoder.weight = encoder.embeddings.word_embeddings.weight
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))          # HF: cls.predictions.bias
        std = cfg.initializer_range  # BERT's init for the fresh parts (minbert/model.py: _init_weights)
        nn.init.trunc_normal_(self.dense.weight, std=std, a=-2 * std, b=2 * std)
        nn.init.zeros_(self.dense.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.ln(self.act(self.dense(hidden)))) + self.bias


class MaskedLM(nn.Module):
    """An encoder and its MLM head. forward -> logits (B, T, V) at every position, or (N, V) at the
    N positions of `where` (a (B, T) bool mask): only those are needed for the loss, and the head's
    V-wide output is the largest tensor of the step (30522 x C for the uncased vocabulary)."""

    def __init__(self, encoder: BertModel):
        super().__init__()
        self.encoder = encoder
        self.head = MlmHead(encoder)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, where: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.encoder(input_ids, attention_mask, token_type_ids)["last_hidden_state"]  # (B, T, C)
        return self.head(hidden if where is None else hidden[where])  # (B, T, V) or (N, V)


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: list[int], mask_id: int,
                vocab_size: int, generator: torch.Generator | None = None, rate: float = 0.15,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption: each real token that is not special ([CLS], [SEP], [PAD]) is chosen with
    probability `rate`; a chosen token becomes [MASK] 80% of the time, a uniformly random token of
    the vocabulary 10%, and stays itself 10% (so the model cannot learn that only [MASK] positions
    matter). Returns (corrupted ids, labels): labels hold the original id at the chosen positions and
    IGNORE elsewhere. All (B, T) long. Each token is chosen independently (Bernoulli), as in
    transformers' DataCollatorForLanguageModeling; BERT's own data drew exactly round(rate * n) per
    sequence, the same rate on average."""
    if not 0.0 < rate < 1.0:
        raise ValueError(f"the masking rate must be in (0, 1), got {rate}")
    candidate = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(special_ids, device=input_ids.device))
    chosen = (torch.rand(input_ids.shape, generator=generator, device=input_ids.device) < rate) & candidate
    labels = torch.where(chosen, input_ids, IGNORE)
    u = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)  # which of the three
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator, device=input_ids.device)
    inputs = torch.where(chosen & (u < 0.8), mask_id, input_ids)
    inputs = torch.where(chosen & (u >= 0.8) & (u < 0.9), random_ids, inputs)
    return inputs, labels


def mlm_loss(model: MaskedLM, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
             labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the original tokens at the chosen positions (labels != IGNORE)."""
    where = labels != IGNORE  # (B, T)
    if not where.any():  # a batch of very short sentences can draw no position: nothing to predict
        return model.head.bias.sum() * 0.0  # a zero loss that still reaches backward()
    logits = model(input_ids, attention_mask, token_type_ids, where=where)  # (N, V)
    return F.cross_entropy(logits.float(), labels[where])
