"""The instructor's view of a whole class, from a regrade's results (instructor-only, not in the student release).

    python -m course.report RESULTS_DIR --submissions DIR --out REPORT_DIR [--threshold T] [--no-solution]

RESULTS_DIR holds one Gradescope results JSON per submission, <submission id>.json (what
`python -m course.autograder --regrade DIR` writes); DIR holds the submission folders they came from.
REPORT_DIR gets:
- grades.csv: one row per submission, one column per step, the total and the maximum (gradebook import);
- summary.md: per step the mean, the median, the share at full marks and the class's mistakes, most
  frequent first (counted by the mistake ids the grader records, never by parsing its text), and a
  line for every results file that could not be read;
- scores.png: a histogram of the totals and the share at full marks per step (needs matplotlib);
- similar.md: the pairs of submissions whose graded code is overly similar (course/code_similarity.py).
A broken or incomplete results file is listed and skipped, never fatal.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from . import code_similarity
from .steps import STEPS

NAMES = {s.number: s.name for s in STEPS}
POINTS = {s.number: s.points for s in STEPS}
FULL = 1e-6  # a step at full marks: score >= max_score - FULL (scores are rounded to 0.01)


@dataclass
class Result:
    sid: str
    score: float
    max_score: float
    steps: dict[int, list[float]] = field(default_factory=dict)    # step -> [score, max_score]
    mistakes: dict[int, set[str]] = field(default_factory=dict)    # step -> mistake ids
    texts: dict[str, str] = field(default_factory=dict)            # mistake id -> text
    version: str = ""


def _number(x: object, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ValueError(f"{what} is {x!r}, not a number")
    return float(x)


def load_result(path: Path) -> Result:
    """One results file. Raises ValueError (with the reason) when it is not valid JSON or lacks fields."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("tests"), list):
        raise ValueError("no list of tests")
    extra = data.get("extra_data") if isinstance(data.get("extra_data"), dict) else {}
    r = Result(path.stem, _number(data.get("score"), "score"), _number(data.get("max_score"), "max_score"),
               version=str(extra.get("grader_version", "")))
    for i, t in enumerate(data["tests"]):
        if not isinstance(t, dict):
            raise ValueError(f"test {i} is not an object")
        ed = t.get("extra_data") if isinstance(t.get("extra_data"), dict) else {}
        step = ed.get("step", t.get("number"))  # before the contract: the step is the test's number
        try:
            step = int(step)
        except (TypeError, ValueError):
            raise ValueError(f"test {i} has no step (number {t.get('number')!r})") from None
        got = r.steps.setdefault(step, [0.0, 0.0])
        got[0] += _number(t.get("score"), f"test {i} score")
        got[1] += _number(t.get("max_score"), f"test {i} max_score")
        for m in ed.get("mistakes") or []:
            if isinstance(m, dict) and isinstance(m.get("id"), str):
                r.mistakes.setdefault(step, set()).add(m["id"])
                r.texts.setdefault(m["id"], str(m.get("text") or m["id"]))
    return r


def load_results(folder: Path) -> tuple[list[Result], list[str]]:
    """(the readable results, sorted by id; a line per file that could not be read)."""
    results, broken = [], []
    for path in sorted(folder.glob("*.json")):
        try:
            results.append(load_result(path))
        except ValueError as e:
            broken.append(f"{path.name}: {e}")
    return results, broken


def step_numbers(results: list[Result]) -> list[int]:
    return sorted(set(POINTS) | {s for r in results for s in r.steps})


def write_csv(results: list[Result], path: Path) -> None:
    steps = step_numbers(results)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["submission", *[f"step_{n}" for n in steps], "total", "max_score"])
        for r in results:
            w.writerow([r.sid, *[f"{r.steps[n][0]:g}" if n in r.steps else "" for n in steps],
                        f"{r.score:g}", f"{r.max_score:g}"])


def step_stats(results: list[Result], step: int) -> dict:
    graded = [r.steps[step] for r in results if step in r.steps]
    scores = [s for s, _ in graded]
    counts = Counter(m for r in results for m in r.mistakes.get(step, ()))  # a set per submission: counted once
    texts = {m: t for r in results for m, t in r.texts.items()}
    return {"n": len(graded), "max": max((m for _, m in graded), default=POINTS.get(step, 0.0)),
            "mean": statistics.fmean(scores) if scores else float("nan"),
            "median": statistics.median(scores) if scores else float("nan"),
            "full": sum(s >= m - FULL for s, m in graded) / len(graded) if graded else float("nan"),
            "mistakes": [(texts[m], m, c) for m, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]}


