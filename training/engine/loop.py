"""The one training loop of run_multitask, run_classifier, run_distill and run_gan.

    for phase in phases:                           # an epoch: a task schedule of n steps
        for step in phase:
            losses = loop.losses(tasks)            # batch -> loss (one task; every task with PCGrad)
            backward(losses)                       # (-> PCGrad: projected task gradients)
                                                   # (both: micro_steps; x N micro-batches with --accumulate,
                                                   #  the loss x the fp16 scale with --amp fp16)
            norms = clip(players)                  # (fp16: on the unscaled gradients)
            if finite(losses, norms): opt.step()   # the non-finite guard
                (ema.update())                     # --ema: the average of the weights (training/engine/ema.py)
            (elif fp16 overflow: the scaler's skip, counted apart; scaler.update())
            sched.step(); opt.zero_grad()
            log, checkpoint, time budget
        score dev -> keep the best (best/ on disk, or in memory)   (--ema: the EMA weights; raw_* scores too)
    load the best weights back

What a trainer does differently comes in as a function (how a step's losses are made, how dev is
scored) or as Players: GAN-BERT steps two optimizers, the discriminator's (with the encoder) and the
generator's, each on its own loss. Checkpoints, the guard, the time budget and the distributed
reductions are the small helpers below; training/engine/checkpointing.py holds the file format. So are
the two ways a step's gradients differ from one fp32 backward (Precision): --amp fp16's dynamic loss
scaling and --accumulate's micro-batches.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor
from tqdm import tqdm

from minbert.safetensors import load_safetensors
from training.engine import checkpointing, distributed, memory
from training.engine.checkpointing import TrainingStateError
from training.engine.distributed import World
from training.engine.ema import EMA
from training.engine.pcgrad import TaskGradientSum, pcgrad_backward
from training.engine.sampling import TaskScheduler


@dataclass
class Player:
    """An optimizer, its LR schedule, and the parameters its loss is differentiated by."""
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler | None
    params: list[Tensor]


@dataclass
class Precision:
    """How a step's gradients are made beyond one fp32 backward (the defaults: exactly that)."""
    scaler: torch.amp.GradScaler | None = None  # --amp fp16: dynamic loss scaling; None: fp32 or bf16, no scaling
    accumulate: int = 1  # --accumulate: micro-batches per optimizer step
    no_sync: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext  # DDP: skip the all-reduce

    @classmethod
    def of(cls, amp: str, device: str, accumulate: int = 1, no_sync=contextlib.nullcontext,
           say: Callable = print) -> Precision:
        """The settings of --amp (resolved: none, bf16 or fp16) and --accumulate on a device."""
        kind = torch.device(device).type
        if amp == "fp16" and kind == "cpu":
            say("note: --amp fp16 on a CPU is emulated, several times slower than fp32 (README, --amp): it is "
                "there to test the fp16 path; for speed leave out --amp")
        return cls(torch.amp.GradScaler(kind) if amp == "fp16" else None, accumulate, no_sync)

    def scaled(self, losses: list[Tensor]) -> list[Tensor]:
        """The losses to differentiate: / N (the micro-batches' gradients add up to the mean), x the
        fp16 loss scale. The same tensors when there is neither."""
        if self.accumulate > 1:
            losses = [loss / self.accumulate for loss in losses]
        return [self.scaler.scale(loss) for loss in losses] if self.scaler is not None else losses

    def unscale(self, players: list[Player]) -> None:
        """fp16: the gradients divided back by the scale (before clipping), overflows noted by the scaler."""
        if self.scaler is not None:
            for player in players:
                self.scaler.unscale_(player.opt)

    def overflowed(self, values: dict[str, float]) -> bool:
        """A non-finite step that is the scaler's to skip: finite losses, an overflow of the scaled
        gradients. At a scale of 1 or less the gradient itself is not finite: that is the guard's."""
        return (self.scaler is not None and all(map(math.isfinite, values.values()))
                and self.scaler.get_scale() > 1.0)

    def update(self) -> None:
        """fp16: halve the scale after an overflow, double it after growth_interval good steps."""
        if self.scaler is not None:
            self.scaler.update()


