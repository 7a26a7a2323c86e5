"""The grader: each step's test module runs in its own pytest subprocess, so an import error, a
crash or a hang costs only that step's points.

    python -m course.grade [--steps 1,2] [--json results.json] [--timeout 60] [--root DIR] [--jobs N]

Scoring is partial credit: points x (tests passed / tests in the step). A skipped test counts as not
passed (the grading environment must have everything a step needs); a module that does not import,
crashes or times out scores 0. --json writes Gradescope's results.json (one entry per step).
The subprocess runs with cwd=ROOT and ROOT first on PYTHONPATH, so the tree being graded supplies
`minbert` even where another copy is pip-installed (tests/graded/conftest.py double-checks).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .steps import Step, get_steps

REPO = Path(__file__).resolve().parents[1]


@dataclass
class TestResult:
    name: str
    outcome: str        # passed | failed | error | skipped
    message: str = ""   # the failure's exception lines, without the traceback


@dataclass
class StepResult:
    step: Step
    status: str                      # passed | partial | failed | timeout | crashed | missing
    tests: list[TestResult] = field(default_factory=list)
    log: str = ""                    # pytest's output when something went wrong outside the tests
    seconds: float = 0.0

    @property
    def passed(self) -> int:
        return sum(t.outcome == "passed" for t in self.tests)

    @property
    def score(self) -> float:
        if not self.tests or self.status in ("timeout", "crashed", "missing"):
            return 0.0
        return round(self.step.points * self.passed / len(self.tests), 2)

    @property
    def hint(self) -> str:
        """First line of the first failure, or of what went wrong."""
        failed = [t.message.strip() or t.outcome for t in self.tests if t.outcome != "passed"]
        text = failed[0] if failed else self.log.strip()
        return text.splitlines()[0] if text else ""

    def output(self) -> str:
        """Readable per-step report: one line per test, the failure messages in full."""
        lines = [f"Step {self.step.number}: {self.step.name} -- {self.step.description}",
                 f"{self.passed}/{len(self.tests)} tests passed, {self.score:g}/{self.step.points:g} points"]
        if self.log:
            lines.append(self.log.strip())
        for t in self.tests:
            lines.append(f"{'PASS' if t.outcome == 'passed' else t.outcome.upper()}  {t.name}")
            if t.outcome != "passed" and t.message:
                lines += ["    " + m for m in t.message.strip().splitlines()[:20]]
        return "\n".join(lines)


def step_env(root: Path) -> dict[str, str]:
    """Environment for a step's subprocess: ROOT first on the import path, one thread (tiny tensors;
    the whole table must grade in well under a minute on two shared cores)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [env.get("PYTHONPATH")])])
    # No third-party pytest plugins: grading stays hermetic and each step starts ~2 s faster.
    env.update(PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    return env


def failure_message(node: ET.Element) -> str:
    """The exception lines of a junit <failure>/<error>/<skipped>: pytest marks them with 'E   '."""
    text = node.text or ""
    e_lines = [line[1:].strip() for line in text.splitlines() if line.startswith("E ")]
    attr = node.get("message", "")
    if e_lines and (not attr or attr in ("collection failure", "failed on setup with") or attr.startswith("failed on")):
        return "\n".join(e_lines)
    return attr or "\n".join(e_lines) or text.strip()


def parse_junit(path: Path) -> list[TestResult]:
    results = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            node = case.find(kind)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[kind]
                message = failure_message(node)
                break
        name = case.get("name", "?")
        if not case.get("classname"):  # a collection error (e.g. an ImportError) is a nameless case
            name = f"import of {name}"
            lines = message.strip().splitlines()
            message = "\n".join(lines[-1:] + lines[:-1])  # the exception line first: it is the hint
        results.append(TestResult(name, outcome, message))
    return results


def run_step(step: Step, root: Path, timeout: float = 60) -> StepResult:
    test_file = root / step.module
    if not test_file.is_file():
        return StepResult(step, "missing", log=f"{step.module} not found in {root}")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "--tb=short", "-p", "no:cacheprovider",
               "-o", "addopts=", f"--rootdir={root}", f"--junitxml={xml}", step.module]
        proc = subprocess.Popen(cmd, cwd=root, env=step_env(root), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: pytest and anything it started
            proc.communicate()
            return StepResult(step, "timeout", seconds=time.monotonic() - start,
                              log=f"timed out after {timeout:g} s (an infinite loop, or far too slow)")
        seconds = time.monotonic() - start
        if not xml.is_file():
            tail = "\n".join(out.strip().splitlines()[-15:])
            return StepResult(step, "crashed", seconds=seconds,
                              log=f"pytest exited with code {proc.returncode} before writing results:\n{tail}")
        tests = parse_junit(xml)
    result = StepResult(step, "failed", tests, seconds=seconds)
    if not tests:
        result.log = "no tests were collected:\n" + "\n".join(out.strip().splitlines()[-10:])
    elif result.passed == len(tests):
        result.status = "passed"
    elif result.passed:
        result.status = "partial"
    return result


def grade(root: str | Path = REPO, steps: list[int] | None = None, timeout: float = 60,
          jobs: int = 1) -> list[StepResult]:
    root = Path(root).resolve()
    table = get_steps(steps)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(lambda s: run_step(s, root, timeout), table))


def gradescope_json(results: list[StepResult], seconds: float) -> dict:
    """results.json in Gradescope's autograder format."""
    return {
        "score": round(sum(r.score for r in results), 2),
        "max_score": sum(r.step.points for r in results),
        "execution_time": round(seconds, 1),
        "visibility": "visible",
        "stdout_visibility": "visible",
        "output": format_table(results),
        "tests": [{"name": f"Step {r.step.number}: {r.step.name}", "number": str(r.step.number),
                   "score": r.score, "max_score": r.step.points,
                   "status": "passed" if r.status == "passed" else "failed",
                   "output": r.output(), "visibility": "visible"} for r in results],
    }


def format_table(results: list[StepResult]) -> str:
    rows = [f"{'step':>4}  {'name':<32} {'points':>11}  {'tests':>5}  {'result':<8} hint"]
    for r in results:
        hint = r.hint if len(r.hint) <= 110 else r.hint[:107] + "..."
        rows.append(f"{r.step.number:>4}  {r.step.name:<32} {r.score:>5g} / {r.step.points:<3g}  "
                    f"{r.passed:>2}/{len(r.tests):<2}  {r.status:<8} {hint}")
    total, most = sum(r.score for r in results), sum(r.step.points for r in results)
    rows.append(f"{'':>4}  {'total':<32} {total:>5g} / {most:<3g}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", help="comma-separated step numbers (default: all)")
    ap.add_argument("--json", type=Path, help="write Gradescope results.json here")
    ap.add_argument("--timeout", type=float, default=60, help="seconds per step (default 60)")
    ap.add_argument("--root", type=Path, default=REPO, help="tree to grade (default: this repository)")
    ap.add_argument("--jobs", type=int, default=1, help="steps graded in parallel (default 1)")
    args = ap.parse_args(argv)
    if not args.root.is_dir():
        print(f"error: --root {args.root} is not a directory", file=sys.stderr)
        return 2
    try:
        numbers = [int(n) for n in args.steps.split(",")] if args.steps else None
        start = time.monotonic()
        results = grade(args.root, numbers, args.timeout, args.jobs)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    seconds = time.monotonic() - start
    print(format_table(results))
    print(f"graded {args.root.resolve()} in {seconds:.1f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(gradescope_json(results, seconds), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
