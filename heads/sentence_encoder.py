"""SentenceEncoder: BERT -> masked mean pooling -> optional linear projection = one vector per sentence.

The bi-encoder of Sentence-BERT (Reimers & Gurevych 2019): sentences are embedded independently,
so a corpus is encoded once and compared with cheap vector operations afterwards. `encode` is the
inference path: eval mode, no_grad, batches of similar length (little padding), original order kept.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from tqdm import tqdm

from minbert import BertModel, Tokenizer

from .pooling import mean_pool

PROGRESS_MIN = 1000  # progress=None shows a bar only for more sentences than this


class SentenceEncoder(nn.Module):
    def __init__(self, bert: BertModel, tokenizer: Tokenizer, dim: int | None = 256):
        super().__init__()
        if dim is not None and dim < 1:
            raise ValueError(f"dim must be a positive int, or None for no projection, got {dim}")
        self.bert = bert
        self.tokenizer = tokenizer  # not a module: carries no parameters, is not saved in state_dict
        hidden = bert.config.hidden_size
        self.proj = nn.Identity() if dim is None else nn.Linear(hidden, dim)
        self.dim = hidden if dim is None else dim

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """batch: input_ids / attention_mask / token_type_ids (B, T), as from tokenizer(...) -> (B, D)."""
        mask = batch.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(batch["input_ids"])
        h = self.bert(batch["input_ids"], mask, batch.get("token_type_ids"))["last_hidden_state"]  # (B, T, C)
        return self.proj(mean_pool(h, mask))  # (B, D)

    @torch.no_grad()
    def encode(self, sentences: list[str], batch_size: int = 64, max_length: int = 128,
               progress: bool | None = None, device: torch.device | str | None = None) -> torch.Tensor:
        """Embed sentences -> (N, D) float32 tensor on the CPU, row i for sentences[i].
        device: where to run (default: where the parameters are). Restores train mode afterwards."""
        if isinstance(sentences, str):
            raise TypeError("encode takes a list of strings; wrap a single sentence in a list")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(sentences)
        if n == 0:
            return torch.zeros(0, self.dim)
        device = torch.device(device) if device is not None else next(self.parameters()).device
        was_training = self.training
        self.eval()  # dropout off: the same sentence must always give the same vector
        try:
            encoded = self.tokenizer.encode_ids(list(sentences), max_length=max_length)
            # Sorting by length puts similar lengths in a batch, so padding (wasted compute) is small.
            order = sorted(range(n), key=lambda i: len(encoded[i][0]))
            out = torch.empty(n, self.dim)
            show = progress if progress is not None else n > PROGRESS_MIN
            for start in tqdm(range(0, n, batch_size), desc="encode", disable=not show):
                idx = order[start:start + batch_size]
                batch = {k: t.to(device) for k, t in self.tokenizer.pad([encoded[i] for i in idx]).items()}
                out[idx] = self(batch).float().cpu()  # scatter back to the original positions
        finally:
            self.train(was_training)
        return out