@dataclass
class Loop:
    model: torch.nn.Module
    players: list[Player]
    phases: list[tuple[str, list[tuple[str, int]], int, str]]  # (name, [(task, batches)], steps, schedule mode)
    losses: Callable[[list[str]], dict[str, Tensor]]  # a step's tasks -> {name: loss}, one per player or task
    evaluate: Callable[[], tuple[float, dict]] | None = None  # -> (score to keep the best by, history row)
    train_mode: Callable[[], None] | None = None  # default model.train()
    on_step: Callable[[int, dict], None] | None = None  # after every step: (step, loss values)
    seed: int = 0
    alpha: float = 0.75
    clip: float = 1.0
    pcgrad: tuple | None = None  # (shared params, params of each task, generator): PCGrad steps
    on_nonfinite: str = "stop"
    max_skips: int = 0
    time_budget: float | None = None  # minutes
    out_dir: Path | None = None  # log.jsonl, last/ and best/; None: no files, the best weights in memory
    save_every: int = 500
    log_every: int = 50
    options: dict = field(default_factory=dict)  # saved with every checkpoint
    world: World = field(default_factory=World)
    device: str = "cpu"
    state: dict = field(default_factory=dict)  # the checkpoint being resumed
    extra_state: Callable[[], dict] = dict  # the trainer's part of a checkpoint (data stream positions)
    generators: dict = field(default_factory=dict)  # torch generators saved with the RNG states
    smoothing: float = 0.98  # of the running losses shown and logged
    say: Callable = print
    desc: str = ""
    save_best: Callable[[Path, dict], None] | None = None  # with out_dir: (best/, info) -> writes model.safetensors
    release_every: int = 10  # steps between handing the heap's free pages back (training/engine/memory.py; 0: never)
    ema: EMA | None = None  # --ema: an average of the weights, updated every step; scored, kept and final
    precision: Precision = field(default_factory=Precision)  # --amp fp16's loss scaling, --accumulate


# ----------------------------------------------------------------------------- the step


def backward(losses: list[Tensor], players: list[Player], pcgrad: tuple | None = None, world: World = World(),
             isolate: bool = False, add: bool = False) -> None:
    """Gradients of the step's losses, into .grad of each player's parameters (isolate: of those
    parameters only, even with one player; add: to the .grad of an earlier micro-batch, --accumulate)."""
    if pcgrad is not None and len(losses) > 1:
        shared, task_params, generator = pcgrad
        if world.distributed:  # PCGrad projects the global task gradients, which DDP never sees
            losses = distributed.global_task_losses(losses, players[0].params, world)
        pcgrad_backward(losses, shared, task_params, generator=generator)
    elif len(players) == 1 and not isolate:
        losses[0].backward()  # DDP averages the gradients over ranks here
    else:  # each loss moves only its own player: GAN-BERT's G loss must not move D, nor D's loss G.
        # Both gradients first, then both steps: stepping D in place before G's backward would change
        # the weights G's graph still needs (and G would be judged by a D it never faced).
        for k, (loss, player) in enumerate(zip(losses, players)):
            grads = torch.autograd.grad(loss, player.params, retain_graph=k < len(losses) - 1, allow_unused=True)
            for p, g in zip(player.params, grads):
                # None (e.g. the pooler under [CLS] pooling): the optimizer skips p. Assigned, not added,
                # except to an earlier micro-batch's gradient (add): a step does not depend on zero_grad
                if not (add and p.grad is not None):
                    p.grad = g
                elif g is not None:
                    p.grad = p.grad + g


