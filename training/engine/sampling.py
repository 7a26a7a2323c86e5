"""Task schedules for multitask training: which task's batch to train on at each step.

Three ways to mix tasks whose data sets differ wildly in size (Quora paraphrase has ~40x more pairs
than STS):
- "round_robin": one batch of each task in turn. Equal updates per task; the small tasks are
  cycled many times per pass over the large one (they overfit first).
- "proportional": i.i.d. draws with P(task) proportional to size^alpha (Clark et al. 2019, "BAM!",
  use alpha = 0.75). alpha = 1 samples like one concatenated data set (the large task dominates),
  alpha = 0 is uniform, values in between shift steps toward the small tasks.
- "sequential": all of task A's batches, then all of B's, ... (e.g. extra epochs on one task after
  multitask training). Forgetting of the earlier tasks is the known risk.
"""
from __future__ import annotations

import numpy as np

MODES = ("round_robin", "proportional", "sequential")


def _check_sizes(sizes: dict[str, int]) -> None:
    if not isinstance(sizes, dict) or len(sizes) == 0:
        raise ValueError("sizes must be a non-empty dict {task_name: number_of_batches}, "
                         f"got {sizes!r}")
    for name, n in sizes.items():
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n <= 0:
            raise ValueError(f"sizes[{name!r}] = {n!r}; every task needs a positive integer size "
                             "(drop tasks with no data)")


def task_probabilities(sizes: dict[str, int], alpha: float = 0.75) -> dict[str, float]:
    """P(task) = |D_task|^alpha / sum_t |D_t|^alpha, the "proportional" schedule's distribution."""
    _check_sizes(sizes)
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0 (0 = uniform, 1 = proportional to size), got {alpha}")
    w = np.array([float(n) for n in sizes.values()]) ** alpha
    return dict(zip(sizes, (w / w.sum()).tolist()))


class TaskScheduler:
    """Iterator over task names, one per training step; deterministic given the seed and resumable.

    sizes: {task: number of batches} (the order of the dict fixes round-robin and sequential order).
    steps: total steps; None means sum(sizes), one pass over every task's batches. round_robin and
    sequential cycle when steps exceed one pass.
    """

    def __init__(self, sizes: dict[str, int], mode: str = "proportional", alpha: float = 0.75,
                 steps: int | None = None, seed: int = 0):
        _check_sizes(sizes)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if steps is None:
            steps = sum(int(n) for n in sizes.values())
        if not isinstance(steps, (int, np.integer)) or steps < 0:
            raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
        self.sizes = {name: int(n) for name, n in sizes.items()}
        self.names = list(self.sizes)
        self.mode, self.alpha, self.steps, self.seed = mode, float(alpha), int(steps), seed
        self.probs = task_probabilities(self.sizes, alpha)
        self._cdf = np.cumsum([self.probs[n] for n in self.names])
        # sequential: step s of a pass belongs to the first task whose cumulative size exceeds s
        self._bounds = np.cumsum([self.sizes[n] for n in self.names])
        self.rng = np.random.default_rng(seed)
        self.position = 0

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> "TaskScheduler":
        return self

    def __next__(self) -> str:
        if self.position >= self.steps:
            raise StopIteration
        s = self.position
        if self.mode == "round_robin":
            k = s % len(self.names)
        elif self.mode == "sequential":
            k = int(np.searchsorted(self._bounds, s % self._bounds[-1], side="right"))
        else:
            # inverse-CDF draw; min() guards against the last cdf entry rounding to just below 1
            k = min(int(np.searchsorted(self._cdf, self.rng.random(), side="right")), len(self.names) - 1)
        self.position += 1
        return self.names[k]

    def state_dict(self) -> dict:
        # plain ints/strs/dicts only: survives torch.save(weights_only=True) and json
        return {"position": self.position, "rng": self.rng.bit_generator.state, "sizes": dict(self.sizes),
                "mode": self.mode, "alpha": self.alpha, "steps": self.steps, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        for key in ("sizes", "mode", "alpha", "steps"):
            if state[key] != getattr(self, key):
                raise ValueError(f"cannot resume: checkpoint has {key}={state[key]!r} but this scheduler has "
                                 f"{getattr(self, key)!r}; build the scheduler with the checkpoint's settings")
        self.position = int(state["position"])
        self.rng.bit_generator.state = state["rng"]
