"""The grader. For each step a runner process imports the student's code and computes outputs for
inputs this process (the checker) sends; the checker, which never imports student code, compares
them with its own references and decides the score.

    python -m course.grade [--steps 1,2] [--json results.json] [--timeout 60] [--root DIR] [--jobs N]
                           [--seed N] [--sandbox-user USER]

Per step: fresh random inputs from a secret seed drawn for this run and the expected outputs made
from them (course/checks_*.py, the instructors' producers; in the student release, which has no
producer, the stored public checks of course/public/ instead), a fresh copy of the tree's packages, a `python -I` runner (course/runner.py, course/probes.py) with limits on
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

from . import verdicts_model, verdicts_tasks, wire
from .compare import Expected, Judge, TestResult
from .runner import BOOT
from .sandbox import Sandbox
from . import assignment
from .steps import Step

REPO = Path(__file__).resolve().parents[1]
PUBLIC = Path(__file__).resolve().parent / "public"  # the release's stored public checks (make_student writes them)
VERDICTS = {**verdicts_model.STEPS, **verdicts_tasks.STEPS}  # step -> (verdict, tests, depends)
# What decides a grade: the checker, its references or stored tensors, and the probes the runner runs.
CHECKER_FILES = ("checks_model.py", "checks_tasks.py", "compare.py", "grade.py", "guard.py", "probes.py",
                 "reference.py", "runner.py", "sandbox.py", "steps.py", "verdicts_model.py", "verdicts_tasks.py",
                 "wire.py")
LOG_TAIL = 4000  # characters of a crashed runner's output shown to the student


def producers() -> dict | None:
    """The instructors' producers of inputs and expected tensors (course/checks_*.py), step -> (inputs,
    expect); None in the student release, which ships only their stored outputs (course/public/)."""
    try:
        from . import checks_model, checks_tasks
    except ImportError:
        return None
    return {**checks_model.PRODUCERS, **checks_tasks.PRODUCERS}


@dataclass
class Material:
    """What one step is graded with: the probe's inputs, and what its outputs are compared with.
    hidden: tests a release cannot judge (not visible before the deadline: no expected tensors)."""
    tensors: dict
    spec: dict
    expected: Expected
    seed: int
    hidden: frozenset = frozenset()


def live_material(step: int, seed: int) -> Material:
    found = producers()
    if found is None:
        raise LookupError("this tree has no producers (course/checks_*.py): it is a student release, which grades on "
                          "its stored public checks")
    make, expect = found[step]
    tensors, spec = make(torch.Generator().manual_seed(step_seed(seed, step)))
    return Material(tensors, spec, expect(tensors, spec), seed)


def stored_material(step: int, folder: Path = PUBLIC) -> Material:
    path = folder / f"step{step:02d}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the stored public check of step {step} is missing (make_student writes it)")
    tensors, meta = wire.load(path, max_bytes=2**28)
    inputs = {k[3:]: v for k, v in tensors.items() if k.startswith("in.")}
    expected = Expected({k[3:]: v for k, v in tensors.items() if k.startswith("ex.")}, json.loads(meta["texts"]))
    return Material(inputs, json.loads(meta["spec"]), expected, int(meta["seed"]),
                    frozenset(json.loads(meta.get("hidden", "[]"))))


def write_public(folder: Path, steps: list[int], seed: int, hidden: dict[int, set[str]] | None = None) -> list[Path]:
    """The release's stored public checks: per step the probe's inputs, the expected outputs and each
    known mistake's outputs on the public seed, so that the release grades itself without producers.
    A hidden test's expected tensors are stored as zeros (only their shapes remain) and its mistakes not
    at all: the release does not judge it."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for n in steps:
        m, secret = live_material(n, seed), set((hidden or {}).get(n, ()))
        expected = {}
        for key, value in m.expected.tensors.items():
            if key.split(".", 1)[0] not in secret:
                expected[key] = value
            elif "~" not in key:
                expected[key] = torch.zeros_like(value)
        tensors = {**{"in." + k: v for k, v in m.tensors.items()}, **{"ex." + k: v for k, v in expected.items()}}
        texts = {mid: text for mid, text in m.expected.texts.items()
                 if any(k.endswith("~" + mid) for k in expected)}
        path = folder / f"step{n:02d}.safetensors"
        wire.save(path, tensors, {"spec": json.dumps(m.spec), "texts": json.dumps(texts), "seed": str(seed),
                                  "step": str(n), "hidden": json.dumps(sorted(secret))})
        written.append(path)
    return written


