"""The one training loop of run_multitask, run_classifier, run_distill, run_gan and run_mlm.

    for phase in phases:                           # an epoch: a task schedule of n steps
        for step in phase:
            losses = loop.losses(tasks)            # batch -> loss (one task; every task with PCGrad)
            backward(losses)                       # (-> PCGrad: projected task gradients)
                                                   # (both: micro_steps; x N micro-batches with --accumulate,
                                                   #  the loss x the fp16 scale with --amp fp16)
            norms = clip(players)                  # (fp16: on the unscaled gradients)
            if finite(losses, norms): opt.step()   # the non-finite guard (Guard)
                (ema.update())                     # --ema: the average of the weights (training/engine/ema.py)
            (elif fp16 overflow: the scaler's skip, counted apart; scaler.update())
            sched.step(); opt.zero_grad()
            log, checkpoint, time budget
        score dev -> keep the best (best/ in the run folder, or in memory)   (--ema: the EMA weights; raw_* too)
    load the best weights back

What a trainer does differently comes in as a function (how a step's losses are made, how dev is
scored) or as Players: GAN-BERT steps two optimizers, the discriminator's (with the encoder) and the
generator's, each on its own loss. The run folder (log, checkpoints, resume state) is
checkpointing.RunFolder, run_multitask's alone. The guard, the time budget and the distributed
reductions are the small helpers below. So are the two ways a step's gradients differ from one fp32
backward (Precision): --amp fp16's dynamic loss scaling and --accumulate's micro-batches.
"""
from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor
from tqdm import tqdm

from minbert.safetensors import load_safetensors
from training.engine import checkpointing, distributed, memory
from training.engine.checkpointing import RunFolder
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


@dataclass(frozen=True)
class Phase:
    """An epoch: `steps` optimizer steps, each on a task the schedule draws (training/engine/sampling.py)."""
    name: str
    batches: dict[str, int]  # task -> its batches in the epoch: the schedule's weights
    steps: int
    mode: str = "round_robin"  # the schedule: round_robin, proportional or annealed
    seed: int = 0  # the schedule's draws (the same on every rank: all ranks train the same task)
    alpha: float = 0.75  # annealed sampling's exponent


@dataclass
class Guard:
    """When a step does not update, and when training stops early."""
    on_nonfinite: str = "stop"  # a non-finite loss or gradient: "stop" the run, or "skip" the step
    max_skips: int = 0  # "skip": stop after more skipped steps than this
    time_budget: float | None = None  # minutes of training, then evaluate and stop; None: every step