def summary_md(results: list[Result], broken: list[str], notes: list[str]) -> str:
    totals = [r.score for r in results]
    out = ["# Class report", "",
           f"{len(results)} submissions read, {len(broken)} results files unreadable."]
    if totals:
        out.append(f"Total: mean {statistics.fmean(totals):.2f}, median {statistics.median(totals):g} "
                   f"of {max(r.max_score for r in results):g}.")
    versions = Counter(r.version for r in results)
    if len(versions) > 1:
        out.append("Warning: the results come from different grader versions: " +
                   ", ".join(f"{v or 'unknown'} ({n})" for v, n in versions.most_common()) + ".")
    out += ["", *notes]
    if broken:
        out += ["", "## Unreadable results files", "", *[f"- {b}" for b in broken]]
    out += ["", "## Steps", "", "| step | name | points | graded | mean | median | full marks |",
            "|---|---|---|---|---|---|---|"]
    stats = {n: step_stats(results, n) for n in step_numbers(results)}
    for n, s in stats.items():
        if not s["n"]:  # a step no results file graded (a regrade of some steps only)
            out.append(f"| {n} | {NAMES.get(n, '?')} | {s['max']:g} | 0 | - | - | - |")
            continue
        out.append(f"| {n} | {NAMES.get(n, '?')} | {s['max']:g} | {s['n']} | {s['mean']:.2f} | {s['median']:g} | "
                   f"{100 * s['full']:.0f}% |")
    out += ["", "## Mistakes the class made", "",
            "Per step, the root-cause mistakes the grader recognised, most frequent first; "
            "a submission counts once per mistake.", ""]
    for n, s in stats.items():
        if s["mistakes"]:
            out += [f"### Step {n}: {NAMES.get(n, '?')}", ""]
            out += [f"- {text} (`{mid}`): {c} submission{'s' * (c != 1)}" for text, mid, c in s["mistakes"]]
            out.append("")
    if not any(s["mistakes"] for s in stats.values()):
        out += ["No mistake ids recorded (results from before the grader recorded them, or no failures).", ""]
    return "\n".join(out).rstrip() + "\n"


def write_png(results: list[Result], path: Path) -> str:
    """scores.png, or the line that says how to get it."""
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        return ("scores.png was not written: matplotlib is not installed. For the picture: "
                "`pip install -e '.[plots]'` (or `pip install matplotlib`), then run the report again.")
    steps = step_numbers(results)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.hist([r.score for r in results], bins=20)
    left.set(title="totals", xlabel="score", ylabel="submissions")
    right.bar([str(n) for n in steps], [100 * step_stats(results, n)["full"] for n in steps])
    right.set(title="share at full marks", xlabel="step", ylabel="% of submissions", ylim=(0, 100))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return "scores.png: the totals and the share at full marks per step."


def submission_folders(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="folder of <submission id>.json results files")
    ap.add_argument("--submissions", type=Path, help="folder of submission folders (for similar.md)")
    ap.add_argument("--out", type=Path, required=True, help="folder to write the report into")
    ap.add_argument("--threshold", type=float, default=code_similarity.THRESHOLD,
                    help=f"pair score listed in similar.md (default {code_similarity.THRESHOLD:g})")
    ap.add_argument("--max-pairs", type=int, default=100, help="pairs shown in full in similar.md (default 100)")
    ap.add_argument("--no-solution", action="store_true",
                    help="do not compare the submissions with this repository's solution")
    args = ap.parse_args(argv)
    if not args.results.is_dir():
        print(f"error: {args.results} is not a directory", file=sys.stderr)
        return 2
    start = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    results, broken = load_results(args.results)
    for b in broken:
        print(f"unreadable: {b}", file=sys.stderr)
    write_csv(results, args.out / "grades.csv")
    notes = [write_png(results, args.out / "scores.png")]
    if args.submissions is not None:
        folders = submission_folders(args.submissions)
        ids = {r.sid for r in results}
        lost = sorted(set(folders) - ids)
        if lost:
            notes.append(f"Submissions without a results file ({len(lost)}): {', '.join(lost)}.")
        if not args.no_solution:
            folders["(solution)"] = code_similarity.REPO  # a copy of a leaked solution shows up as a pair with it
        pairs, subs = code_similarity.similarity(folders)
        text = code_similarity.similar_md(pairs, subs, args.threshold, max_pairs=args.max_pairs)
        (args.out / "similar.md").write_text(text, encoding="utf-8")
        flagged = sum(p.score >= args.threshold for p in pairs)
        notes.append(f"similar.md: {flagged} of {len(pairs)} pairs at or above {args.threshold:g}.")
    else:
        notes.append("No --submissions folder given, so no similarity check (similar.md).")
    (args.out / "summary.md").write_text(summary_md(results, broken, notes), encoding="utf-8")
    print("\n".join(notes))
    print(f"report for {len(results)} submissions in {args.out} ({time.monotonic() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
