"""course/report.py and course/code_similarity.py: the class report from results JSON files written here
from known numbers, and the similarity check on cases of tests/similarity_cases."""
from __future__ import annotations

import csv
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

from course import report
from course.code_similarity import THRESHOLD, Scaffold, similarity
from course.steps import STEPS
from grader_cases import ALT_A
from similarity_cases.build import files_for, write_submission
from similarity_cases.copies import disguised
from similarity_cases.variants import variant

CATALOGUE = [("step01.scale_head_size", "attention scaled by 1/head_size instead of 1/sqrt(head_size)"),
             ("step01.no_mask", "attention ignores the mask"),
             ("step06.bias_correction", "AdamW without bias correction"),
             ("step09.modified_inputs", "PCGrad projects off the already projected gradients")]


def make_results(folder: Path, n: int, seed: int = 0) -> list[dict]:
    """n results files in the contract's format, some steps split into two entries, one file in the
    format from before the contract (no extra_data per entry). Returns what was written."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(n):
        tests = []
        for s in STEPS:
            halves = 2 if s.number in (1, 6) else 1
            for h in range(halves):
                most = s.points / halves
                got = most if rng.random() < 0.6 else round(most * rng.randrange(0, 3) / 3, 2)
                mistakes = [dict(zip(("id", "text"), m)) for m in CATALOGUE
                            if m[0].startswith(f"step{s.number:02d}.") and got < most and rng.random() < 0.7]
                entry = {"name": f"Step {s.number} part {h}", "number": f"{s.number}.{h}" if halves > 1 else str(s.number),
                         "score": got, "max_score": most, "status": "passed" if got == most else "failed",
                         "output": "attention scaled by 1/head_size" * (i % 2), "visibility": "visible",
                         "extra_data": {"step": s.number, "mistakes": mistakes}}
                if i == 0 and halves == 1:  # before the contract: the step is only in `number`
                    del entry["extra_data"]
                tests.append(entry)
        data = {"score": round(sum(t["score"] for t in tests), 2), "max_score": sum(s.points for s in STEPS),
                "tests": tests, "extra_data": {"grader_version": "test", "seed": seed}}
        (folder / f"sub{i:02d}.json").write_text(json.dumps(data))
        written.append(data)
    return written


def test_csv_totals_and_steps_match_the_json(tmp_path):
    written = make_results(tmp_path / "results", 6)
    assert report.main([str(tmp_path / "results"), "--out", str(tmp_path / "out")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "grades.csv")))
    assert [r["submission"] for r in rows] == [f"sub{i:02d}" for i in range(6)]
    for row, data in zip(rows, written):
        assert float(row["total"]) == data["score"]
        for s in STEPS:
            expected = sum(t["score"] for t in data["tests"] if t["name"].startswith(f"Step {s.number} "))
            assert abs(float(row[f"step_{s.number}"]) - expected) < 1e-9


def test_mistake_counts_match_the_recorded_ids(tmp_path):
    written = make_results(tmp_path / "results", 12, seed=1)
    report.main([str(tmp_path / "results"), "--out", str(tmp_path / "out")])
    expected = Counter(mid for data in written
                       for mid in {m["id"] for t in data["tests"] for m in t.get("extra_data", {}).get("mistakes", [])})
    text = (tmp_path / "out" / "summary.md").read_text()
    found = {m[2]: int(m[3]) for m in re.finditer(r"^- (.+) \(`([\w.]+)`\): (\d+) submissions?$", text, re.M)}
    assert found == dict(expected) and expected
    for mid, words in CATALOGUE:
        if mid in expected:
            assert f"- {words} (`{mid}`)" in text


def test_a_broken_results_file_is_listed_not_fatal(tmp_path, monkeypatch):
    results = tmp_path / "results"
    make_results(results, 2)
    (results / "broken.json").write_text('{"score": 3, "tests": [')
    (results / "fields.json").write_text(json.dumps({"score": 1.0, "max_score": 2.0, "tests": [{"score": 1}]}))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as without matplotlib: the report says how to get it
    assert report.main([str(results), "--out", str(tmp_path / "out")]) == 0
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "- broken.json: not valid JSON" in summary and "- fields.json:" in summary
    assert "2 submissions read, 2 results files unreadable" in summary
    assert "pip install" in summary and not (tmp_path / "out" / "scores.png").exists()
    rows = list(csv.DictReader(open(tmp_path / "out" / "grades.csv")))
    assert [r["submission"] for r in rows] == ["sub00", "sub01"]


def test_a_disguised_copy_is_flagged_and_honest_variants_are_not(tmp_path):
    subs = tmp_path / "subs"
    cases = {"copy": files_for(*disguised()["copy_all"]), "variant": files_for(variant(3)),
             "alt_a": files_for(ALT_A), "other": files_for(variant(11))}
    for i, (name, files) in enumerate(cases.items()):
        write_submission(subs / name, files, flat=i % 2 == 0)
    make_results(tmp_path / "results", 0)
    assert report.main([str(tmp_path / "results"), "--submissions", str(subs), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "similar.md").read_text()
    listed = re.findall(r"^## (\S+) and (\S+): ([\d.]+)$", text, re.M)
    assert [(a, b) for a, b, _ in listed] == [("(solution)", "copy")]  # only the copy, and with the solution
    assert float(listed[0][2]) >= THRESHOLD


def test_renaming_comments_and_the_scaffold_change_nothing():
    """Normalisation: a rename and comments leave the tokens alone; an untouched scaffold is not code."""
    scaffold = Scaffold.from_solution()
    path, name = "training/engine/pcgrad.py", "project_conflicting"
    solution = files_for({})[path]
    renamed = solution.replace("g_i", "mine").replace("projected", "result").replace("others", "order")
    renamed = renamed.replace("    return result", "    # returned below\n    return result")
    assert renamed.count("mine") > 2 and "# returned below" in renamed
    a = scaffold.extract(solution, None, path, name)
    b = scaffold.extract(renamed, None, path, name)
    assert a.tokens == b.tokens and a.written
    bodies, extra = disguised()["copy_helper"]  # code moved into a new helper is compared with the body
    helped = scaffold.extract(files_for(bodies, extra)[path], None, path, name)
    assert "dot = torch.dot(g_i, g_j)" in helped.source and "_remove_conflict" in helped.source
    stub = files_for({}, stub_rest=True)[path]
    assert not scaffold.extract(stub, None, path, name).written
    pairs, _ = similarity({})
    assert pairs == []