def micro_steps(loop: Loop, step_tasks: list[str]) -> dict[str, Tensor]:
    """The losses of an optimizer step, their gradients in .grad: one batch, or --accumulate N
    micro-batches whose gradients add up to those of their mean loss. Returns the losses (averaged
    over the micro-batches). Under DDP only the last micro-batch all-reduces; with PCGrad each task's
    gradient is summed over the micro-batches and projected once (the distributed reduction too):
    projecting every micro-batch and summing would not be PCGrad at the full batch."""
    precision, world, n = loop.precision, loop.world, loop.precision.accumulate
    if n == 1:
        losses = loop.losses(step_tasks)
        backward(precision.scaled(list(losses.values())), loop.players, loop.pcgrad, world)
        return losses
    sums = TaskGradientSum(*loop.pcgrad[:2]) if loop.pcgrad is not None and len(step_tasks) > 1 else None
    mean: dict[str, Tensor] = {}
    for m in range(n):
        with precision.no_sync() if m < n - 1 else contextlib.nullcontext():
            losses = loop.losses(step_tasks)
            scaled = precision.scaled(list(losses.values()))
            if sums is not None:
                sums.add(scaled)
            else:
                backward(scaled, loop.players, None, world, add=m > 0)
        mean = {t: mean.get(t, 0.0) + loss.detach() / n for t, loss in losses.items()}
    if sums is not None:
        sums.backward(loop.pcgrad[2], (lambda ts: distributed.all_reduce_mean(ts, world)) if world.distributed
                      else None)
    return mean


def clip(players: list[Player], max_norm: float) -> list[float]:
    """Clip each player's gradient norm to max_norm (0: off); returns the norms before clipping."""
    norms = []
    for player in players:
        grads = [p for p in player.params if p.grad is not None]
        norms.append(torch.nn.utils.clip_grad_norm_(grads, max_norm) if max_norm
                     else torch.nn.utils.get_total_norm([p.grad for p in grads]))
    return [float(n) for n in norms]


def agree(loop: Loop, losses: dict[str, Tensor], t0: float) -> tuple[dict[str, float], bool]:
    """The global loss of each name and whether the time budget is spent, in one collective call,
    so that every rank takes the same decisions (skip, stop)."""
    late = float(bool(loop.time_budget) and time.time() - t0 > loop.time_budget * 60)
    *values, late = distributed.all_reduce([x.item() for x in losses.values()] + [late], loop.world, loop.device)
    return dict(zip(losses, (v / loop.world.world_size for v in values))), late > 0  # sum of weighted means / R


def nonfinite_error(loop: Loop, step: int, values: dict, norms: list[float], skipped: int) -> SystemExit:
    last = loop.out_dir / "last" if loop.out_dir else None
    saved = checkpointing.saved_step(last) if last else None
    where = f"{last} (step {saved}) is intact" if saved is not None else "no checkpoint was saved yet"
    why = ("--on-nonfinite stop, the default without --amp bf16 or fp16" if loop.on_nonfinite == "stop" else
           f"{skipped} steps skipped, more than --max-skips {loop.max_skips}")
    return SystemExit(f"error: step {step + 1}: the loss or the gradient is not finite ("
                      + ", ".join(f"{t} loss {v}" for t, v in values.items())
                      + f", gradient norm {', '.join(map(str, norms))}); stopped ({why}). The last good checkpoint "
                      f"{where}. Lower --lr or check the data, then continue with --resume, or pass "
                      "--on-nonfinite skip to skip such steps")


# ----------------------------------------------------------------------------- files


def save_last(loop: Loop, progress: dict) -> None:
    """last/: the whole training state (checkpointing.py), on rank 0, with every rank's RNG states."""
    rngs = distributed.all_gather_object(checkpointing.rng_state(loop.generators), loop.world)
    if not loop.world.is_main:
        return
    opt_tensors, opt_meta = checkpointing.optimizer_state(loop.players[0].opt)
    tensors = {"model": loop.model.state_dict(), "optimizer": opt_tensors}
    extra = {}
    if loop.ema is not None:
        tensors["ema"], extra = loop.ema.state_dict(), {"ema_updates": loop.ema.updates}
    if loop.precision.scaler is not None:  # fp16: the loss scale and its growth counter (plain numbers)
        extra["scaler"] = loop.precision.scaler.state_dict()
    checkpointing.save(loop.out_dir / "last", tensors, dict(
        progress, **loop.extra_state(), **extra, lr_schedule=loop.players[0].sched.state_dict(), optimizer=opt_meta,
        rng=rngs, options=loop.options, world_size=loop.world.world_size))


