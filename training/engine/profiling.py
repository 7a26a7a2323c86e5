"""Where a training step's time goes: torch.profiler over a few steps of a real run.

    python training/run_multitask.py --tasks sst --epochs 1 --profile 40

profiles steps 21-60 (after 20 untimed steps: first-call allocations, oneDNN primitives), prints the
mean wall time per step and the ops by self CPU time, and lets the run go on. The table is what
docs/PERFORMANCE.md's step profiles are made of.
"""
from __future__ import annotations

import time
from typing import Callable

import torch


def step_profiler(steps: int, start: int = 20, rows: int = 25, say: Callable = print) -> Callable[[int, dict], None]:
    """An on_step hook (training/loop.Loop) that profiles steps start+1 .. start+steps."""
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    t0 = 0.0

    def on_step(step: int, values: dict) -> None:
        nonlocal t0
        if step == start:
            prof.__enter__()
            t0 = time.perf_counter()
        elif step == start + steps:
            prof.__exit__(None, None, None)
            ms = (time.perf_counter() - t0) / steps * 1e3
            say(f"\nprofile of steps {start + 1}-{start + steps}: {ms:.0f} ms per step (wall, profiler on)\n"
                + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40))
    return on_step