def material_source(source: str = "auto") -> str:
    """live (fresh inputs, the producers' references) where the producers are, else stored."""
    if source == "auto":
        return "live" if producers() is not None else "stored"
    if source not in ("live", "stored"):
        raise ValueError(f"source must be auto, live or stored, not {source!r}")
    return source


@dataclass
class StepResult:
    step: Step
    status: str                      # passed | partial | failed | timeout | crashed
    tests: list[TestResult] = field(default_factory=list)
    log: str = ""                    # what went wrong outside the tests (a crash, a timeout)
    seconds: float = 0.0
    answer: tuple[dict, dict] | None = None  # the runner's (outputs, errors), kept for re-judging

    @property
    def passed(self) -> int:
        return sum(t.outcome == "passed" for t in self.tests)

    @property
    def counted(self) -> list[TestResult]:
        """The tests that score here: all but the hidden ones a release cannot judge."""
        return [t for t in self.tests if t.outcome != "hidden"]

    @property
    def score(self) -> float:
        return round(self.step.points * self.passed / len(self.counted), 2) if self.counted else 0.0

    def test_score(self, test: TestResult) -> float:
        """One test's share of the step's points (its own Gradescope entry)."""
        share = self.step.points / len(self.tests) if self.tests else 0.0
        return share if test.outcome == "passed" else 0.0

    @property
    def hint(self) -> str:
        """First line of what went wrong, or of the first failure."""
        failed = [t.message.strip() or t.outcome for t in self.counted if t.outcome != "passed"]
        text = self.log.strip() if self.status in ("timeout", "crashed") else (failed[0] if failed else "")
        return text.splitlines()[0] if text else ""

    def output(self) -> str:
        """Readable per-step report: one line per test, the failure messages in full."""
        lines = [f"Step {self.step.number}: {self.step.name} -- {self.step.description}",
                 f"{self.passed}/{len(self.counted)} tests passed, {self.score:g}/{self.step.points:g} points"]
        if self.log:
            lines.append(self.log.strip())
        for t in self.tests:
            lines.append(f"{'PASS' if t.outcome == 'passed' else t.outcome.upper()}  {t.name}")
            if t.outcome != "passed" and t.message:
                lines += ["    " + m for m in t.message.strip().splitlines()[:20]]
        return "\n".join(lines)