def load_last(last: Path, model, player: Player, generators: dict, world: World, options: dict,
              may_change: set[str], restore: Callable[[dict], None] = lambda state: None,
              defaults: dict | None = None, ema: EMA | None = None,
              scaler: torch.amp.GradScaler | None = None) -> dict:
    """Restore model, optimizer, schedule, RNGs, the EMA weights, the fp16 loss scale and (restore(state))
    the trainer's part from last/ (made by save_last); returns its state. defaults: the options' defaults,
    for options newer than the checkpoint (checkpointing.check_resumable). A checkpoint without a scale
    (written without --amp fp16, which may change on --resume) leaves the scaler at its start."""
    state, tensors = checkpointing.load(last)
    checkpointing.check_resumable(state, options, world.world_size, last, may_change, defaults)
    try:
        model.load_state_dict(tensors["model"])
        checkpointing.load_optimizer_state(player.opt, tensors["optimizer"], state["optimizer"])
        player.sched.load_state_dict(state["lr_schedule"])
        checkpointing.set_rng_state(state["rng"][world.rank], generators)
        if ema is not None:
            ema.load_state_dict(tensors["ema"], state["ema_updates"])
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        restore(state)
    except (KeyError, IndexError, RuntimeError, ValueError) as e:
        raise TrainingStateError(f"{last}: the checkpoint does not fit this run ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0]}); start again with --overwrite") from None
    return state


def open_log(loop: Loop, overwrite: bool, resume: bool):
    """log.jsonl for appending (rank 0): emptied on --overwrite, cut back to the checkpoint on --resume."""
    out_dir, state = loop.out_dir, loop.state
    if overwrite and not state:
        for old in (out_dir / "last", out_dir / "best", out_dir / "log.jsonl"):
            shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    path, keep = out_dir / "log.jsonl", state.get("log_bytes", 0)
    if resume and path.is_file() and path.stat().st_size > keep:
        os.truncate(path, keep)  # rows after the checkpoint are written again
    return open(path, "a", encoding="utf-8")


