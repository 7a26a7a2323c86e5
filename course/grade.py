"""The grader. For each step a runner process imports the student's code and computes outputs for
inputs this process (the checker) sends; the checker, which never imports student code, compares
them with its own references and decides the score.

    python -m course.grade [--steps 1,2] [--json results.json] [--timeout 60] [--root DIR] [--jobs N]
                           [--seed N] [--sandbox-user USER]

Per step: fresh random inputs from a secret seed drawn for this run (course/checks_*.py), a fresh
copy of the tree's packages, a `python -I` runner (course/runner.py, course/probes.py) with limits on
CPU time, memory and file size, its answers read back as size-capped safetensors, and then every
process the runner left behind killed. Scoring is partial credit: points x (tests passed / tests in
the step); a runner that crashes, exits early or times out fails the tests it did not answer.
--json writes Gradescope's results.json (with the grader version and the seed). --sandbox-user (root
only, what the Gradescope autograder uses) runs each runner as that unprivileged user and kills all
of its processes after each step. docs/TEACHING.md has the threat model.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import checks_model, checks_tasks, wire
from .compare import Judge, TestResult
from .runner import BOOT
from .sandbox import Sandbox
from .steps import Step, get_steps

REPO = Path(__file__).resolve().parents[1]
CHECKS = {**checks_model.STEPS, **checks_tasks.STEPS}
# What decides a grade: the checker, its references, and the probes it asks the runner to run.
CHECKER_FILES = ("checks_model.py", "checks_tasks.py", "compare.py", "grade.py", "probes.py", "reference.py",
                 "runner.py", "sandbox.py", "steps.py", "wire.py")
LOG_TAIL = 4000  # characters of a crashed runner's output shown to the student


@dataclass
class StepResult:
    step: Step
    status: str                      # passed | partial | failed | timeout | crashed
    tests: list[TestResult] = field(default_factory=list)
    log: str = ""                    # what went wrong outside the tests (a crash, a timeout)
    seconds: float = 0.0

    @property
    def passed(self) -> int:
        return sum(t.outcome == "passed" for t in self.tests)

    @property
    def score(self) -> float:
        return round(self.step.points * self.passed / len(self.tests), 2) if self.tests else 0.0

    @property
    def hint(self) -> str:
        """First line of what went wrong, or of the first failure."""
        failed = [t.message.strip() or t.outcome for t in self.tests if t.outcome != "passed"]
        text = self.log.strip() if self.status in ("timeout", "crashed") else (failed[0] if failed else "")
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


def grader_version() -> str:
    """sha256 of the checker and its references: results.json records it, so a regrade can tell."""
    h = hashlib.sha256()
    for name in CHECKER_FILES:
        h.update(name.encode() + b"\0" + (Path(__file__).parent / name).read_bytes())
    return h.hexdigest()[:16]


def step_seed(seed: int, step: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{step}".encode()).digest()[:8], "little") >> 1


def step_inputs(step: int, seed: int) -> tuple[dict, dict]:
    make, _, _ = CHECKS[step]
    return make(torch.Generator().manual_seed(step_seed(seed, step)))


def judge(step: int, tensors: dict, spec: dict, outputs: dict, errors: dict) -> list[TestResult]:
    _, verdict, tests = CHECKS[step]
    j = Judge(outputs, errors)
    verdict(tensors, spec, j)
    return j.done(tests)


def step_env(home: Path) -> dict[str, str]:
    """The runner's whole environment: nothing of the grader's (python -I ignores PYTHON* anyway)."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def copy_tree(root: Path, dest: Path) -> Path:
    """The tree's Python packages (every top-level folder with an __init__.py), without caches."""
    dest.mkdir(mode=0o755)
    for pkg in sorted(root.iterdir()):
        if pkg.is_dir() and (pkg / "__init__.py").is_file() and not pkg.name.startswith("."):
            shutil.copytree(pkg, dest / pkg.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                            symlinks=False)
    for p in [dest, *dest.rglob("*")]:  # readable by the runner user, writable by nobody but us
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dest


