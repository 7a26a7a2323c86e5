"""Freezing parts of the model: train only the heads, or the heads plus the top of the encoder.

Freezing sets requires_grad = False, so autograd computes no gradient for those weights and the
optimizer (which skips parameters whose .grad is None) never moves them, weight decay included.
It saves the backward pass below the lowest trained layer and the optimizer state for frozen weights.

Dropout is a separate switch: a frozen module in train() mode still drops activations. For
feature extraction with a fully frozen encoder call encoder.eval() after every model.train().

The lower layers hold the most general features and change least in fine-tuning (Howard & Ruder
2018; Lee et al. 2019), so freeze_lower_layers(encoder, n) freezes the embeddings with layers
0..n-1: there is no point training the embeddings under frozen layers.
"""
from __future__ import annotations

import torch.nn as nn


def freeze_module(module: nn.Module) -> int:
    """Freeze every parameter of module (e.g. a task head); returns how many scalars were frozen."""
    n = 0
    for p in module.parameters():
        p.requires_grad_(False)
        # A stale .grad from an earlier step would still be applied by optimizer.step().
        p.grad = None
        n += p.numel()
    return n


def _check_encoder(encoder: nn.Module) -> None:
    if not (hasattr(encoder, "embeddings") and isinstance(getattr(encoder, "layers", None), nn.ModuleList)):
        raise ValueError(f"{type(encoder).__name__} has no `embeddings` and `layers`; pass the BertModel itself "
                         "(e.g. model.bert), not the multitask wrapper")


def freeze_encoder(encoder: nn.Module) -> int:
    """Freeze the whole encoder (embeddings, all layers, pooler): only the heads train."""
    _check_encoder(encoder)
    return freeze_module(encoder)


def freeze_embeddings(encoder: nn.Module) -> int:
    """Freeze word, position and segment embeddings and their LayerNorm."""
    _check_encoder(encoder)
    return freeze_module(encoder.embeddings)


def freeze_lower_layers(encoder: nn.Module, n: int) -> int:
    """Freeze the embeddings and layers[0..n-1]; n = 0 freezes nothing, n = L leaves only the pooler."""
    _check_encoder(encoder)
    L = len(encoder.layers)
    if not (isinstance(n, int) and 0 <= n <= L):
        raise ValueError(f"n must be an integer in [0, {L}] (the encoder has {L} layers), got {n!r}")
    if n == 0:
        return 0
    return freeze_module(encoder.embeddings) + sum(freeze_module(layer) for layer in encoder.layers[:n])


def count_trainable(model: nn.Module) -> int:
    """Number of scalars that will be trained (requires_grad True); model.parameters() is deduplicated."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