def grader_version() -> str:
    """sha256 of the checker, its references or stored checks: results.json records it, so a regrade can tell."""
    h = hashlib.sha256()
    here = Path(__file__).parent
    for path in [here / name for name in CHECKER_FILES] + sorted(PUBLIC.glob("*.safetensors")):
        if path.is_file():  # the release has no producers and no references
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def step_seed(seed: int, step: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{step}".encode()).digest()[:8], "little") >> 1


def judge(step: int, material: Material, outputs: dict, errors: dict) -> list[TestResult]:
    verdict, tests, depends = VERDICTS[step]
    j = Judge(outputs, errors, material.expected)
    verdict(material.tensors, material.spec, j)
    results = j.done(tests, depends)
    for i, r in enumerate(results):
        if r.name in material.hidden:  # judged on Gradescope only, against inputs the release never sees
            results[i] = TestResult(r.name, "hidden", "a hidden test: graded by the course's autograder only")
    return results


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


def run_step(step: Step, root: Path, material: Material, timeout: float = 60,
             sandbox_user: str | None = None) -> StepResult:
    tensors, spec = material.tensors, material.spec
    tests = VERDICTS[step.number][1]
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
    results = judge(step.number, material, *answered)
    result = StepResult(step, "failed", results, seconds=seconds, answer=answered)
    if result.passed == len(result.counted):
        result.status = "passed"
    elif result.passed:
        result.status = "partial"
    return result


def grade(root: str | Path = REPO, steps: list[int] | None = None, timeout: float = 60, jobs: int = 1,
          seed: int | None = None, sandbox_user: str | None = None, source: str = "auto") -> list[StepResult]:
    """source: live (fresh inputs from `seed`, or a secret one; the instructors' trees and Gradescope),
    stored (the release's public checks, on their public seed) or auto (live where the producers are)."""
    root = Path(root).resolve()
    source = material_source(source)
    if source == "stored" and seed is not None:
        raise ValueError("a student release grades on its stored public inputs: it takes no --seed")
    seed = secrets.randbits(62) if seed is None else seed
    table = assignment.current(root).table(steps)
    version = grader_version()

    def one(step: Step) -> StepResult:
        if grader_version() != version:  # nothing should write the checker: refuse to go on if it changed
            raise RuntimeError("the grader's own files changed during grading")
        try:
            material = live_material(step.number, seed) if source == "live" else stored_material(step.number)
        except FileNotFoundError as e:  # a missing checkpoint or stored check: the grader's set-up, not the student
            message = f"grader setup: {e}"
            return StepResult(step, "crashed", [TestResult(t, "error", message) for t in VERDICTS[step.number][1]],
                              message)
        grade.last_seed = material.seed  # type: ignore[attr-defined]
        return run_step(step, root, material, timeout, sandbox_user)
    # Killing every process of the runner user after a step would kill a parallel step's runner too.
    with ThreadPoolExecutor(max_workers=1 if sandbox_user else max(1, jobs)) as pool:
        grade.last_seed = seed  # type: ignore[attr-defined]
        results = list(pool.map(one, table))
    return results


def check_inline(step: int, seed: int = 0, raise_errors: bool = False, source: str = "auto") -> list[TestResult]:
    """One step's probe and verdict in this process, for debugging (tests/graded, pdb): no isolation.
    Live on `seed` where the producers are, else on the release's stored public checks."""
    from .probes import run_probe
    material = live_material(step, seed) if material_source(source) == "live" else stored_material(step)
    out = run_probe(step, {k: v.clone() for k, v in material.tensors.items()}, json.loads(json.dumps(material.spec)),
                    Path(tempfile.mkdtemp(prefix=f"probe-step{step}-")), raise_errors=raise_errors)
    return judge(step, material, out.tensors, out.errors)


def gradescope_json(results: list[StepResult], seconds: float, seed: int | None = None) -> dict:
    """results.json in Gradescope's autograder format: one entry per named test, with its share of the
    step's points and its visibility (course/assignment.toml), plus the grader version and the seed."""
    plan = assignment.current()
    tests = []
    for r in results:
        for k, t in enumerate(r.tests, 1):
            tests.append({"name": f"Step {r.step.number}: {r.step.name} / {t.name}", "number": f"{r.step.number}.{k}",
                          "score": r.test_score(t), "max_score": r.step.points / len(r.tests),
                          "status": "passed" if t.outcome == "passed" else "failed",
                          "output": test_output(r, t), "visibility": plan.test_visibility(r.step.number, t.name),
                          # the root-cause mistake of a failed test, by id (course/report.py counts them)
                          "extra_data": {"step": r.step.number, "test": t.name, "mistakes": [
                              {"id": t.mistake, "text": t.mistake_text}] if t.mistake else []}})
    return {
        "score": round(sum(r.score for r in results), 2),
        "max_score": sum(r.step.points for r in results),
        "execution_time": round(seconds, 1),
        "visibility": "visible",
        "stdout_visibility": "visible",
        "output": format_table(results) + "\n\n" + "\n\n".join(r.output() for r in results),
        "extra_data": {"grader_version": grader_version(), "seed": seed},
        "tests": tests,
    }


def test_output(r: StepResult, t: TestResult) -> str:
    head = f"{'PASS' if t.outcome == 'passed' else t.outcome.upper()}  step {r.step.number} {t.name}"
    body = [r.log.strip()] if r.log and t.outcome != "passed" else []
    body += ["    " + m for m in t.message.strip().splitlines()[:20]] if t.outcome != "passed" and t.message else []
    return "\n".join([head, *body])


def format_table(results: list[StepResult]) -> str:
    rows = [f"{'step':>4}  {'name':<32} {'points':>11}  {'tests':>5}  {'result':<8} hint"]
    for r in results:
        hint = r.hint if len(r.hint) <= 110 else r.hint[:107] + "..."
        rows.append(f"{r.step.number:>4}  {r.step.name:<32} {r.score:>5g} / {r.step.points:<3g}  "
                    f"{r.passed:>2}/{len(r.counted):<2}  {r.status:<8} {hint}")
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
