"""An exponential moving average (EMA) of the weights, used for evaluation and prediction (--ema).

    shadow <- d * shadow + (1 - d) * weights     after every optimizer step n = 0, 1, 2, ...
    d = min(decay, (1 + n) / (10 + n))           the usual warm-up (TensorFlow's num_updates)

Why the warm-up: the shadow starts as the initial weights, whose task heads are random. With a
fixed d = 0.999 the initial weights would still hold 0.999^n of the average after n steps (37% after
1,000 steps, more than the first epoch of a short run), so the early dev scores would measure the
random heads. With the warm-up their share is 1 / C(n + 9, 9), below 1e-3 after 5 steps. Until d
reaches the cap (after 9 / (1 - decay) - 10 steps: 8,990 for 0.999) the warm-up alone sets the
average: step k's weight after n steps is about 9 k^8 / n^9, i.e. roughly the last tenth of the
steps (mean age 0.1 n). A run shorter than that gives the same average for every decay above the cap.

The shadow is fp32 whatever the weights are, keyed by parameter name (for last/ checkpoints).
`applied(model)` swaps the averaged weights in and restores the raw ones exactly (a bit copy), so
training goes on from the raw weights, untouched.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import Tensor, nn


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay {decay}: must be in (0, 1), e.g. 0.999")
        self.decay, self.updates = decay, 0
        self.names = [n for n, p in model.named_parameters() if p.is_floating_point()]
        params = dict(model.named_parameters())
        self.shadow = [params[n].detach().float().clone() for n in self.names]

    def _params(self, model: nn.Module) -> list[Tensor]:
        params = dict(model.named_parameters())
        return [params[n] for n in self.names]

    def rate(self) -> float:
        """The decay d of the next update."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step of the average towards the model's current weights."""
        weights = [p.detach().float() for p in self._params(model)]  # no copy for fp32 weights
        torch._foreach_lerp_(self.shadow, weights, 1.0 - self.rate())  # s + (1 - d) (w - s)
        self.updates += 1

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """The averaged weights in the model for the `with` block; the raw ones, bit for bit, after it."""
        params = self._params(model)
        raw = [p.detach().clone() for p in params]
        self.copy_to(model)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, r in zip(params, raw):
                    p.copy_(r)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """The averaged weights into the model, for good (the end of training)."""
        for p, s in zip(self._params(model), self.shadow):
            p.copy_(s)

    def state_dict(self) -> dict[str, Tensor]:
        """The shadow by parameter name (a tensor group of last/); the update count goes in state.json."""
        return dict(zip(self.names, self.shadow))

    def load_state_dict(self, tensors: dict[str, Tensor], updates: int) -> None:
        missing = [n for n in self.names if n not in tensors]
        if missing or len(tensors) != len(self.names):
            raise KeyError(f"the EMA weights do not fit this model (missing {missing[:3]}, "
                           f"{len(tensors)} saved, {len(self.names)} expected)")
        for s, n in zip(self.shadow, self.names):
            s.copy_(tensors[n])
        self.updates = int(updates)