def stop_on_sigterm() -> None:
    """SIGTERM (schedulers, spot instances) stops a run the way Ctrl-C does: KeyboardInterrupt."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupt)


# ----------------------------------------------------------------------------- weight averaging (--ema)


def ema_weights(loop: Loop) -> contextlib.AbstractContextManager:
    """The EMA weights in the model for a `with` block, the raw ones restored after it (no EMA: a no-op)."""
    return loop.ema.applied(loop.model) if loop.ema is not None else contextlib.nullcontext()


def dev_scores(loop: Loop) -> tuple[float, dict]:
    """loop.evaluate() of the weights; with an EMA, of the EMA weights (they are kept and scored), and of
    the raw weights too, as raw_* entries of the row: one run shows what the average gains."""
    if loop.ema is None:
        return loop.evaluate()
    loop.say("  raw weights:")
    _, raw = loop.evaluate()
    loop.say("  EMA weights:")
    with ema_weights(loop):
        key, row = loop.evaluate()
    return key, {**row, **{f"raw_{k}": v for k, v in raw.items()}}


# ----------------------------------------------------------------------------- the loop


def fit(loop: Loop, log=None) -> dict:
    """Train through every phase; returns {"history", "best", "best_epoch", "minutes", "stopped", "step"}. log: an open
    log.jsonl (or None). With loop.out_dir the best weights are in best/, else in memory; either
    way they are loaded into the model at the end."""
    state, world, model = loop.state, loop.world, loop.model
    step, best, history = state.get("step", 0), state.get("best"), state.get("history", [])
    best_epoch = state.get("best_epoch")  # the epoch (1-based) whose weights are kept
    running, skipped, overflows = state.get("running", {}), state.get("skipped", 0), state.get("overflows", 0)
    t0 = time.time() - state.get("elapsed", 0.0)
    best_state, stopped = None, False

    def record(**row):
        if log:
            log.write(json.dumps(row) + "\n")
            log.flush()

    def progress(phase: int, phase_step: int, order, done: bool = False) -> dict:
        return dict(step=step, phase=phase, phase_step=phase_step, done=done, order=order and order.state_dict(),
                    running=running, best=best, best_epoch=best_epoch, history=history, skipped=skipped,
                    **({"overflows": overflows} if loop.precision.scaler is not None else {}), elapsed=time.time() - t0,
                    log_bytes=log.tell() if log else 0)

    start = state.get("phase", 0) if not state.get("done") else len(loop.phases)
    for epoch in range(start, len(loop.phases)):
        name, tasks, n_steps, mode = loop.phases[epoch]
        (loop.train_mode or model.train)()
        # The same seed on every rank: all ranks train the same task at every step.
        order = TaskScheduler({t: n for t, n in tasks}, mode=mode, alpha=loop.alpha, steps=n_steps,
                              seed=loop.seed + epoch)
        first = state.get("phase_step", 0) if epoch == start else 0
        if first and state.get("order"):
            order.load_state_dict(state["order"])
        bar = tqdm(range(first, n_steps), initial=first, total=n_steps, disable=not world.is_main,
                   desc=f"{loop.desc}epoch {epoch + 1}/{len(loop.phases)} {name}", dynamic_ncols=True)
        for k in bar:
            step_tasks = [t for t, _ in tasks] if loop.pcgrad and len(tasks) > 1 else [next(order)]
            losses = micro_steps(loop, step_tasks)
            loop.precision.unscale(loop.players)
            norms = clip(loop.players, loop.clip)
            values, late = agree(loop, losses, t0)
            if all(map(math.isfinite, [*values.values(), *norms])):
                for t, v in values.items():
                    running[t] = loop.smoothing * running.get(t, v) + (1 - loop.smoothing) * v
                for player in loop.players:
                    player.opt.step()
                if loop.ema is not None:
                    loop.ema.update(model)
            elif loop.precision.overflowed(values):  # fp16: expected now and then; the scale halves below
                overflows += 1
                record(step=step + 1, skipped="fp16 overflow", total_overflows=overflows,
                       scale=loop.precision.scaler.get_scale())
            else:  # no update; the step still counts (its batches are used, the LR schedule moves on)
                skipped += 1
                record(step=step + 1, skipped="non-finite", total_skipped=skipped, norm=", ".join(map(str, norms)),
                       **{f"loss_{t}": str(v) for t, v in values.items()})
                if loop.on_nonfinite == "stop" or skipped > loop.max_skips:
                    raise nonfinite_error(loop, step, values, norms, skipped)
                loop.say(f"step {step + 1}: non-finite loss or gradient, step skipped ({skipped} so far)")
            loop.precision.update()
            for player in loop.players:
                player.sched.step()
                player.opt.zero_grad(set_to_none=True)
            step += 1
            memory.release(step, loop.release_every)
            if loop.on_step:
                loop.on_step(step, values)
            if step % loop.log_every == 0:
                bar.set_postfix({t: f"{v:.3f}" for t, v in running.items()})
                record(step=step, epoch=epoch + 1, lr=loop.players[0].sched.get_last_lr()[-1],
                       **{f"loss_{t}": v for t, v in running.items()})
            if loop.out_dir and step % loop.save_every == 0:
                save_last(loop, progress(epoch, k + 1, order))
            if late:
                loop.say(f"time budget of {loop.time_budget} min reached at step {step}")
                stopped = True
                break
        if loop.evaluate is not None:
            key, row = dev_scores(loop)
            memory.release()  # evaluation's batches (128 examples) leave the largest holes
            history.append(dict(epoch=epoch + 1, phase=name, step=step, minutes=round((time.time() - t0) / 60, 2),
                                **row))
            record(eval="dev", **history[-1])
            if best is None or key > best:
                best, best_epoch = key, epoch + 1
                with ema_weights(loop):  # the scored weights are the kept ones
                    if loop.out_dir is None:
                        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    elif world.is_main:
                        loop.save_best(loop.out_dir / "best", {"options": loop.options, "dev": row,
                                                               "epoch": epoch + 1})
        if loop.out_dir:
            save_last(loop, progress(epoch + 1, 0, None, done=stopped or epoch + 1 == len(loop.phases)))
        if stopped:
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    elif loop.out_dir and loop.evaluate is not None and world.is_main:
        model.load_state_dict(load_safetensors(loop.out_dir / "best" / "model.safetensors"))
    elif loop.ema is not None:  # nothing was kept (no dev scores, or not rank 0): the average is final
        loop.ema.copy_to(model)
    return {"history": history, "best": best, "best_epoch": best_epoch, "minutes": (time.time() - t0) / 60, "stopped": stopped,
            "step": step, **({"overflows": overflows} if loop.precision.scaler is not None else {})}
