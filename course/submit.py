"""Pack a submission for the course's Gradescope autograder (like CS224N's prepare_submit.py).

    python -m course.submit [--root ROOT] [--out submission.zip] [--predictions DIR] [--force]

The zip holds exactly the graded files (every file a step of the assignment has code in) at their
repository paths, plus the course's prediction files found in the predictions folder (default
ROOT/predictions/), as predictions/<name>. Nothing else goes in: not your notebooks, runs/ or
checkpoints. A missing graded file is an error and nothing is written; a graded file that still
raises NotImplementedError("step N: ...") is packed, with a warning naming the unfinished step, since
the autograder gives that step 0. Upload the zip as it is: the autograder takes the graded files by
path (or by file name) and lays them over the pristine release.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import zipfile
from pathlib import Path

from . import assignment
from .steps import Step

# The autograder (course/autograder.py, which stays with the instructors) skips a file larger than this
# and grades the unchanged release file instead; it imports this limit and graded_files() from here.
MAX_FILE = 2**20

# The course's prediction files: training/multitask/tasks.py's output prefixes (sst, para, sts) and the part-1
# classifier task cfimdb (training/run_classifier.py writes {task}-{split}-output.csv), dev and test.
PREDICTION_FILES = tuple(f"{task}-{split}-output.csv" for task in ("sst", "para", "sts", "cfimdb")
                         for split in ("dev", "test"))

# make_student.py's stub for a removed fence: raise NotImplementedError('step N: what to do'), the
# label as Python's repr writes it (single quotes, double quotes when the label holds a single quote).
STUB_RE = re.compile(r"""^[ \t]*raise[ \t]+NotImplementedError\((?P<q>['"])(?P<label>step[ \t]+(?P<step>\d+)\b.*)"""
                     r"""(?P=q)\)[ \t]*(?:#.*)?$""")


def graded_files(root: Path | None = None, steps: list[Step] | None = None) -> list[str]:
    """The files a submission must hold: those of the steps the assignment grades (ROOT's
    course/assignment.json, as course/autograder.py's editable_files() reads it; the release has no
    autograder.py), or of `steps`."""
    steps = assignment.current(root).table() if steps is None else steps
    return sorted({path for step in steps for path in step.fences})


def unfinished(text: str) -> list[tuple[int, int, str]]:
    """(line number, step, label) of every make_student stub left in a graded file's text."""
    found = []
    for i, line in enumerate(text.splitlines(), 1):
        m = STUB_RE.match(line)
        if m:
            found.append((i, int(m["step"]), m["label"]))
    return found


def collect(root: Path, predictions: Path) -> tuple[list[tuple[Path, str]], list[str], list[str], set[int]]:
    """(what goes in as (file, name in the zip), errors, warnings, unfinished steps) for the tree at `root`."""
    entries, errors, warnings, steps = [], [], [], set()
    for rel in graded_files(root):
        path = root / rel
        if not path.is_file():
            errors.append(f"missing: {rel}")
            continue
        if path.is_symlink():  # the autograder refuses links: it would grade the release file instead
            errors.append(f"a link, not a file: {rel} (copy the file itself here)")
            continue
        if path.stat().st_size > MAX_FILE:
            errors.append(f"too large for the autograder ({path.stat().st_size:,} bytes > {MAX_FILE:,}): {rel}")
            continue
        for line, step, label in unfinished(path.read_text(encoding="utf-8", errors="replace")):
            warnings.append(f"{rel}:{line}: unfinished {label}")  # the label starts "step N"
            steps.add(step)
        entries.append((path, rel))
    found = [predictions / name for name in PREDICTION_FILES if (predictions / name).is_file()]
    entries += [(p, f"predictions/{p.name}") for p in found]
    if not found:
        warnings.append(f"no prediction files in {predictions} (expected names like {PREDICTION_FILES[0]}; "
                        "the trainers write them there)")
    return entries, errors, warnings, steps


def check_out(out: Path, root: Path, predictions: Path) -> str | None:
    """Why the zip may not be written at `out`, or None. The folders it zips (those of the graded files
    and the predictions folder) must not receive it: a later run would find it there."""
    out = out.resolve()
    zipped = {(root / rel).resolve().parent for rel in graded_files(root)} | {predictions.resolve()}
    inside = sorted(str(d) for d in zipped if d == out.parent or d in out.parents)
    if inside:
        return f"{out} is inside a folder that the submission zips ({inside[0]}); write it elsewhere"
    if out.is_dir():
        return f"{out} is a folder; give the zip's file name"
    return None


def write_zip(entries: list[tuple[Path, str]], out: Path) -> None:
    """Write the zip next to `out` first and rename it into place, so a failure leaves no partial zip."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".submission-", suffix=".zip", dir=out.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path, name in entries:
                zf.write(path, name)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a zip is an ordinary file
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def submit(root: Path, out: Path, predictions: Path, force: bool = False) -> int:
    """Pack the submission; returns the exit status (0 written, 1 refused). Messages go to stdout/stderr."""
    entries, errors, warnings, steps = collect(root, predictions)
    if errors:
        print(f"error: {root} cannot be submitted; nothing was written:", file=sys.stderr)
        print("\n".join(f"  {e}" for e in errors), file=sys.stderr)
        return 1
    why = check_out(out, root, predictions)
    if why is None and out.exists() and not force:
        why = f"{out} exists; pass --force to replace it"
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 1
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if steps:
        print(f"warning: step(s) {', '.join(map(str, sorted(steps)))} still raise NotImplementedError: the autograder "
              "gives them 0. The zip is written anyway.", file=sys.stderr)
    write_zip(entries, out)
    width = max(len(name) for _, name in entries)
    for path, name in entries:
        print(f"  {name:<{width}}  {path.stat().st_size:>9,} bytes")
    print(f"wrote {out} ({len(entries)} files); upload it to Gradescope")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m course.submit", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                    help="the tree to submit (default: the one holding this course/ package)")
    ap.add_argument("--out", type=Path, help="the zip to write (default ROOT/submission.zip)")
    ap.add_argument("--predictions", type=Path, metavar="DIR",
                    help="where the trainers wrote the prediction files (default ROOT/predictions)")
    ap.add_argument("--force", action="store_true", help="replace the zip if it exists")
    args = ap.parse_args(argv)
    root = args.root.resolve()
    if not root.is_dir():
        print(f"error: {root} is not a folder", file=sys.stderr)
        return 1
    return submit(root, args.out or root / "submission.zip", args.predictions or root / "predictions", args.force)


if __name__ == "__main__":
    sys.exit(main())
