"""The similarity measurement (issue 29, item 4): build a class of known honest and copied
submissions, check that the honest ones score full marks, and measure the detection and false-flag
rates of course/code_similarity.py at its threshold. Instructor-only, like the grader suites.

    PYTHONPATH=tests .venv/bin/python -m similarity_cases.build [--check] [--steps 1,2] [--json OUT]
    PYTHONPATH=tests .venv/bin/python -m similarity_cases.build --synth 300 DIR   # the benchmark's class

(PYTHONPATH=tests: the cases import tests/grader_cases.py by name, as the tests do.)

The class: the solution, ALT_A and ALT_B of tests/grader_cases.py (ALT_B writes five functions; its
other functions are left as the scaffold's stub, so it is compared on those five only), the 20
variants of variants.py (honest), the disguised copies of copies.py and the known-mistake cases of
tests/test_graded_mistakes.py (copies: the solution with one body replaced). A copy is detected when
its pair with the solution scores at or above the threshold; an honest submission is falsely flagged
when any pair with another honest submission does.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from course.autograder import editable_files
from course.make_student import strip_solutions
from course.code_similarity import THRESHOLD, similarity
from grader_cases import ALT_A, ALT_B, ROOT, replace_fences, with_bodies
from similarity_cases.copies import disguised
from similarity_cases.variants import N_VARIANTS, POOLS, variant


def files_for(bodies: dict[tuple[str, str], str], extra: dict[str, str] | None = None,
              stub_rest: bool = False) -> dict[str, str]:
    """The editable files of a submission: the solution with `bodies` in place of its fences (the other
    fences kept, or stubbed as in the scaffold with stub_rest), `extra` appended per file."""
    out = {}
    for path in editable_files():
        text = (ROOT / path).read_text(encoding="utf-8")
        mine = {name: b for (p, name), b in bodies.items() if p == path}
        if mine:
            text = replace_fences(text, path, mine)
        if stub_rest:
            text = strip_solutions(text, path)[0]
        out[path] = text + (extra or {}).get(path, "")
    return out


def cases() -> dict[str, tuple[str, dict[str, str], dict]]:
    """id -> (kind: honest | copy, files, bodies) for the whole measurement class."""
    from test_graded_mistakes import MISTAKES  # needs pytest, as the suite does
    out = {"solution": ("honest", files_for({}), {}),
           "alt_a": ("honest", files_for(ALT_A), ALT_A),
           "alt_b": ("honest", files_for(ALT_B, stub_rest=True), ALT_B)}
    for i in range(N_VARIANTS):
        out[f"variant_{i:02d}"] = ("honest", files_for(variant(i)), variant(i))
    for name, (bodies, extra) in disguised().items():
        out[name] = ("copy", files_for(bodies, extra), bodies)
    for i, (step, bodies, _) in enumerate(MISTAKES):
        out[f"mistake_{i:02d}_step{step:02d}"] = ("copy", files_for(bodies), bodies)
    return out


def write_submission(folder: Path, files: dict[str, str], flat: bool) -> None:
    """At their paths, or flat (file names only) as a student uploading to Gradescope may."""
    names = [Path(p).name for p in files]
    for rel, text in files.items():
        dest = folder / (Path(rel).name if flat and names.count(Path(rel).name) == 1 else rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text, encoding="utf-8")


CHECK = """
import json, sys
from course.grade import check_inline
out = {}
for step in json.loads(sys.argv[1]):
    try:
        tests = check_inline(step, seed=0)
        out[step] = [sum(t.outcome == "passed" for t in tests), len(tests)]
    except Exception as e:
        out[step] = [0, 1, repr(e)]
