"""Teacher annealing for Born-Again multi-task distillation (Clark et al. 2019, "BAM! Born-Again
Multi-Task Networks for Natural Language Understanding").

A multitask student learns from single-task teachers of the same size. Pure distillation caps the
student at roughly the teachers' quality; BAM's teacher annealing mixes the gold label into the
target and moves the weight from the teacher to the gold label as training goes on:

    target = lambda * gold + (1 - lambda) * teacher,     lambda = step / total_steps   (0 -> 1)

so early steps imitate the teacher (a smooth, easy target) and the last steps fit the gold labels,
letting the student overtake its teachers. With lambda = 1 every loss equals the plain gold-label
loss of training/multitask/tasks.py.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

def annealed_lambda(step: int, total_steps: int) -> float:
    """Weight of the gold label after `step` optimizer steps out of `total_steps`: 0.0 at step 0,
    rising linearly to 1.0 at step == total_steps (clamped to [0, 1] outside)."""
    if not (isinstance(total_steps, int) and total_steps > 0):
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
    # BEGIN SOLUTION
    return min(1.0, max(0.0, step / total_steps))
    # END SOLUTION


def mixed_targets(task: str, gold: torch.Tensor, teacher: torch.Tensor, lam: float) -> torch.Tensor:
    """lam * gold + (1 - lam) * teacher, with gold in the teacher's form.

    sst: gold (B,) class ids 0..4, teacher (B, 5) probabilities -> (B, 5) distributions.
    quora: gold (B,) 0/1, teacher (B,) probabilities -> (B,) soft labels in [0, 1].
    sts: gold (B,) scores 0..5, teacher (B,) scores -> (B,) scores.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1] (1 = gold labels only, 0 = teacher only), got {lam}")
    if task == "sst":
        if teacher.dim() != 2 or teacher.shape[0] != gold.shape[0]:
            raise ValueError(f"sst: teacher must be (B, classes) probabilities for gold (B,) = {tuple(gold.shape)}, "
                             f"got {tuple(teacher.shape)}")
    elif task in ("quora", "sts"):
        if teacher.shape != gold.shape:
            raise ValueError(f"{task}: teacher {tuple(teacher.shape)} and gold {tuple(gold.shape)} must both be (B,)")
    else:
        raise ValueError(f"unknown task {task!r}; expected sst, quora or sts")
    # BEGIN SOLUTION
    if task == "sst":
        gold = F.one_hot(gold.long(), teacher.shape[-1]).to(teacher.dtype)  # (B, 5)
    return lam * gold.to(teacher.dtype) + (1.0 - lam) * teacher
    # END SOLUTION


def distill_loss(task: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Loss of a head's raw output against a mixed target (mean over the batch).

    sst: output logits (B, 5), target distributions (B, 5): -sum_c target_c * log_softmax(output)_c.
    quora: output logits (B,), target probabilities (B,): binary cross-entropy with logits.
    sts: output scores (B,), target scores (B,): mean squared error.
    """
    if task not in ("sst", "quora", "sts"):
        raise ValueError(f"unknown task {task!r}; expected sst, quora or sts")
    if output.shape != target.shape:
        raise ValueError(f"{task}: output {tuple(output.shape)} and target {tuple(target.shape)} differ in shape; "
                         "build the target with mixed_targets")
    # BEGIN SOLUTION
    output, target = output.float(), target.float()
    if task == "sst":
        return -(target * F.log_softmax(output, dim=-1)).sum(dim=-1).mean()
    if task == "quora":
        return F.binary_cross_entropy_with_logits(output, target)
    return F.mse_loss(output, target)
    # END SOLUTION
