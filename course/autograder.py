"""What Gradescope's run_autograder runs, and the instructor's regrade of a folder of submissions.

    python -m course.autograder [--root /autograder] [--scaffold DIR]   # submission/ -> results/results.json
    python -m course.autograder --regrade DIR [--out OUT] [--seed N] [--scaffold DIR]
                                                               # every DIR/<submission>/ -> OUT/<submission>.json

Run from the checker (Gradescope's source/checker: the instructors' course/ package, closed to the
runner user), as root: the checker runs here with fresh secret inputs and the live references, and
each step's runner runs as the unprivileged user setup.sh created (--no-sandbox skips that, for a
trial without root). The graded tree is the pristine student release (--scaffold, default
source/scaffold beside the checker) plus the student's copies of the files the step table names (by
path, or by file name when unique); nothing else from a submission is used, and links are refused.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .grade import REPO, grade, gradescope_json
from .sandbox import RUNNER_USER
from .submit import MAX_FILE, graded_files  # one definition for both sides; a larger source file is not taken


def editable_files() -> list[str]:
    """The files students submit: those of the steps this assignment grades (course.submit packs the same)."""
    return graded_files()


def assemble(scaffold: Path, submission: Path, dest: Path) -> list[str]:
    """dest = scaffold + the submitted editable files; returns a log line per file."""
    shutil.copytree(scaffold, dest, ignore=shutil.ignore_patterns("__pycache__", ".git"), symlinks=True)
    names = [Path(p).name for p in editable_files()]
    log = []
    for rel in editable_files():
        candidates = [submission / rel] + ([submission / Path(rel).name] if names.count(Path(rel).name) == 1 else [])
        found = next((c for c in candidates if c.is_file() and not c.is_symlink() and c.stat().st_size <= MAX_FILE), None)
        if found is None:
            log.append(f"not submitted: {rel} (grading the unchanged scaffold file)")
            continue
        (dest / rel).write_bytes(found.read_bytes())
        log.append(f"submitted: {rel}")
    return log


def default_scaffold() -> Path:
    """The release the submissions are laid over: source/scaffold beside the checker (Gradescope's
    layout), or this tree itself when it holds the packages (an instructor's trial)."""
    return REPO if (REPO / "minbert").is_dir() else REPO.parent / "scaffold"


def grade_submission(submission: Path, sandbox_user: str | None, seed: int | None = None,
                     steps: list[int] | None = None, timeout: float = 60, scaffold: Path | None = None) -> dict:
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="autograde-") as tmp:
        Path(tmp).chmod(0o755)  # the runner user reads the graded tree
        tree = Path(tmp) / "tree"
        log = assemble(scaffold or default_scaffold(), submission, tree)
        results = grade(tree, steps, timeout, seed=seed, sandbox_user=sandbox_user, source="live")
    out = gradescope_json(results, time.monotonic() - start, grade.last_seed)
    out["output"] = "\n".join(log) + "\n\n" + out["output"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path("/autograder"), help="Gradescope's folder (default /autograder)")
    ap.add_argument("--regrade", type=Path, metavar="DIR", help="regrade every submission folder in DIR")
    ap.add_argument("--out", type=Path, help="--regrade: write <submission>.json here (default DIR/../regraded)")
    ap.add_argument("--seed", type=int, help="input seed (default: a fresh secret one, recorded in the results)")
    ap.add_argument("--steps", help="comma-separated step numbers (default: all)")
    ap.add_argument("--timeout", type=float, default=60, help="seconds per step (default 60)")
    ap.add_argument("--no-sandbox", action="store_true", help="run the student's code as the current user")
    ap.add_argument("--scaffold", type=Path, help="the student release the submissions are laid over "
                    "(default: source/scaffold beside the checker)")
    args = ap.parse_args(argv)
    user = None if args.no_sandbox else RUNNER_USER
    steps = [int(n) for n in args.steps.split(",")] if args.steps else None
    try:
        if args.regrade is None:
            result = grade_submission(args.root / "submission", user, args.seed, steps, args.timeout, args.scaffold)
            (args.root / "results").mkdir(parents=True, exist_ok=True)
            (args.root / "results" / "results.json").write_text(json.dumps(result, indent=2) + "\n")
            print(result["output"])
            return 0
        out = args.out or args.regrade.resolve().parent / "regraded"
        out.mkdir(parents=True, exist_ok=True)
        for sub in sorted(p for p in args.regrade.iterdir() if p.is_dir()):
            result = grade_submission(sub, user, args.seed, steps, args.timeout, args.scaffold)
            (out / f"{sub.name}.json").write_text(json.dumps(result, indent=2) + "\n")
            print(f"{sub.name}: {result['score']:g} / {result['max_score']:g} (grader "
                  f"{result['extra_data']['grader_version']}, seed {result['extra_data']['seed']})")
        return 0
    except (LookupError, PermissionError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2



if __name__ == "__main__":
    sys.exit(main())
