"""AdamW written out (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization").

Adam (Kingma & Ba 2015) keeps running means of the gradient (m) and of its square (v) and steps by
m / sqrt(v). AdamW applies weight decay *directly to the weights* instead of adding it to the
gradient, so the decay is not rescaled by Adam's per-parameter step size.

Same signature and update order as the CS224N/CMU minBERT optimizer (and Hugging Face's old
transformers.AdamW): bias correction is folded into the step size, eps is added to sqrt(v) without
correction, and the decoupled decay uses the weights *after* the Adam update.

Two paths, one state format ({"step": int, "exp_avg": m, "exp_avg_sq": v} per parameter):
- the graded one (default): `update` below, one parameter at a time, op by op;
- fused=True: the same update through torch's fused AdamW kernel, a fast path that lives in
  fused_adamw.py (how and why it equals `update` is written there). The student release leaves that
  file out; AdamW(fused=True) then says so once and runs `update`.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Iterable

import torch
from torch.optim import Optimizer

try:  # the fast path; the student release leaves it out (it computes step 6, `update`, by itself)
    from .fused_adamw import check_kernel, fused_step
except ImportError:
    check_kernel = fused_step = None

FUSED_AVAILABLE = fused_step is not None
_said_no_fused = False  # the fallback warns once per process, not once per optimizer


def _no_fused_path() -> None:
    global _said_no_fused
    if not _said_no_fused:
        _said_no_fused = True
        warnings.warn("minbert: the fused AdamW path (fused_adamw.py) is not part of this release (it would "
                      "compute step 6 for you); AdamW(fused=True) uses the graded AdamW.update", stacklevel=3)


class AdamW(Optimizer):
    """AdamW as the course defines it. fused=True takes the fast path (same math, same state_dict),
    or, where fused_adamw.py is absent (the student release), the graded `update`, with a warning;
    the flag belongs to this object, so load_state_dict keeps whichever path it was built with."""

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0, correct_bias: bool = True, fused: bool = False):
        if lr < 0.0:
            raise ValueError(f"invalid learning rate {lr}: must be >= 0")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas {betas}: each must be in [0, 1)")
        if eps < 0.0:
            raise ValueError(f"invalid eps {eps}: must be >= 0")
        if weight_decay < 0.0:
            raise ValueError(f"invalid weight_decay {weight_decay}: must be >= 0")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, correct_bias=correct_bias)
        super().__init__(params, defaults)
        if fused and fused_step is None:
            _no_fused_path()
            fused = False
        if fused:
            check_kernel()
        # An attribute, not a group default: state_dict() stays the same for both paths, so a checkpoint
        # written by one loads into the other.
        self.fused = fused

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            live = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdamW does not support sparse gradients")
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)     # m: first moment
                    state["exp_avg_sq"] = torch.zeros_like(p)  # v: second moment
                state["step"] += 1
                if self.fused:
                    live.append(p)
                else:
                    self.update(p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"], group)
            if live:
                fused_step(self, live, group)  # fused_adamw.py
        return loss

    @staticmethod
    def update(p: torch.Tensor, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor, t: int,
               group: dict) -> None:
        """One AdamW update of parameter p in place, at step t (1-based)."""
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        # BEGIN SOLUTION
        m.mul_(beta1).add_(grad, alpha=1.0 - beta1)               # m = b1 m + (1 - b1) g
        v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)     # v = b2 v + (1 - b2) g^2
        step_size = lr
        if group["correct_bias"]:
            # Bias correction folded into the step size (Kingma & Ba, end of section 2).
            step_size = lr * math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)
        p.addcdiv_(m, v.sqrt().add_(eps), value=-step_size)       # p -= step * m / (sqrt(v) + eps)
        if group["weight_decay"] > 0.0:
            p.add_(p, alpha=-lr * group["weight_decay"])          # decoupled: on the weights, after Adam
        # END SOLUTION