def read_answer(path: Path) -> tuple[dict, dict]:
    """The runner's answer, refusing links and anything but a plain, size-capped file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    try:
        if not os.path.stat.S_ISREG(os.fstat(fd).st_mode):
            raise wire.WireError("not a plain file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(wire.MAX_BYTES + 1)
    finally:
        os.close(fd)
    tensors, meta = wire.loads(raw)
    errors = json.loads(meta.get("errors", "{}"))
    if not isinstance(errors, dict):
        raise wire.WireError("errors is not a JSON object")
    return tensors, {str(k): str(v)[:2000] for k, v in errors.items()}


def run_step(step: Step, root: Path, seed: int, timeout: float = 60, sandbox_user: str | None = None) -> StepResult:
    tensors, spec = step_inputs(step.number, seed)
    tests = CHECKS[step.number][2]
    sandbox = Sandbox(sandbox_user, cpu_seconds=int(timeout) + 5)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"grade-step{step.number}-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)
        tree = copy_tree(root, base / "tree")
        scratch = base / "scratch"
        scratch.mkdir(mode=0o700)
        sandbox.give(scratch)
        inputs, answer, log = base / "inputs.safetensors", scratch / "answer.safetensors", base / "runner.log"
        wire.save(inputs, tensors, {"spec": json.dumps(spec)})
        inputs.chmod(0o644)
        cmd = [sys.executable, "-I", "-c", BOOT, str(tree), *sandbox.limits(), str(step.number), str(inputs),
               str(answer), str(scratch)]
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=scratch, env=step_env(scratch), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True, **sandbox.popen_args())
            try:
                code, timed_out = proc.wait(timeout=timeout), False
            except subprocess.TimeoutExpired:
                code, timed_out = None, True
            sandbox.kill_all(proc.pid)  # the group, and on Gradescope every process of the runner user
            proc.wait()
        seconds = time.monotonic() - start
        with open(log, "rb") as f:
            f.seek(max(0, log.stat().st_size - LOG_TAIL))
            tail = f.read().decode("utf-8", "replace")
        answered = None
        if not timed_out:
            try:
                answered = read_answer(answer)
            except (OSError, ValueError) as e:
                why = "no answer" if isinstance(e, FileNotFoundError) else f"an unreadable answer ({e})"
                tail = f"the runner exited with status {code} and {why}:\n{tail[-1500:]}"
    if timed_out:
        message = f"timed out after {timeout:g} s (an infinite loop, or far too slow)"
        return StepResult(step, "timeout", [TestResult(t, "error", message) for t in tests], message, seconds)
    if answered is None:
        first = f"crashed: {tail.strip().splitlines()[-1] if tail.strip() else 'no output'}"
        return StepResult(step, "crashed", [TestResult(t, "error", first) for t in tests], f"{first}\n{tail}", seconds)
    results = judge(step.number, tensors, spec, *answered)
    result = StepResult(step, "failed", results, seconds=seconds)
    if result.passed == len(results):
        result.status = "passed"
    elif result.passed:
        result.status = "partial"
    return result


def grade(root: str | Path = REPO, steps: list[int] | None = None, timeout: float = 60, jobs: int = 1,
          seed: int | None = None, sandbox_user: str | None = None) -> list[StepResult]:
    root = Path(root).resolve()
    seed = secrets.randbits(62) if seed is None else seed
    table = get_steps(steps)
    version = grader_version()

    def one(step: Step) -> StepResult:
        if grader_version() != version:  # nothing should write the checker: refuse to go on if it changed
            raise RuntimeError("the grader's own files changed during grading")
        return run_step(step, root, seed, timeout, sandbox_user)
    # Killing every process of the runner user after a step would kill a parallel step's runner too.
    with ThreadPoolExecutor(max_workers=1 if sandbox_user else max(1, jobs)) as pool:
        results = list(pool.map(one, table))
    grade.last_seed = seed  # type: ignore[attr-defined]
    return results


def check_inline(step: int, seed: int = 0, raise_errors: bool = False) -> list[TestResult]:
    """One step's probe and verdict in this process, for debugging (tests/graded, pdb): no isolation."""
    from .probes import run_probe
    tensors, spec = step_inputs(step, seed)
    out = run_probe(step, {k: v.clone() for k, v in tensors.items()}, json.loads(json.dumps(spec)),
                    Path(tempfile.mkdtemp(prefix=f"probe-step{step}-")), raise_errors=raise_errors)
    return judge(step, tensors, spec, out.tensors, out.errors)


def gradescope_json(results: list[StepResult], seconds: float, seed: int | None = None) -> dict:
    """results.json in Gradescope's autograder format, plus the grader version and the input seed."""
    return {
        "score": round(sum(r.score for r in results), 2),
        "max_score": sum(r.step.points for r in results),
        "execution_time": round(seconds, 1),
        "visibility": "visible",
        "stdout_visibility": "visible",
        "output": format_table(results),
        "extra_data": {"grader_version": grader_version(), "seed": seed},
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
    ap.add_argument("--jobs", type=int, default=2, help="steps graded in parallel (default 2)")
    ap.add_argument("--seed", type=int, help="input seed (default: a fresh secret one; results.json records it)")
    ap.add_argument("--sandbox-user", help="run the student's code as this unprivileged user (root only; Gradescope)")
    args = ap.parse_args(argv)
    if not args.root.is_dir():
        print(f"error: --root {args.root} is not a directory", file=sys.stderr)
        return 2
    try:
        numbers = [int(n) for n in args.steps.split(",")] if args.steps else None
        start = time.monotonic()
        results = grade(args.root, numbers, args.timeout, args.jobs, args.seed, args.sandbox_user)
    except (ValueError, LookupError, PermissionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    seconds = time.monotonic() - start
    print(format_table(results))
    print(f"graded {args.root.resolve()} in {seconds:.1f} s (grader {grader_version()}, seed {grade.last_seed})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(gradescope_json(results, seconds, grade.last_seed), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
