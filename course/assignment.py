"""The course's own assignment: which steps students write (the others ship solved), each step's
points, and each test's visibility on Gradescope. The instructor edits course/assignment.toml;
make_student checks it (every problem as file:line, before anything is written) and writes the
resolved assignment into the release and the autograder as course/assignment.json, which the grader
reads. Without that file (this repository) every step is graded, with the table's points.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .steps import LARGE_STEPS, STEPS, Step

HERE = Path(__file__).resolve().parent
RESOLVED = HERE / "assignment.json"  # in a release and in the autograder's checker
VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")
# A step shipped solved whose code does part of another step: grading the second needs the first graded too.
GIVES_AWAY = {8: {10: "training/multitask/tasks.py's loss_from_output computes distill_loss's sts (MSE) and quora "
                      "(BCE with logits on soft targets) terms"}}


class AssignmentError(ValueError):
    """Every problem of an assignment file, one `file:line: ...` per line."""


@dataclass(frozen=True)
class Assignment:
    steps: tuple[int, ...]                               # graded, in table order
    points: dict[int, float] = field(default_factory=dict)   # step -> points (all steps)
    visibility: dict[str, str] = field(default_factory=dict)  # "N.test" -> anything but visible
    large: bool = False  # the larger-piece assignment: course/steps.py's LARGE fences are stubbed too

    def table(self, numbers: list[int] | None = None) -> list[Step]:
        """The graded steps (or these of them), with this assignment's points."""
        chosen = self.steps if numbers is None else [n for n in numbers]
        by_number = {s.number: s for s in STEPS}
        unknown = [n for n in chosen if n not in by_number]
        if unknown:
            raise ValueError(f"unknown step(s) {unknown}; the steps are {sorted(by_number)}")
        return [dataclasses.replace(by_number[n], points=self.points.get(n, by_number[n].points))
                for n in sorted(set(chosen))]

    def hidden(self, step: int) -> set[str]:
        """The tests of `step` that are not visible before the deadline: never in the public checks."""
        return {key.split(".", 1)[1] for key, v in self.visibility.items() if key.split(".", 1)[0] == str(step)}

    def test_visibility(self, step: int, test: str) -> str:
        return self.visibility.get(f"{step}.{test}", "visible")

    def to_json(self) -> str:
        return json.dumps({"steps": list(self.steps), "points": {str(k): v for k, v in self.points.items()},
                           "visibility": self.visibility, "pieces": "large" if self.large else "standard"},
                          indent=1) + "\n"


def default() -> Assignment:
    """The standard assignment: every step but the larger-piece assignment's own (LARGE_STEPS), as
    course/assignment.toml ships."""
    return Assignment(tuple(s.number for s in STEPS if s.number not in LARGE_STEPS), {s.number: s.points for s in STEPS},
                      {})


def current(root: Path | None = None) -> Assignment:
    """The assignment graded: the graded tree's course/assignment.json (a release), else this checker's
    (the autograder's), else the standard assignment's steps with the table's points (this repository)."""
    for path in ([Path(root) / "course" / "assignment.json"] if root is not None else []) + [RESOLVED]:
        if path.is_file():
            break
    else:
        return default()
    d = json.loads(path.read_text())
    return Assignment(tuple(d["steps"]), {int(k): float(v) for k, v in d["points"].items()}, dict(d["visibility"]),
                      d.get("pieces") == "large")


def parse_steps(text: str) -> list[int]:
    """"1-6,9" -> [1, 2, 3, 4, 5, 6, 9]; ValueError on anything else."""
    numbers: list[int] = []
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not m:
            raise ValueError(f"{part!r} is not a step number or a range like 1-6")
        lo, hi = int(m[1]), int(m[2] or m[1])
        if hi < lo:
            raise ValueError(f"{part!r}: the range runs backwards")
        numbers += range(lo, hi + 1)
    return sorted(set(numbers))


