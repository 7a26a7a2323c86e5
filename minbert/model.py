"""BertModel: embeddings -> L post-LN layers -> pooler. Devlin et al. 2018, "BERT"."""
from __future__ import annotations

import os
import warnings
from typing import Sequence

import torch
import torch.nn as nn

from .attention import extended_attention_mask
from .config import BertConfig
from .embeddings import BertEmbeddings
from .layer import BertLayer

try:  # the fast paths; the student release leaves fast.py out (it computes steps 1 and 2 by itself)
    from . import fast
except ImportError:
    fast = None


ATTN_IMPLEMENTATIONS = ("manual", "sdpa")
FAST_AVAILABLE = fast is not None
_said_no_fast = False  # the fallback warns once per process, not once per model


def _no_fast_paths() -> None:
    global _said_no_fast
    if not _said_no_fast:
        _said_no_fast = True
        warnings.warn("minbert: the fast paths (fast.py: attn_implementation='sdpa', unpad=True) are not part of "
                      "this release (they would compute steps 1 and 2 for you); using the teaching path (manual "
                      "attention, padded batch)", stacklevel=3)


class BertModel(nn.Module):
    def __init__(self, config: BertConfig, attn_implementation: str = "manual", unpad: bool = False):
        """config describes the checkpoint. The two runtime switches choose how it is computed, with
        the same result: attn_implementation "manual" (the explicit math, the default) or "sdpa"
        (PyTorch's fused kernel); unpad=True skips padded tokens. Both are fast paths (fast.py); where
        fast.py is absent (the student release) they warn once and the model takes the teaching path,
        and its attn_implementation and unpad then say so ("manual", False)."""
        super().__init__()
        if attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation must be 'manual' (the explicit math) or 'sdpa' "
                             f"(PyTorch's fused kernel), got {attn_implementation!r}")
        if fast is None and (attn_implementation != "manual" or unpad):
            _no_fast_paths()
            attn_implementation, unpad = "manual", False
        self.config = config
        self.attn_implementation = attn_implementation
        self.unpad = unpad
        self.embeddings = BertEmbeddings(config)
        self.layers = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))
        # The pooler is a dense + tanh on [CLS], trained by BERT's next-sentence objective.
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)  # HF: pooler.dense
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # BERT's init: N(0, 0.02) for every matrix (truncated in TF), zero biases, identity LayerNorm.
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None,
                layers: Sequence[BertLayer] | None = None) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask, token_type_ids: (B, T) -> dict of
        last_hidden_state (B, T, C) and pooler_output (B, C). layers: run these layers instead of
        self.layers, e.g. self.layers[:k] followed by a task's own copies of the top layers
        (heads/multitask_bert.py, --task-layers); None runs self.layers."""
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, C)
        x = self.run_layers(self.layers if layers is None else layers, x, attention_mask)
        # BEGIN SOLUTION
        pooled = torch.tanh(self.pooler(x[:, 0]))  # (B, C): the [CLS] token's vector
        # END SOLUTION
        return {"last_hidden_state": x, "pooler_output": pooled}

    def run_layers(self, layers: Sequence[BertLayer], x: torch.Tensor,
                   attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The given layers on hidden states x (B, T, C) -> (B, T, C), on this model's path
        (the teaching loop, or the fast paths it was built with)."""
        if self.attn_implementation != "manual" or self.unpad:
            # Opt-in: the same layers computed faster (fused attention, unpadding); fast.py.
            return fast.encode(layers, x, attention_mask, sdpa=self.attn_implementation == "sdpa", unpad=self.unpad)
        mask = None  # no mask: every token attends to every token
        if attention_mask is not None:
            mask = extended_attention_mask(attention_mask, x.dtype)  # (B, 1, 1, T)
        for layer in layers:
            x = layer(x, mask)
        return x

    # ---- checkpoints: the reading/writing lives in checkpoint.py, names in hub.py ----

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike = "all-MiniLM-L6-v2",
                        attn_implementation: str = "manual", cache_dir: str | None = None,
                        unpad: bool = False) -> "BertModel":
        """Load a Hugging Face BERT checkpoint: a local directory, "all-MiniLM-L6-v2" (embedded,
        offline), or a hub name such as "bert-base-uncased" (downloaded when online).
        attn_implementation and unpad are the runtime switches of __init__, not part of the checkpoint."""
        from .checkpoint import load_model
        return load_model(cls, name_or_dir, cache_dir=cache_dir, attn_implementation=attn_implementation,
                          unpad=unpad)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write config.json + model.safetensors with Hugging Face names (transformers can load it)."""
        from .checkpoint import save_model
        save_model(self, directory)
