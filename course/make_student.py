"""Generate the student release: the files of course/manifest.py's RELEASE with every solution
fence removed, plus the stored public checks and the student README.

    python -m course.make_student OUT_DIR [--force] [--root SRC] [--gradescope autograder.zip]

In every *.py file, the lines from `# BEGIN SOLUTION` to `# END SOLUTION` (each marker alone on its
line) become `raise NotImplementedError("step N: ...")` at the fence's indentation; signatures and
docstrings sit outside the fences and are kept. Nested or unclosed fences and a stray END are errors
naming file:line. What is copied: of the files git knows (tracked, plus untracked files git does not
ignore; outside git, a directory walk without caches and outputs), exactly those the manifest's
RELEASE names. The release grades itself on course/public/, the probes' inputs and the expected
outputs (and each known mistake's outputs) made here by the instructors' producers on a fixed public
seed: the producers and the references stay out of it.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import assignment, manifest
from .grade import write_public
from .gradescope import write_gradescope_zip
from .steps import STEPS, fence_label, is_large

# Built by concatenation so that this file's own lines never look like fences.
BEGIN, END = "# BEGIN " + "SOLUTION", "# END " + "SOLUTION"
BEGIN_RE = re.compile(r"^(?P<indent>[ \t]*)" + re.escape(BEGIN) + r"(?P<text>(?:[ \t:].*)?)$")
END_RE = re.compile(r"^(?P<indent>[ \t]*)" + re.escape(END) + r"[ \t]*$")
DEF_RE = re.compile(r"^(?P<indent>[ \t]*)(?:async[ \t]+)?def[ \t]+(?P<name>\w+)")
DEFAULT_ZIP = Path("autograder.zip beside the release")  # --gradescope with no value
PUBLIC_SEED = 20261207  # the release's public checks: fixed, so every student sees the same inputs
SKIP_DIRS = {".git", ".venv", "venv", "__pycache__", ".pytest_cache", ".hypothesis", "runs", "predictions",
             "out", "build", "dist", "student", ".whl"}


class FenceError(ValueError):
    pass


@dataclass
class Fence:
    path: str
    begin: int          # 1-based line numbers of the markers
    end: int
    indent: str
    function: str | None
    step: int | None
    label: str
    large: bool = False  # stubbed only in the larger-piece assignment (course/steps.py LARGE)


def find_fences(text: str, path: str) -> list[Fence]:
    """Every fence in `text` (the contents of `path`, used in messages). Raises FenceError listing
    every nesting, unclosed or unmatched marker as path:line."""
    lines = text.splitlines()
    fences, errors, open_at = [], [], None
    for i, line in enumerate(lines, 1):
        b, e = BEGIN_RE.match(line), END_RE.match(line)
        if b:
            if open_at is not None:
                errors.append(f"{path}:{i}: BEGIN SOLUTION inside the fence opened at line {open_at[0]} "
                              "(fences cannot nest)")
                continue
            open_at = (i, b["indent"], b["text"].lstrip(" \t:"))
        elif e:
            if open_at is None:
                errors.append(f"{path}:{i}: END SOLUTION without a BEGIN SOLUTION before it")
                continue
            start, indent, marker_text = open_at
            if e["indent"] != indent:
                errors.append(f"{path}:{i}: END SOLUTION is indented differently from its BEGIN at line {start}")
            function = enclosing_function(lines, start - 1, indent)
            step, label = fence_label(path, function, marker_text)
            fences.append(Fence(path, start, i, indent, function, step, label, is_large(path, function)))
            open_at = None
    if open_at is not None:
        errors.append(f"{path}:{open_at[0]}: BEGIN SOLUTION is never closed by an END SOLUTION")
    if errors:
        raise FenceError("\n".join(errors))
    return fences


def enclosing_function(lines: list[str], index: int, indent: str) -> str | None:
    """Name of the nearest `def` above line `index` that is indented less than the fence."""
    for line in reversed(lines[:index]):
        m = DEF_RE.match(line)
        if m and len(m["indent"]) < len(indent):
            return m["name"]
    return None


def strip_solutions(text: str, path: str, solved: set[int] = frozenset(), large: bool = False) -> tuple[str, list[Fence]]:
    """`text` with each fence replaced by a raise of NotImplementedError carrying the fence's label;
    the fences of the `solved` steps keep their code (only the marker lines go), and so do the
    larger-piece fences unless `large` (the larger-piece assignment)."""
    fences = find_fences(text, path)
    lines = text.splitlines(keepends=True)
    for f in reversed(fences):  # from the bottom, so earlier line numbers stay valid
        if f.step in solved or (f.large and not large):
            lines[f.begin - 1:f.end] = lines[f.begin:f.end - 1]
        else:
            lines[f.begin - 1:f.end] = [f"{f.indent}raise NotImplementedError({f.label!r})\n"]
    return "".join(lines), fences


def solve(root: str | Path, out: str | Path, steps: list[int] | None = None) -> list[str]:
    """Put the solution of `steps` (all when None) into the release `out`: each graded file becomes the
    solution's, with the other steps' fences still stubbed. For releasing the solution after the
    deadline, and for testing a finished release. Returns the files written."""
    root, out = Path(root).resolve(), Path(out).resolve()
    if not (out / "course" / "public").is_dir():
        raise FileNotFoundError(f"{out} is not a student release (no course/public/): make it with make_student first")
    solved = {s.number for s in STEPS} if steps is None else set(steps)
    plan = out / "course" / "assignment.json"
    large = False
    if plan.is_file():  # the steps the release shipped solved stay solved
        resolved = json.loads(plan.read_text())
        solved |= {s.number for s in STEPS} - set(resolved["steps"])
        large = resolved.get("pieces") == "large"
    written = []
    for rel in sorted({path for s in STEPS for path in s.fences}):
        text, fences = strip_solutions((root / rel).read_text(encoding="utf-8"), rel, solved, large)
        if any(f.step in solved for f in fences):
            (out / rel).write_text(text, encoding="utf-8")
            written.append(rel)
    return written


def known_files(root: Path) -> list[str]:
    """Repository-relative paths of the tree: git's view of it when `root` is a git work tree."""
    try:
        top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, check=True).stdout.strip()
        is_repo = Path(top).resolve() == root.resolve()
    except (OSError, subprocess.CalledProcessError):
        is_repo = False
    if is_repo:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], capture_output=True, text=True, check=True).stdout
        paths = [p for p in out.split("\0") if p and (root / p).is_file()]  # drop deleted files
    else:
        paths = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not any(
                 d in SKIP_DIRS or d.endswith(".egg-info") for d in p.relative_to(root).parts[:-1])]
    return sorted(p for p in set(paths) if not p.endswith(".pyc"))


