"""PCGrad: gradient surgery for multitask learning (Yu et al. 2020, arXiv:2001.06782).

When two tasks' gradients on the shared encoder point in conflicting directions (negative dot
product), summing them lets one task undo the other's progress. PCGrad removes the conflicting
component: each task gradient g_i is projected onto the normal plane of every g_j it conflicts
with, visiting the other tasks in a random order (Algorithm 1):

    for j in shuffle(tasks != i):
        if g_i . g_j < 0:
            g_i = g_i - (g_i . g_j) / ||g_j||^2 * g_j      # g_j is the ORIGINAL gradient of task j

and the update is the sum of the projected gradients. Only the *shared* parameters take part:
a task head sees a single task's gradient, so it has nothing to conflict with.
"""
from __future__ import annotations

import torch
from torch import Tensor


def project_conflicting(grads: list[Tensor], generator: torch.Generator | None = None) -> list[Tensor]:
    """grads: K flat (D,) task gradients -> K projected (D,) gradients (Algorithm 1 of the paper).

    The order in which task i visits the others is a fresh random permutation per task, drawn from
    `generator` (CPU torch.Generator; None uses torch's global RNG). The inputs are not modified.
    """
    K = len(grads)
    # BEGIN SOLUTION
    projected = []
    for i in range(K):
        g_i = grads[i].clone()
        others = [j for j in torch.randperm(K, generator=generator).tolist() if j != i]
        for j in others:
            g_j = grads[j]
            dot = torch.dot(g_i, g_j)
            if dot < 0:  # conflict: remove the component of g_i along g_j
                g_i = g_i - dot / torch.dot(g_j, g_j) * g_j
        projected.append(g_i)
    return projected
    # END SOLUTION


def pcgrad_project(grads: list[Tensor], generator: torch.Generator | None = None) -> Tensor:
    """grads: K flat (D,) task gradients -> (D,) sum of the PCGrad-projected gradients."""
    _check_flat(grads)
    return torch.stack(project_conflicting(grads, generator)).sum(0)  # (K, D) -> (D,)


def _check_flat(grads: list[Tensor]) -> None:
    if len(grads) == 0:
        raise ValueError("grads is empty: pass one flat gradient vector per task")
    for k, g in enumerate(grads):
        if g.ndim != 1 or g.shape != grads[0].shape:
            raise ValueError(f"grads[{k}] has shape {tuple(g.shape)}; every task gradient must be a flat "
                             f"vector of the same shape as grads[0] {tuple(grads[0].shape)}")


def _add_grad(p: Tensor, g: Tensor) -> None:
    # Accumulate like loss.backward() does, so PCGrad composes with gradient accumulation.
    g = g.to(p.dtype).view_as(p)
    if p.grad is None:
        p.grad = g.clone()
    else:
        p.grad.add_(g)


def pcgrad_backward(
    losses: list[Tensor],
    shared_params: list[Tensor],
    task_params: list[list[Tensor]] | None = None,
    generator: torch.Generator | None = None,
) -> None:
    """Backward pass of sum(losses) with PCGrad applied on the shared parameters.

    losses: K scalar task losses. shared_params: parameters every task may update (the encoder);
    their .grad receives the sum of the projected task gradients. task_params[i]: parameters of
    task i alone (its head); their .grad receives task i's gradient unmodified. Parameters in neither
    list get no gradient. Gradients are added to existing .grad (like backward()); a parameter no
    task reaches keeps its .grad untouched (None stays None). The autograd graph is freed, as by
    backward().
    """
    K = len(losses)
    if K == 0:
        raise ValueError("losses is empty: pass one scalar loss per task")
    for k, loss in enumerate(losses):
        if loss.numel() != 1:
            raise ValueError(f"losses[{k}] has shape {tuple(loss.shape)}; each task loss must be a scalar "
                             "(reduce it with .mean() first)")
    shared_params = list(shared_params)
    if len(shared_params) == 0:
        raise ValueError("shared_params is empty: pass the encoder's parameters, e.g. list(bert.parameters())")
    task_params = [list(ps) for ps in task_params] if task_params is not None else [[] for _ in range(K)]
    if len(task_params) != K:
        raise ValueError(f"task_params has {len(task_params)} lists for {K} losses; pass one list per task "
                         "(an empty list for a task without its own parameters)")
    seen: dict[int, str] = {}
    owners = [("shared_params", shared_params), *((f"task_params[{k}]", ps) for k, ps in enumerate(task_params))]
    for where, ps in owners:
        for p in ps:
            if id(p) in seen:
                raise ValueError(f"a parameter of shape {tuple(p.shape)} is in both {seen[id(p)]} and {where}; "
                                 "each parameter must be either shared or owned by exactly one task")
            seen[id(p)] = where

    flat, touched, head_grads = task_gradients(losses, shared_params, task_params)
    add_projected(pcgrad_project(flat, generator), shared_params, touched, task_params, head_grads)