def load(path: Path, steps: str | None = None, root: Path | None = None) -> Assignment:
    """Read and check an assignment file; `steps` (make_student --steps) overrides its list. `root`:
    the tree whose files the chosen steps must have. AssignmentError lists every problem as file:line."""
    import tomllib  # the instructors' side only (Python 3.11+)
    text = path.read_text(encoding="utf-8")
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise AssignmentError(f"{path}: {e}") from None
    problems: list[str] = []

    def at(key: str) -> str:
        """file:line of the line that sets `key` (the file's first line when none does)."""
        pattern = re.compile(r'^\s*"?' + re.escape(key) + r'"?\s*=')
        line = next((i for i, l in enumerate(text.splitlines(), 1) if pattern.match(l)), 1)
        return f"{path}:{line}"

    known = {s.number: s for s in STEPS}
    unknown_keys = set(d) - {"steps", "pieces", "points", "visibility"}
    problems += [f"{at(k)}: unknown setting {k!r} (the settings are steps, pieces, [points] and [visibility])"
                 for k in sorted(unknown_keys)]
    pieces = d.get("pieces", "standard")
    if pieces not in ("standard", "large"):
        problems.append(f"{at('pieces')}: pieces {pieces!r}; choose standard or large")
    try:
        chosen = parse_steps(steps if steps is not None else d.get("steps", "1-%d" % max(known)))
    except ValueError as e:
        chosen = []
        problems.append(f"{'--steps' if steps is not None else at('steps')}: {e}")
    for n in chosen:
        if n not in known:
            problems.append(f"{'--steps' if steps is not None else at('steps')}: unknown step {n}; the steps are "
                            f"{min(known)}-{max(known)} (course/steps.py)")
    chosen = [n for n in chosen if n in known]
    if not chosen and not problems:
        problems.append(f"{at('steps')}: no step chosen: students would write nothing")
    points = {n: s.points for n, s in known.items()}
    for key, value in (d.get("points") or {}).items():
        if not key.isdigit() or int(key) not in known:
            problems.append(f"{at(key)}: points for unknown step {key!r}")
        elif not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            problems.append(f"{at(key)}: the points of step {key} must be a number >= 0, not {value!r}")
        else:
            points[int(key)] = float(value)
    from . import verdicts_model, verdicts_tasks
    tests = {**verdicts_model.STEPS, **verdicts_tasks.STEPS}
    visibility = {}
    for key, value in (d.get("visibility") or {}).items():
        step, _, test = key.partition(".")
        if not step.isdigit() or int(step) not in tests or test not in tests[int(step)][1]:
            names = ", ".join(tests[int(step)][1]) if step.isdigit() and int(step) in tests else ""
            problems.append(f"{at(key)}: no test {key!r}" + (f"; step {step}'s tests are {names}" if names else
                                                               " (write it as \"STEP.test\", e.g. \"6.long_run\")"))
        elif value not in VISIBILITIES:
            problems.append(f"{at(key)}: visibility {value!r}; choose one of {', '.join(VISIBILITIES)}")
        elif value != "visible":
            visibility[key] = value
    for n in chosen:
        for solved, gives in GIVES_AWAY.items():
            if n in gives and solved not in chosen:
                problems.append(f"{'--steps' if steps is not None else at('steps')}: step {solved} would ship solved "
                                f"while step {n} is graded, and {gives[n]}: grade step {solved} too, or leave out "
                                f"step {n}")
        if root is not None:
            missing = [p for p in known[n].fences if not (root / p).is_file()]
            problems += [f"{at('steps')}: step {n}'s file {p} is not in {root}" for p in missing]
    problems += half_fenced(chosen, root)
    if problems:
        raise AssignmentError("\n".join(problems))
    return Assignment(tuple(chosen), points, visibility, pieces == "large")


def half_fenced(chosen: list[int], root: Path | None) -> list[str]:
    """A graded function whose fences belong to several steps, some chosen and some not, would ship
    half written: refuse it (file:line of the function's first fence)."""
    if root is None:
        return []
    from .make_student import find_fences
    problems = []
    for rel in sorted({p for s in STEPS for p in s.fences}):
        if not (root / rel).is_file():
            continue
        by_function: dict[str | None, list] = {}
        for f in find_fences((root / rel).read_text(encoding="utf-8"), rel):
            by_function.setdefault(f.function, []).append(f)
        for function, fences in by_function.items():
            steps = {f.step for f in fences}
            if len(steps) > 1 and 0 < len(steps & set(chosen)) < len(steps):
                problems.append(f"{rel}:{fences[0].begin}: {function} is fenced for steps {sorted(steps)}, of which "
                                f"only {sorted(steps & set(chosen))} are chosen: it would ship half written")
    return problems