@dataclass
class Report:
    """What the loop shows and logs."""
    log_every: int = 50  # steps between rows of log.jsonl (and the progress bar's losses)
    smoothing: float = 0.98  # of the running losses shown and logged
    say: Callable = print
    desc: str = ""  # the progress bar's prefix


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
            say("note: --amp fp16 on a CPU is emulated, several times slower than fp32 (docs/USAGE.md, --amp): it is "
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
    phases: list[Phase]
    losses: Callable[[list[str]], dict[str, Tensor]]  # a step's tasks -> {name: loss}, one per player or task
    evaluate: Callable[[], tuple[float, dict]] | None = None  # -> (score to keep the best by, history row)
    train_mode: Callable[[], None] | None = None  # default model.train()
    on_step: Callable[[int, dict], None] | None = None  # after every step: (step, loss values)
    clip: float = 1.0  # each player's gradient norm cap (0: off)
    pcgrad: tuple | None = None  # (shared params, params of each task, generator): PCGrad steps
    guard: Guard = field(default_factory=Guard)
    report: Report = field(default_factory=Report)
    precision: Precision = field(default_factory=Precision)  # --amp fp16's loss scaling, --accumulate
    world: World = field(default_factory=World)
    ema: EMA | None = None  # --ema: an average of the weights, updated every step; scored, kept and final
    run: RunFolder | None = None  # log.jsonl, last/ and best/; None: no files, the best weights in memory


def smooth(running: dict[str, float], values: dict[str, float], factor: float) -> dict[str, float]:
    """Exponential moving averages, in place: running[k] = factor * running[k] + (1 - factor) * v
    (the first value starts it)."""
    for k, v in values.items():
        running[k] = factor * running.get(k, v) + (1 - factor) * v
    return running


# ----------------------------------------------------------------------------- the step


def backward(losses: list[Tensor], players: list[Player], pcgrad: tuple | None = None, world: World = World(),
             add: bool = False) -> None:
    """Gradients of the step's losses, into .grad of each player's parameters (with several players, of
    those parameters only; add: to the .grad of an earlier micro-batch, --accumulate)."""
    if pcgrad is not None and len(losses) > 1:
        shared, task_params, generator = pcgrad
        if world.distributed:  # PCGrad projects the global task gradients, which DDP never sees
            losses = distributed.global_task_losses(losses, players[0].params, world)
        pcgrad_backward(losses, shared, task_params, generator=generator)
    elif len(players) == 1:
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
    budget = loop.guard.time_budget
    late = float(bool(budget) and time.time() - t0 > budget * 60)
    device = next(iter(losses.values())).device
    *values, late = distributed.all_reduce([x.item() for x in losses.values()] + [late], loop.world, device)
    return dict(zip(losses, (v / loop.world.world_size for v in values))), late > 0  # sum of weighted means / R


def nonfinite_error(loop: Loop, step: int, values: dict, norms: list[float], skipped: int) -> SystemExit:
    last = loop.run.path / "last" if loop.run else None
    saved = checkpointing.saved_step(last) if last else None
    where = f"{last} (step {saved}) is intact" if saved is not None else "no checkpoint was saved yet"
    why = ("--on-nonfinite stop, the default without --amp bf16 or fp16" if loop.guard.on_nonfinite == "stop" else
           f"{skipped} steps skipped, more than --max-skips {loop.guard.max_skips}")
    return SystemExit(f"error: step {step + 1}: the loss or the gradient is not finite ("
                      + ", ".join(f"{t} loss {v}" for t, v in values.items())
                      + f", gradient norm {', '.join(map(str, norms))}); stopped ({why}). The last good checkpoint "
                      f"{where}. Lower --lr or check the data, then continue with --resume, or pass "
                      "--on-nonfinite skip to skip such steps")


# ----------------------------------------------------------------------------- signals


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
    loop.report.say("  raw weights:")
    _, raw = loop.evaluate()
    loop.report.say("  EMA weights:")
    with ema_weights(loop):
        key, row = loop.evaluate()
    return key, {**row, **{f"raw_{k}": v for k, v in raw.items()}}


# ----------------------------------------------------------------------------- the loop


def save_last(loop: Loop, progress: dict) -> None:
    """last/ of the run folder: the whole training state (checkpointing.save_last)."""
    checkpointing.save_last(loop.run, loop.model, loop.players[0], loop.world, progress, loop.ema,
                            loop.precision.scaler)


def fit(loop: Loop) -> dict:
    """Train through every phase; returns {"history", "best", "best_epoch", "minutes", "stopped", "step"}.
    With a run folder (loop.run) the log goes to its log.jsonl (when open) and the best weights to best/;
    without, the best weights stay in memory. Either way they are loaded into the model at the end."""
    world, model, run = loop.world, loop.model, loop.run
    state, log = (run.state, run.log) if run else ({}, None)
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
        phase = loop.phases[epoch]
        name, n_steps = phase.name, phase.steps
        (loop.train_mode or model.train)()
        # The same seed on every rank: all ranks train the same task at every step.
        order = TaskScheduler(dict(phase.batches), mode=phase.mode, alpha=phase.alpha, steps=n_steps, seed=phase.seed)
        first = state.get("phase_step", 0) if epoch == start else 0
        if first and state.get("order"):
            order.load_state_dict(state["order"])
        bar = tqdm(range(first, n_steps), initial=first, total=n_steps, disable=not world.is_main,
                   desc=f"{loop.report.desc}epoch {epoch + 1}/{len(loop.phases)} {name}", dynamic_ncols=True)
        for k in bar:
            step_tasks = list(phase.batches) if loop.pcgrad and len(phase.batches) > 1 else [next(order)]
            losses = micro_steps(loop, step_tasks)
            loop.precision.unscale(loop.players)
            norms = clip(loop.players, loop.clip)
            values, late = agree(loop, losses, t0)
            if all(map(math.isfinite, [*values.values(), *norms])):
                smooth(running, values, loop.report.smoothing)
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
                if loop.guard.on_nonfinite == "stop" or skipped > loop.guard.max_skips:
                    raise nonfinite_error(loop, step, values, norms, skipped)
                loop.report.say(f"step {step + 1}: non-finite loss or gradient, step skipped ({skipped} so far)")
            loop.precision.update()
            for player in loop.players:
                player.sched.step()
                player.opt.zero_grad(set_to_none=True)
            step += 1
            memory.release(step)
            if loop.on_step:
                loop.on_step(step, values)
            if step % loop.report.log_every == 0:
                bar.set_postfix({t: f"{v:.3f}" for t, v in running.items()})
                record(step=step, epoch=epoch + 1, lr=loop.players[0].sched.get_last_lr()[-1],
                       **{f"loss_{t}": v for t, v in running.items()})
            if run and step % run.save_every == 0:
                save_last(loop, progress(epoch, k + 1, order))
            if late:
                loop.report.say(f"time budget of {loop.guard.time_budget} min reached at step {step}")
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
                    if run is None:
                        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    elif world.is_main:
                        run.save_best(run.path / "best", {"options": run.options, "dev": row,
                                                               "epoch": epoch + 1})
        if run:
            save_last(loop, progress(epoch + 1, 0, None, done=stopped or epoch + 1 == len(loop.phases)))
        if stopped:
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    elif run and loop.evaluate is not None and world.is_main:
        model.load_state_dict(load_safetensors(run.path / "best" / "model.safetensors"))
    elif loop.ema is not None:  # nothing was kept (no dev scores, or not rank 0): the average is final
        loop.ema.copy_to(model)
    return {"history": history, "best": best, "best_epoch": best_epoch, "minutes": (time.time() - t0) / 60, "stopped": stopped,
            "step": step, **({"overflows": overflows} if loop.precision.scaler is not None else {})}