def task_gradients(losses: list[Tensor], shared_params: list[Tensor], task_params: list[list[Tensor]]
                   ) -> tuple[list[Tensor], list[bool], list[tuple]]:
    """Per-task gradients (the graph is freed): the shared part flattened into one float32 (D,) vector
    per task, whether any task reaches each shared parameter, and each task's own parameters' gradients."""
    K, n_shared = len(losses), len(shared_params)
    flat, touched, head_grads = [], [False] * n_shared, []
    for k, loss in enumerate(losses):
        params = shared_params + task_params[k]
        gs = torch.autograd.grad(loss.reshape(()), params, retain_graph=k < K - 1, allow_unused=True)
        pieces = []
        for n, (p, g) in enumerate(zip(shared_params, gs[:n_shared])):
            if g is None:  # this task does not reach p: it contributes zero there
                pieces.append(torch.zeros(p.numel(), device=p.device, dtype=torch.float32))
            else:
                touched[n] = True
                # float32 for the dot products: bf16/fp16 sums over millions of entries lose the sign
                pieces.append(g.detach().reshape(-1).float())
        flat.append(torch.cat(pieces))  # (D,)
        head_grads.append(gs[n_shared:])
    return flat, touched, head_grads


def add_projected(total: Tensor, shared_params: list[Tensor], touched: list[bool], task_params: list[list[Tensor]],
                  head_grads: list[tuple]) -> None:
    """total (D,), the sum of the projected gradients, into .grad of the shared parameters some task
    reaches; each task's own gradients into its own parameters."""
    offset = 0
    for n, p in enumerate(shared_params):
        if touched[n]:
            _add_grad(p, total[offset:offset + p.numel()])
        offset += p.numel()
    for ps, gs in zip(task_params, head_grads):
        for p, g in zip(ps, gs):
            if g is not None:
                _add_grad(p, g)


class TaskGradientSum:
    """Each task's gradient summed over the micro-batches of one optimizer step (--accumulate), then
    projected once: PCGrad of the full batch's task gradients, which is not the sum of the micro-batches'
    projections (the projection is not linear). Every micro-batch's losses must be the same K tasks."""

    def __init__(self, shared_params: list[Tensor], task_params: list[list[Tensor]]):
        self.shared, self.task_params = list(shared_params), [list(ps) for ps in task_params]
        self.flat: list[Tensor] | None = None  # K x (D,) float32
        self.touched = [False] * len(self.shared)
        self.heads: list[list[Tensor | None]] | None = None  # per task, per own parameter

    def add(self, losses: list[Tensor]) -> None:
        """One micro-batch: its K task losses, differentiated (the graph is freed)."""
        flat, touched, heads = task_gradients(losses, self.shared, self.task_params)
        self.touched = [a or b for a, b in zip(self.touched, touched)]
        if self.flat is None:
            self.flat, self.heads = flat, [list(gs) for gs in heads]
            return
        self.flat = [a + b for a, b in zip(self.flat, flat)]
        self.heads = [[a if b is None else b if a is None else a + b for a, b in zip(old, new)]
                      for old, new in zip(self.heads, heads)]

    def backward(self, generator: torch.Generator | None = None, reduce=None) -> None:
        """Project the sums into .grad, as pcgrad_backward does. reduce: the tensors (the K sums, then
        the own parameters' gradients) -> their means over the processes, once per optimizer step."""
        heads = [g for gs in self.heads for g in gs if g is not None]
        if reduce is not None:
            reduced = iter(reduce([*self.flat, *heads]))
            self.flat = [next(reduced) for _ in self.flat]
            self.heads = [[None if g is None else next(reduced) for g in gs] for gs in self.heads]
        add_projected(pcgrad_project(self.flat, generator), self.shared, self.touched, self.task_params, self.heads)
