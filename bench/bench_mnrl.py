"""What --quora-mnrl costs: the time of one Quora training step without and with the MNRL term, on the
same batches, in one process (docs/results/quality/mnrl-step-cost.txt).

    from bench.bench_mnrl import mnrl_step_cost, format_report
    print(format_report(mnrl_step_cost(["--device", "cpu", "--threads", "1"], batches=20)))

The run is built as run_multitask.py builds it (training/multitask/recipe.py `build`, --tasks quora), with
--quora-mnrl on so the batches carry the sentences' own encodings; the plain step simply leaves the
term out. A step: forward, the table's loss (+ WEIGHT x MNRL), backward, clipping, the optimizer step.
Each batch is timed both ways, in the order plain-on, on-plain, ... so that drift (other processes)
hits both alike. The weights move on with every step, as in training; timing does not depend on them.
"""
from __future__ import annotations

import statistics
import time

import torch

from training.multitask import options, tasks
from training.multitask.recipe import aux_output, build, task_output


def mnrl_step_cost(argv: list[str], batches: int = 20, warmup: int = 2, weight: float = 1.0) -> dict:
    """argv: run_multitask options (data, model, device, threads, ...) -> medians and their ratio."""
    args = options.parse_args([*argv, "--tasks", "quora", "--quora-mnrl", str(weight)])
    run = build(args)
    model, opt = run.model.train(), run.player.opt
    params = [p for p in model.parameters() if p.requires_grad]
    todo = [next(run.streams["quora"])[0] for _ in range(warmup + batches)]

    def step(batch: dict, mnrl: bool) -> float:
        t0 = time.perf_counter()
        loss = tasks.task_loss("quora", args)(task_output(model, "quora", batch, args), batch["labels"].to(args.device))
        if mnrl:
            loss = loss + args.quora_mnrl * aux_output(model, "quora", batch, args)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    times = {False: [], True: []}
    for i, batch in enumerate(todo):
        for mnrl in ((False, True) if i % 2 == 0 else (True, False)):
            t = step(batch, mnrl)
            if i >= warmup:
                times[mnrl].append(t)
    plain, on = statistics.median(times[False]), statistics.median(times[True])
    dups = [int((b["labels"] == 1).sum()) for b in todo[warmup:]]
    return {"model": args.model, "device": args.device, "threads": torch.get_num_threads(), "amp": args.amp,
            "batch_size": args.batch_size, "max_length": args.max_length, "batches": batches, "warmup": warmup,
            "mean_duplicates_per_batch": sum(dups) / len(dups), "batches_with_fewer_than_2": sum(d < 2 for d in dups),
            "plain_ms": [round(1000 * t, 1) for t in times[False]], "mnrl_ms": [round(1000 * t, 1) for t in times[True]],
            "plain_median_ms": round(1000 * plain, 1), "mnrl_median_ms": round(1000 * on, 1),
            "ratio_of_medians": round(on / plain, 3),
            "median_of_ratios": round(statistics.median(b / a for a, b in zip(times[False], times[True])), 3)}


def format_report(r: dict) -> str:
    return "\n".join([
        f"one Quora training step (cross-encoder head), {r['model']}, {r['device']}, {r['threads']} thread(s), "
        f"amp {r['amp']}, batch {r['batch_size']}, max length {r['max_length']}",
        f"{r['batches']} batches timed both ways (after {r['warmup']} untimed), "
        f"{r['mean_duplicates_per_batch']:.1f} duplicates per batch on average "
        f"({r['batches_with_fewer_than_2']} batches with fewer than 2: their MNRL term is 0, no extra pass)",
        f"plain step:              median {r['plain_median_ms']:.1f} ms",
        f"with --quora-mnrl:       median {r['mnrl_median_ms']:.1f} ms",
        f"step time on / plain:    {r['ratio_of_medians']:.3f} (ratio of medians), "
        f"{r['median_of_ratios']:.3f} (median of the per-batch ratios)"])