print(json.dumps(out))
"""


def check_full_marks(name: str, bodies: dict, steps: list[int]) -> dict:
    """check_inline per step on a tree with these bodies, in its own process (it imports the tree)."""
    with tempfile.TemporaryDirectory(prefix=f"simcase-{name}-") as tmp:
        tree = with_bodies(Path(tmp) / "tree", bodies)
        env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, "-c", CHECK, json.dumps(steps)], cwd=tree, env=env,
                              capture_output=True, text=True, timeout=900)
    if proc.returncode:
        return {"error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(pairs, kinds: dict[str, str], threshold: float) -> dict:
    score = {(p.a, p.b): p.score for p in pairs}
    pair = lambda a, b: score.get((a, b), score.get((b, a), 0.0))
    copies = [c for c, k in kinds.items() if k == "copy"]
    honest = [h for h, k in kinds.items() if k == "honest"]
    disguised_ids = [c for c in copies if c.startswith("copy_")]
    mistakes = [c for c in copies if c.startswith("mistake_")]
    honest_pairs = [(a, b) for i, a in enumerate(honest) for b in honest[i + 1:]]
    flagged_pairs = [(a, b) for a, b in honest_pairs if pair(a, b) >= threshold]
    flagged = {x for ab in flagged_pairs for x in ab}
    return {
        "threshold": threshold,
        "disguised_detected": sum(pair(c, "solution") >= threshold for c in disguised_ids),
        "disguised": len(disguised_ids),
        "mistake_cases_detected": sum(pair(c, "solution") >= threshold for c in mistakes),
        "mistake_cases": len(mistakes),
        "honest_flagged": len(flagged), "honest": len(honest),
        "honest_pairs_flagged": len(flagged_pairs), "honest_pairs": len(honest_pairs),
        "flagged_honest_pairs": [f"{a}~{b}: {pair(a, b):.3f}" for a, b in flagged_pairs],
        "lowest_copy_score": min((pair(c, "solution"), c) for c in copies),
        "highest_honest_pair": max((pair(a, b), f"{a}~{b}") for a, b in honest_pairs),
        "copy_scores": {c: round(pair(c, "solution"), 3) for c in disguised_ids},
    }


def synthesise(n: int, dest: Path, seed: int = 0) -> None:
    """n submissions for the benchmark under dest/submissions: one in 20 a copy (cases() cycled), the
    others honest, each function drawn at random from its pool in variants.py or ALT_A; and a results
    JSON per submission under dest/results (scores drawn at random, mistakes from a small catalogue)."""
    rng = random.Random(seed)
    pool = cases()
    copies = sorted(name for name, (kind, _, _) in pool.items() if kind == "copy")
    (dest / "submissions").mkdir(parents=True)
    (dest / "results").mkdir()
    from course.steps import STEPS
    for i in range(n):
        if i % 20 == 0:
            bodies = pool[copies[(i // 20) % len(copies)]][2]
        else:
            bodies = {key: rng.choice(bodies + ([ALT_A[key]] if key in ALT_A else [])) for key, bodies in POOLS.items()}
        sid = f"s{i:03d}"
        write_submission(dest / "submissions" / sid, files_for(bodies), flat=i % 2 == 1)
        tests = []
        for s in STEPS:
            got = s.points if rng.random() < 0.7 else round(s.points * rng.randrange(0, 4) / 4, 2)
            mistakes = [] if got == s.points else [{"id": f"step{s.number:02d}.m{rng.randrange(3)}",
                                                     "text": f"mistake {rng.randrange(3)} of step {s.number}"}]
            tests.append({"name": f"Step {s.number}: {s.name}", "number": str(s.number), "score": got,
                          "max_score": s.points, "status": "passed" if got == s.points else "failed",
                          "output": "", "visibility": "visible", "extra_data": {"step": s.number, "mistakes": mistakes}})
        result = {"score": round(sum(t["score"] for t in tests), 2), "max_score": sum(s.points for s in STEPS),
                  "tests": tests, "extra_data": {"grader_version": "synthetic", "seed": seed}}
        (dest / "results" / f"{sid}.json").write_text(json.dumps(result, indent=1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="check that every honest case scores full marks")
    ap.add_argument("--steps", default="1,2,3,4,5,6,7,8,9,10,11", help="--check: the steps to run")
    ap.add_argument("--cases", help="--check: only these comma-separated case ids")
    ap.add_argument("--threshold", type=float, default=THRESHOLD)
    ap.add_argument("--json", type=Path, help="write the measurement here")
    ap.add_argument("--synth", nargs=2, metavar=("N", "DIR"), help="write N benchmark submissions into DIR")
    args = ap.parse_args(argv)
    if args.synth:
        synthesise(int(args.synth[0]), Path(args.synth[1]))
        return 0
    pool = cases()
    record: dict = {}
    if args.check:
        steps = [int(s) for s in args.steps.split(",")]
        bad = {}
        for name, (kind, _, bodies) in pool.items():
            if kind != "honest" or (args.cases and name not in args.cases.split(",")):
                continue
            start = time.monotonic()
            got = check_full_marks(name, bodies, steps)
            ok = "error" not in got and all(v[0] == v[1] for v in got.values())
            print(f"{name}: {'full marks' if ok else got} ({time.monotonic() - start:.0f} s)", flush=True)
            if not ok:
                bad[name] = got
        record["check"] = {"steps": steps, "not_full_marks": bad}
    with tempfile.TemporaryDirectory(prefix="simclass-") as tmp:
        folders = {}
        for i, (name, (_, files, _)) in enumerate(sorted(pool.items())):
            write_submission(Path(tmp) / name, files, flat=i % 2 == 1)
            folders[name] = Path(tmp) / name
        start = time.monotonic()
        pairs, _ = similarity(folders)
        seconds = time.monotonic() - start
    kinds = {name: kind for name, (kind, _, _) in pool.items()}
    record["similarity_seconds"] = round(seconds, 2)
    record["at_threshold"] = measure(pairs, kinds, args.threshold)
    record["sweep"] = {f"{t:.2f}": {k: v for k, v in measure(pairs, kinds, t).items()
                                    if k in ("disguised_detected", "mistake_cases_detected", "honest_flagged",
                                             "honest_pairs_flagged")}
                       for t in [0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9]}
    text = json.dumps(record, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
