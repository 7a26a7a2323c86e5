"""Optimizer parameter groups (layer-wise lr decay, no decay on biases/LayerNorm) and the lr schedule.

Layer-wise learning-rate decay (Howard & Ruder 2018 "discriminative fine-tuning"; Sun et al. 2019
"How to Fine-Tune BERT"; Clark et al. 2020 ELECTRA): the lower layers hold general language
features that fine-tuning should disturb least, so they get geometrically smaller learning rates:

    heads, pooler  : lr                      (head_lr if given)
    layers[l]      : lr * decay^(L - l)      l = 0 .. L-1, so the top layer gets lr * decay
    embeddings     : lr * decay^(L + 1)      lowest

A task's own copy of layer l (task_layers, heads/multitask_bert.py's --task-layers) gets layer l's lr.

With decay = 1 every group gets lr (plain fine-tuning).
"""
from __future__ import annotations

from typing import Sequence

import torch.nn as nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def no_weight_decay(name: str, p: nn.Parameter) -> bool:
    """Biases and LayerNorm gains/shifts are not decayed: pulling a LayerNorm gain toward 0 shrinks
    the whole activation rather than regularizing it (BERT's original optimizer excluded them too).
    1-D parameters covers both; the name checks catch odd shapes."""
    return p.ndim < 2 or name.endswith(".bias") or ".ln" in name or "LayerNorm" in name


def param_groups(encoder: nn.Module, heads: dict[str, nn.Module], lr: float, layer_decay: float = 1.0,
                 weight_decay: float = 0.01, head_lr: float | None = None,
                 task_layers: dict[str, Sequence[nn.Module]] | None = None) -> list[dict]:
    """Optimizer param groups for an encoder (embeddings, layers[0..L-1], pooler) and task heads.
    task_layers: {task: its own copies of the encoder's top n layers}, copy i standing for layer
    L - n + i (MultitaskBert.task_layers); each copy gets its layer's lr, in a group of its own.

    Each group is {"params", "lr", "weight_decay", "name"} and works with minbert.AdamW and
    torch.optim.AdamW. Every trainable parameter appears exactly once; frozen ones (requires_grad
    False) are left out. A parameter shared between modules (tied weights) keeps the group where it
    is first met, encoder first. Empty groups are dropped.
    """
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if not layer_decay > 0:
        raise ValueError(f"layer_decay must be > 0 (1.0 disables it, 0.8-0.95 is usual), got {layer_decay}")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    layers = getattr(encoder, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"encoder ({type(encoder).__name__}) has no nn.ModuleList `layers`; pass the BertModel "
                         "itself (e.g. model.bert), not the multitask wrapper")
    L = len(layers)

    def encoder_lr(section: str) -> float:
        if section == "embeddings":
            return lr * layer_decay ** (L + 1)
        if section.startswith("layers."):
            return lr * layer_decay ** (L - int(section.split(".")[1]))
        return lr  # pooler, and anything else above the last layer

    groups: dict[str, dict] = {}
    seen: set[int] = set()

    def add(section: str, group_lr: float, name: str, p: nn.Parameter) -> None:
        if not p.requires_grad or id(p) in seen:
            return
        seen.add(id(p))
        decay = not no_weight_decay(name, p)
        key = section if decay else f"{section}.no_decay"
        if key not in groups:
            groups[key] = {"params": [], "lr": group_lr, "weight_decay": weight_decay if decay else 0.0,
                           "name": key}
        groups[key]["params"].append(p)

    for name, p in encoder.named_parameters():
        parts = name.split(".")
        section = f"layers.{parts[1]}" if parts[0] == "layers" else parts[0]  # embeddings, layers.<l>, pooler
        add(section, encoder_lr(section), name, p)
    for task, copies in (task_layers or {}).items():
        if len(copies) > L:
            raise ValueError(f"task_layers[{task!r}] holds {len(copies)} layers, more than the encoder's {L}")
        for i, layer in enumerate(copies):
            section = f"layers.{L - len(copies) + i}"  # the encoder layer this one is a copy of
            for name, p in layer.named_parameters():
                add(f"{task}.{section}", encoder_lr(section), name, p)
    for task, head in heads.items():
        for name, p in head.named_parameters():
            add(f"head.{task}", lr if head_lr is None else head_lr, name, p)
    return list(groups.values())


def warmup_linear(optimizer: Optimizer, warmup_steps: int, total_steps: int) -> LambdaLR:
    """Linear warmup from 0 to each group's lr over warmup_steps, then linear decay to 0 at total_steps.

    The LambdaLR factor multiplies every group's own initial lr, so layer-wise decay is preserved.
    Like BERT and Hugging Face's get_linear_schedule_with_warmup, the factor at step 0 is 0 when
    warmup_steps > 0. Call scheduler.step() once after every optimizer.step().
    """
    if not (isinstance(total_steps, int) and total_steps > 0):
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
    if not (isinstance(warmup_steps, int) and 0 <= warmup_steps <= total_steps):
        raise ValueError(f"warmup_steps must be an integer in [0, total_steps={total_steps}], got {warmup_steps!r} "
                         "(a common choice is 6-10% of total_steps)")

    def factor(step: int) -> float:
        # Adam's second-moment estimate is noisy in the first steps; warmup keeps the early updates
        # small (Liu et al. 2020, "On the Variance of the Adaptive Learning Rate and Beyond").
        if step < warmup_steps:
            return step / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return LambdaLR(optimizer, factor)
