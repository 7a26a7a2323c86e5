"""The step-time cost of --rdrop: plain steps and R-Drop steps on the same batches, interleaved in one
process (plain, rdrop, plain, rdrop, ... on batch 1, 2, ...), so that load on the machine hits both alike.

    python docs/results/quality/rdrop_step_cost.py --steps 100 [run_multitask options, e.g. --threads 1]

The R-Drop steps use --rdrop ALPHA (default here 1; the weight does not change the cost).
A step is what training/loop.fit does per step: forward, loss, backward, clip, AdamW step, zero_grad.
The batches are the first ones of a run with these options (its task schedule and data streams).
Prints the seconds per step of each, and the ratio rdrop / plain overall and per task.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from training.multitask import options, tasks
from training.multitask.recipe import build, rdrop_loss, task_output
from training.engine.sampling import TaskScheduler


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100, help="timed steps of each kind")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps of each kind first")
    own, rest = p.parse_known_args()
    args = options.parse_args(rest)
    alpha = args.rdrop or 1.0  # the R-Drop steps' weight: --rdrop, else 1
    run = build(args)
    model, opt = run.model.train(), run.player.opt
    phase = run.phases[0]
    order = TaskScheduler(dict(phase.batches), mode=phase.mode, alpha=phase.alpha, steps=phase.steps, seed=phase.seed)
    batches = []
    for _ in range(own.warmup + own.steps):
        t = next(order)
        batches.append((t, next(run.streams[t])[0]))

    def step(t: str, batch: dict, rdrop: bool) -> float:
        t0 = time.perf_counter()
        labels = batch["labels"].to(args.device)
        loss = (rdrop_loss(model, t, batch, labels, alpha, args) if rdrop else
                tasks.TASKS[t].loss(task_output(model, t, batch, args), labels))
        loss.backward()
        torch.nn.utils.clip_grad_norm_([q for q in model.parameters() if q.grad is not None], args.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    times = {False: [], True: []}
    for k, (t, batch) in enumerate(batches):
        for rdrop in (False, True):
            s = step(t, batch, rdrop)
            if k >= own.warmup:
                times[rdrop].append((t, s))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, amp {args.amp}, batch {args.batch_size}, "
          f"max length {args.max_length}, {own.steps} timed steps of each kind after {own.warmup} warm-up")
    for label, keep in [("all", None), *[(t, t) for t in args.tasks]]:
        plain = [s for t, s in times[False] if keep in (None, t)]
        rd = [s for t, s in times[True] if keep in (None, t)]
        if plain:
            print(f"{label:>6}: {len(plain):3d} steps  plain {sum(plain) / len(plain):.3f} s/step  rdrop "
                  f"{sum(rd) / len(rd):.3f} s/step  ratio {sum(rd) / sum(plain):.2f} "
                  f"(median of per-batch ratios {statistics.median(r / q for q, r in zip(plain, rd)):.2f})")


if __name__ == "__main__":
    main()
