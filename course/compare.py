"""The checker's comparisons: one TestResult per graded test, with a message that names the shape,
the worst element and what to check. Only torch: the checker never imports student code.

What a step is compared with arrives as tensors (`Expected`): the reference outputs and the outputs of
each known mistake, made by the instructors' producers (course/checks_*.py) on fresh secret inputs, or
read from the release's stored public checks (course/public/). Nothing here computes a reference.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

Tensor = torch.Tensor
ATOL = RTOL = 1e-5
MISTAKE = "~"  # "test.key~step01.no_scaling": the output of that known mistake for that expected tensor


@dataclass
class TestResult:
    name: str
    outcome: str        # passed | failed | error
    message: str = ""   # why it failed: the first line is the hint
    mistake: str | None = None  # the catalogued mistake this failure is (root causes only)
    mistake_text: str = ""


@dataclass
class Expected:
    """A step's expected tensors ("test.key"), each known mistake's output ("test.key~id") and the
    mistakes' descriptions (id -> text)."""
    tensors: dict[str, Tensor] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)

    def put(self, key: str, value: Tensor, mistakes: dict[str, tuple[str, Tensor]] | None = None) -> None:
        """mistakes: id -> (description, that mistake's output for the same inputs)."""
        self.tensors[key] = value.detach()
        for mid, (text, wrong) in (mistakes or {}).items():
            self.tensors[f"{key}{MISTAKE}{mid}"] = wrong.detach()
            self.texts[mid] = text

    def __getitem__(self, key: str) -> Tensor:
        return self.tensors[key]

    def mistakes(self, key: str) -> list[tuple[str, Tensor]]:
        prefix = key + MISTAKE
        return [(k[len(prefix):], v) for k, v in self.tensors.items() if k.startswith(prefix)]


class Judge:
    """Collects the results of one step. `got(test, key)` is the runner's tensor, or None after
    recording the failure (the runner's exception, or a missing output)."""

    def __init__(self, outputs: dict[str, Tensor], errors: dict[str, str], expected: Expected):
        self.outputs, self.errors, self.e, self.results = outputs, errors, expected, []
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

    def fail(self, test: str, message: str, outcome: str = "failed", mistake: str | None = None) -> None:
        if test not in self._failed:
            self._failed.add(test)
            # a mistake named by the verdict's own logic (no stored output) is described by its hint
            text = (self.e.texts.get(mistake) or message.strip().split("\n")[0]) if mistake else ""
            self.results.append(TestResult(test, outcome, message, mistake, text))

    def check(self, test: str, cond: bool, message: str, mistake: str | None = None) -> bool:
        if not cond:
            self.fail(test, message, mistake=mistake)
        return cond

    def close(self, test: str, what: str, got: Tensor | None, key: str, hint: str = "", atol: float = ATOL,
              rtol: float = RTOL, expected: Tensor | None = None, mistake: str | None = None) -> bool:
        """got against the expected tensor `key` (or `expected`, a slice of it). On a failure the
        first known mistake of `key` that got matches names itself; otherwise `hint` (and `mistake`)."""
        if got is None:
            return False
        problem = difference(what, got, self.e[key] if expected is None else expected, "", atol, rtol)
        if problem:
            found = self.likely_mistake(got, key)
            if found:
                hint, mistake = f"Your output matches {self.e.texts[found]}.", found
            problem = difference(what, got, self.e[key] if expected is None else expected, hint, atol, rtol)
            self.fail(test, problem, mistake=mistake)
        return not problem

    def likely_mistake(self, got: Tensor | None, key: str, atol: float = 1e-4, rtol: float = 1e-4) -> str | None:
        """The id of the first known mistake of `key` whose output `got` matches, or None."""
        for mid, wrong in self.e.mistakes(key):
            if matches(got, wrong, atol, rtol):
                return mid
        return None

    def done(self, tests: list[str], depends: dict[str, list[str]] | None = None) -> list[TestResult]:
        """Every listed test that did not fail passed; results in the listed order. One root cause,
        one hint: a failed test that depends (directly or not) on a failed test says so instead of
        guessing a mistake of its own; it still fails, so scoring is unchanged."""
        by_name = {r.name: r for r in self.results}
        results = [by_name.get(t, TestResult(t, "passed")) for t in tests]
        failed = {r.name for r in results if r.outcome != "passed"}
        for r in results:
            first = next((p for p in prerequisites(r.name, depends or {}) if p in failed), None)
            if r.outcome != "passed" and first is not None:
                detail = r.message.strip()
                r.message = (f"fix the first failure first: this test builds on {first!r}, which failed"
                             + (f"\n{detail}" if detail else ""))
                r.mistake, r.mistake_text = None, ""
        return results


def prerequisites(test: str, depends: dict[str, list[str]]) -> list[str]:
    """The tests `test` builds on, nearest first, transitively."""
    seen: list[str] = []
    todo = list(depends.get(test, []))
    while todo:
        t = todo.pop(0)
        if t not in seen and t != test:
            seen.append(t)
            todo += depends.get(t, [])
    return seen


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


def matches(got: Tensor | None, wrong: Tensor | None, atol: float = 1e-4, rtol: float = 1e-4) -> bool:
    return (isinstance(got, Tensor) and isinstance(wrong, Tensor) and got.shape == wrong.shape
            and bool(torch.isfinite(got.double()).all())
            and torch.allclose(got.double(), wrong.double(), atol=atol, rtol=rtol))