def source_files(root: Path) -> list[str]:
    """The files of the release: those of the tree that the manifest's RELEASE names."""
    return manifest.release_files(known_files(root))


def make_student(root: str | Path, out: str | Path, force: bool = False,
                 plan: assignment.Assignment | None = None) -> list[Fence]:
    """Write the release of `root` into `out` for the assignment `plan` (default: every step); returns
    the fences stubbed (the steps students write; the others ship solved). Every fence error in the tree
    is reported at once, before anything is written."""
    plan = assignment.default() if plan is None else plan
    solved = {s.number for s in STEPS} - set(plan.steps)
    root, out = Path(root).resolve(), Path(out).resolve()
    if out == root or out in root.parents:
        raise ValueError(f"{out} would overwrite the source tree {root}; choose another directory")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"{out} exists and is not empty; pass --force to replace it")
        shutil.rmtree(out)
    files = source_files(root)
    stripped, fences, errors = {}, [], []
    for rel in files:
        if rel.endswith(".py"):
            text = (root / rel).read_text(encoding="utf-8")
            try:
                new, found = strip_solutions(text, rel, solved, plan.large)
            except FenceError as e:
                errors.append(str(e))
                continue
            if found:
                stripped[rel] = new
                fences += [f for f in found if f.step not in solved and (plan.large or not f.large)]
    if errors:
        raise FenceError("\n".join(errors))
    for rel in files:
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if rel in stripped:
            dest.write_text(stripped[rel], encoding="utf-8")
        else:
            shutil.copy2(root / rel, dest)
    write_public(out / "course" / "public", list(plan.steps), PUBLIC_SEED,
                 {n: plan.hidden(n) for n in plan.steps})
    (out / "course" / "assignment.json").write_text(plan.to_json())
    from .handout import project  # the students' view of the project, not the instructors' README.md
    (out / "PROJECT.md").write_text(project(), encoding="utf-8")
    if (root / "requirements.txt").is_file():
        (out / "requirements.txt").write_text(student_requirements((root / "requirements.txt").read_text()))
    (out / "README.md").write_text(student_readme(fences, (out / "PROJECT.md").exists(), plan), encoding="utf-8")
    return fences


