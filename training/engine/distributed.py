"""Data-parallel training on several GPUs or machines: torchrun + DistributedDataParallel.

    torchrun --nproc-per-node 4 training/run_multitask.py ...                     # 4 GPUs, one machine

torchrun starts one process per device; init() joins them into one process group (NCCL between
GPUs, gloo on CPU). How R processes stay equivalent to one process with an R-times larger batch
(data shards, one task schedule, DDP's gradients, PCGrad's global task gradients, decisions from
all-reduced values, files from rank 0): docs/RELIABILITY.md, section 6.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init(device: str) -> tuple[World, str]:
    """Join torchrun's process group if there is one. Returns (world, this process's device)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return World(), device
    world = World(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if torch.device(device).type == "mps":  # gloo cannot reduce MPS tensors, and a Mac has one GPU
        raise SystemExit(f"error: torchrun with --device {device}: several processes need CUDA GPUs (NCCL) or the "
                         "CPU (gloo); on a Mac run one process (python training/run_multitask.py --device mps)")
    if device.startswith("cuda"):
        device = f"cuda:{world.local_rank}"  # one GPU per process
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return world, device


def cleanup(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, world: World, device: str) -> torch.nn.Module:
    """DDP around the model (it broadcasts rank 0's weights, so all ranks start equal), or the model.

    find_unused_parameters: a step trains one task, so the other heads get no gradient."""
    if not world.distributed:
        return model
    ids = [torch.device(device).index] if device.startswith("cuda") else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def no_sync(net: torch.nn.Module) -> contextlib.AbstractContextManager:
    """DDP: no gradient all-reduce in this block (--accumulate's micro-batches before the last one,
    whose backward then reduces the summed gradients); a no-op for a plain model."""
    return net.no_sync() if isinstance(net, torch.nn.parallel.DistributedDataParallel) else contextlib.nullcontext()


def all_reduce(values: list[float], world: World, device: str = "cpu") -> list[float]:
    """Sum a few scalars over ranks in one collective call (a no-op for one process)."""
    if not world.distributed:
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_gather_object(obj, world: World) -> list:
    if not world.distributed:
        return [obj]
    out = [None] * world.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_mean(tensors: list[Tensor], world: World) -> list[Tensor]:
    """Each tensor's mean over the ranks, in one collective call (flattened into one vector)."""
    flat = torch.cat([t.reshape(-1) for t in tensors])  # (sum of numel,)
    dist.all_reduce(flat)
    flat /= world.world_size
    return [piece.view_as(t) for piece, t in zip(flat.split([t.numel() for t in tensors]), tensors)]


def global_task_losses(losses: list[Tensor], params: list[Tensor], world: World) -> list[Tensor]:
    """Per-task losses on this rank's shard -> surrogate losses whose gradients are the task
    gradients averaged over all ranks (the gradients of the global batch).

    For each task k: g_k = autograd.grad(loss_k, params) on the local shard; all-reduce and divide by
    R; surrogate_k = sum_p (p * G_k,p).sum(), which is linear in p, so d surrogate_k / dp = G_k,p
    exactly. A parameter task k does not reach (g is None, the same on every rank because all ranks
    run the same task graph) stays out of the surrogate, so it still gets no gradient from task k.
    """
    out = []
    for k, loss in enumerate(losses):
        grads = torch.autograd.grad(loss, params, retain_graph=k < len(losses) - 1, allow_unused=True)
        used = [(p, g) for p, g in zip(params, grads) if g is not None]
        flat = torch.cat([g.reshape(-1) for _, g in used])  # (D_k,) one collective per task
        dist.all_reduce(flat)
        flat /= world.world_size
        surrogate, offset = loss.new_zeros(()), 0
        for p, _ in used:
            surrogate = surrogate + (p * flat[offset:offset + p.numel()].view_as(p)).sum()
            offset += p.numel()
        out.append(surrogate)
    return out
