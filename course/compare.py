"""The checker's comparisons: one TestResult per graded test, with a message that names the shape,
the worst element and what to check. Only torch: the checker never imports student code."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

Tensor = torch.Tensor
ATOL = RTOL = 1e-5


@dataclass
class TestResult:
    name: str
    outcome: str        # passed | failed | error
    message: str = ""   # why it failed: the first line is the hint


class Judge:
    """Collects the results of one step. `got(test, key)` is the runner's tensor, or None after
    recording the failure (the runner's exception, or a missing output)."""

    def __init__(self, outputs: dict[str, Tensor], errors: dict[str, str]):
        self.outputs, self.errors, self.results = outputs, errors, []
        self._failed: set[str] = set()

    def got(self, test: str, key: str = "y") -> Tensor | None:
        if test in self._failed:
            return None
        if test in self.errors:
            self.fail(test, self.errors[test], outcome="error")
            return None
        value = self.outputs.get(f"{test}.{key}")
        if value is None:
            self.fail(test, f"the probe returned no {key!r} for this test (did the code return None?)")
        return value

    def fail(self, test: str, message: str, outcome: str = "failed") -> None:
        if test not in self._failed:
            self._failed.add(test)
            self.results.append(TestResult(test, outcome, message))

    def check(self, test: str, cond: bool, message: str) -> bool:
        if not cond:
            self.fail(test, message)
        return cond

    def close(self, test: str, what: str, got: Tensor | None, expected: Tensor,
              hint: str | Callable[[], str] = "", atol: float = ATOL, rtol: float = RTOL) -> bool:
        """hint may be a function: the typical-mistake candidates are computed only on a failure."""
        if got is None:
            return False
        problem = difference(what, got, expected, "", atol, rtol)
        if problem:
            problem = difference(what, got, expected, hint() if callable(hint) else hint, atol, rtol)
        if problem:
            self.fail(test, problem)
        return not problem

    def done(self, tests: list[str]) -> list[TestResult]:
        """Every listed test that did not fail passed; results in the listed order."""
        by_name = {r.name: r for r in self.results}
        return [by_name.get(t, TestResult(t, "passed")) for t in tests]


def difference(what: str, got: Tensor, expected: Tensor, hint: str = "", atol: float = ATOL,
               rtol: float = RTOL) -> str:
    """'' when close; otherwise a message with the shape, the worst element and the hint."""
    if not isinstance(got, Tensor):
        return f"{what}: expected a tensor of shape {tuple(expected.shape)}, got {type(got).__name__}"
    if got.shape != expected.shape:
        detail = f"{what} has shape {tuple(got.shape)} but the reference has shape {tuple(expected.shape)}."
        return f"{hint}\n{detail}" if hint else detail
    if got.dtype == torch.bool or expected.dtype == torch.bool:
        got, expected = got.to(torch.float64), expected.to(torch.float64)
    g, e = got.detach().double(), expected.detach().double()
    if not torch.isfinite(g).all():
        at = [int(i) for i in (~torch.isfinite(g)).nonzero()[0]]
        return f"{what} {tuple(g.shape)} contains {g[tuple(at)].item()} at {at}. {hint}".strip()
    if g.numel() == 0:
        return ""
    diff = (g - e).abs()
    bad = diff > atol + rtol * e.abs()
    if not bad.any():
        return ""
    at = [int(i) for i in torch.nonzero(diff == diff.max())[0]]
    detail = (f"{what} {tuple(g.shape)} differs from the reference: max |diff| {diff.max().item():.3g} at {at} "
              f"(got {g[tuple(at)].item():.5g}, expected {e[tuple(at)].item():.5g}; tolerance {atol:g} + {rtol:g}*|x|); "
              f"{int(bad.sum())} of {bad.numel()} values differ.")
    return f"{hint}\n{detail}" if hint else detail  # the hint first: the score table shows the first line


def likely_mistake(got: Tensor | None, candidates: dict[str, Callable[[], Tensor]], default: str,
                   atol: float = 1e-4, rtol: float = 1e-4) -> str:
    """If `got` matches one of the typical wrong outputs, say which; otherwise `default`."""
    for description, make in candidates.items():
        try:
            wrong = make()
        except Exception:  # a candidate that cannot be computed says nothing
            continue
        if isinstance(got, Tensor) and got.shape == wrong.shape and torch.allclose(
                got.detach().double(), wrong.detach().double(), atol=atol, rtol=rtol):
            return f"Your output matches {description}."
    return default


def matches(got: Tensor | None, wrong: Tensor, atol: float = 1e-4) -> bool:
    return (isinstance(got, Tensor) and got.shape == wrong.shape
            and torch.allclose(got.double(), wrong.double(), atol=atol, rtol=1e-4))