def student_requirements(text: str) -> str:
    """requirements.txt without the test-only reference libraries (and their comments)."""
    keep, comments = [], []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            comments.append(line)
            continue
        name = re.split(r"[<>=!~\[ ;]", line.strip(), maxsplit=1)[0].lower()
        if name in manifest.REFERENCE_LIBRARIES:
            comments = []
            continue
        keep += comments + [line]
        comments = []
    return "\n".join(keep).strip() + "\n"


def student_readme(fences: list[Fence], has_project_readme: bool, plan: assignment.Assignment | None = None) -> str:
    from .handout import readme  # the assignment handout (course/handout.py, instructors only)
    return readme(fences, has_project_readme, steps=None if plan is None else plan.table())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="directory to write the scaffold into")
    ap.add_argument("--force", action="store_true", help="replace OUT if it exists")
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1], help="source tree")
    ap.add_argument("--gradescope", type=Path, metavar="ZIP", nargs="?", const=DEFAULT_ZIP,
                    help="also write a Gradescope autograder zip (default: autograder.zip beside OUT, never inside the "
                         "repository or the release)")
    ap.add_argument("--assignment", type=Path, default=Path(__file__).resolve().parent / "assignment.toml",
                    help="the course's choice of steps, points and test visibility (default: course/assignment.toml)")
    ap.add_argument("--steps", help="the steps students write, e.g. 1-6,9 (overrides the assignment's list); with "
                    "--solve: the steps to solve (default: all)")
    ap.add_argument("--solve", action="store_true", help="put the solution into the existing release OUT instead "
                    "(after the deadline): every step, or those of --steps")
    args = ap.parse_args(argv)
    if args.solve:
        try:
            steps = assignment.parse_steps(args.steps) if args.steps else None
            written = solve(args.root, args.out, steps)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print("\n".join(f"solved: {rel}" for rel in written) or "nothing to solve")
        return 0
    zip_path = None
    if args.gradescope is not None:
        zip_path = (args.out.resolve().parent / "autograder.zip" if args.gradescope == DEFAULT_ZIP
                    else args.gradescope.resolve())
        inside = [d for d in (args.root.resolve(), args.out.resolve()) if d == zip_path.parent or d in zip_path.parents]
        if inside:
            print(f"error: --gradescope {zip_path} is inside {inside[0]}: write it outside the repository and the "
                  f"release (the default is beside the release)", file=sys.stderr)
            return 1
    try:
        plan = assignment.load(args.assignment, args.steps, args.root.resolve())
        fences = make_student(args.root, args.out, force=args.force, plan=plan)
    except (FenceError, FileExistsError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for f in fences:
        print(f"{f.path}:{f.begin}-{f.end}  {f.label}")
    orphans = [f for f in fences if f.step is None]
    for f in orphans:
        print(f"warning: {f.path}:{f.begin}: fence belongs to no step (add it to course/steps.py)", file=sys.stderr)
    if zip_path is not None:
        write_gradescope_zip(args.out.resolve(), sorted({f.path for f in fences}), zip_path)
        print(f"wrote {zip_path}")
    points = sum(s.points for s in plan.table())
    print(f"wrote the release to {args.out}: steps {','.join(map(str, plan.steps))} to write ({len(fences)} fences), "
          f"{points:g} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
