"""BertModel: embeddings -> L post-LN layers -> pooler. Devlin et al. 2018, "BERT"."""
from __future__ import annotations

import os

import torch
import torch.nn as nn

from .attention import extended_attention_mask
from .config import BertConfig
from .embeddings import BertEmbeddings
from .layer import BertLayer


class BertModel(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
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
                token_type_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask, token_type_ids: (B, T) -> dict of
        last_hidden_state (B, T, C) and pooler_output (B, C)."""
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, C)
        mask = None
        # A batch without padding needs no mask: the SDPA kernels are fastest (and exact) without one.
        # Under torch.compile that data-dependent test would split the graph, so keep the mask there.
        if attention_mask is not None and (torch.compiler.is_compiling() or not bool(attention_mask.all())):
            mask = extended_attention_mask(attention_mask, x.dtype)  # (B, 1, 1, T)
        index = None
        if mask is not None and self.config.unpad and not torch.compiler.is_compiling():
            # Unpadding ("remove padding" of FasterTransformer; MosaicBERT, ModernBERT): every layer
            # but the attention is token-wise, so run it on the N real tokens only, (N, C), and
            # let the attention scatter them back into the (B, T) grid. That removes the padding
            # from the Linear layers (~80% of a CPU training step); real tokens get the same values,
            # padded positions of last_hidden_state come out as zeros. nonzero() syncs with the
            # host, and its data-dependent N would recompile under torch.compile: eager only.
            B, T, C = x.shape
            index = attention_mask.reshape(-1).nonzero().squeeze(1)  # (N,) real tokens in the (B*T) grid
            x = x.view(B * T, C).index_select(0, index)  # (N, C)
        for layer in self.layers:
            x = layer(x, mask, index)
        if index is not None:
            x = x.new_zeros(B * T, C).index_copy(0, index, x).view(B, T, C)  # (B, T, C), zeros at padding
        # BEGIN SOLUTION
        pooled = torch.tanh(self.pooler(x[:, 0]))  # (B, C): the [CLS] token's vector
        # END SOLUTION
        return {"last_hidden_state": x, "pooler_output": pooled}

    # ---- checkpoints: the reading/writing lives in checkpoint.py, names in hub.py ----

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike = "all-MiniLM-L6-v2",
                        attn_implementation: str = "manual", cache_dir: str | None = None,
                        unpad: bool = False) -> "BertModel":
        """Load a Hugging Face BERT checkpoint: a local directory, "all-MiniLM-L6-v2" (embedded,
        offline), or a hub name such as "bert-base-uncased" (downloaded when online)."""
        from .checkpoint import load_model
        return load_model(cls, name_or_dir, attn_implementation=attn_implementation, cache_dir=cache_dir,
                          unpad=unpad)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write config.json + model.safetensors with Hugging Face names (transformers can load it)."""
        from .checkpoint import save_model
        save_model(self, directory)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
