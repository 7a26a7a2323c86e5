"""The course's own assignment (issue 28): course/assignment.toml chooses the steps students write
(the others ship solved), their points and each test's visibility; make_student checks it with
file:line errors, and the release, its public checks and Gradescope's results follow it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from course import assignment, manifest
from course.assignment import AssignmentError, load, parse_steps
from course.compare import TestResult as Result
from course.grade import StepResult, gradescope_json, stored_material
from course.make_student import find_fences, known_files, make_student
from course.steps import LARGE_STEPS, STEPS

ROOT = Path(__file__).resolve().parents[1]
PROFILE = """\
steps = "1-6,9"

[points]
6 = 20

[visibility]
"6.long_run" = "hidden"
"1.dropout" = "after_due_date"
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "a.toml").write_text(text)
    return tmp_path / "a.toml"


def test_the_shipped_assignment_file_grades_every_step_with_the_tables_points():
    plan = load(ROOT / "course" / "assignment.toml", root=ROOT)
    assert plan.steps == tuple(s.number for s in STEPS if s.number not in LARGE_STEPS)
    assert plan.points == {s.number: s.points for s in STEPS} and plan.visibility == {}


def test_step_lists_and_the_steps_override():
    assert parse_steps("1-6,9") == [1, 2, 3, 4, 5, 6, 9] and parse_steps(" 3 , 1") == [1, 3]
    for bad in ("1-x", "6-1", "one"):
        with pytest.raises(ValueError):
            parse_steps(bad)
    plan = load(ROOT / "course" / "assignment.toml", steps="2,4", root=ROOT)
    assert plan.steps == (2, 4)


@pytest.mark.parametrize("text, line, words", [
    ('steps = "1-13"\n', 1, "unknown step 13"),
    ('steps = "1-11"\n[points]\n4 = -1\n', 3, "must be a number >= 0"),
    ('steps = "1-11"\n[points]\n13 = 5\n', 3, "points for unknown step '13'"),
    ('steps = "1-11"\n[visibility]\n"6.longrun" = "hidden"\n', 3, "step 6's tests are"),
    ('steps = "1-11"\n[visibility]\n"6.long_run" = "secret"\n', 3, "visibility 'secret'"),
    ('steps = "1-7,9-11"\n', 1, "step 8 would ship solved while step 10 is graded"),
    ('step = "1-11"\n', 1, "unknown setting 'step'"),
])
def test_a_bad_assignment_stops_with_file_and_line(tmp_path, text, line, words):
    path = write(tmp_path, text)
    with pytest.raises(AssignmentError) as e:
        load(path, root=ROOT)
    assert f"{path}:{line}: " in str(e.value) and words in str(e.value), str(e.value)


def test_a_step_whose_files_are_missing_stops_the_generator(tmp_path):
    tree = tmp_path / "tree"
    (tree / "minbert").mkdir(parents=True)
    with pytest.raises(AssignmentError, match="step 9's file training/engine/pcgrad.py is not in"):
        load(write(tmp_path, 'steps = "9"\n'), root=tree)


def test_a_function_fenced_for_two_steps_cannot_ship_half_written(tmp_path):
    tree = tmp_path / "tree"
    path = "heads/pooling.py"
    (tree / "heads").mkdir(parents=True)
    text = (ROOT / path).read_text()
    # a second fence in mean_pool, labelled for step 8: mean_pool is then fenced for steps 7 and 8
    text = text.replace("    _check(h, mask)\n", "    _check(h, mask)\n    # BEGIN SOLUTION step 8: x\n"
                        "    pass\n    # END SOLUTION\n", 1)
    (tree / path).write_text(text)
    problems = assignment.half_fenced([7], tree)
    assert len(problems) == 1 and problems[0].startswith(f"{path}:") and "half written" in problems[0]
    assert assignment.half_fenced([7, 8], tree) == [] and assignment.half_fenced([1], tree) == []


def test_the_generator_refuses_a_bad_assignment_before_writing(tmp_path):
    out = tmp_path / "release"
    proc = subprocess.run([sys.executable, "-m", "course.make_student", str(out), "--steps", "1-7,9-11"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "--steps: step 8 would ship solved" in proc.stderr and not out.exists()


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("profile") / "a.toml"
    path.write_text(PROFILE)
    out = path.parent / "release"
    make_student(ROOT, out, plan=load(path, root=ROOT))
    return out


def test_the_unchosen_steps_ship_solved_and_the_manifest_holds(release):
    assert [f for p in release.rglob("*.py") for f in find_fences(p.read_text(), str(p))] == []
    for step in STEPS:
        for path in step.fences:
            text = (release / path).read_text()
            stubbed = any(f"raise NotImplementedError({q}step {step.number}:" in text for q in "'\"")
            assert stubbed == (step.number in (1, 2, 3, 4, 6, 9)), (step.number, path)
    got = {p.relative_to(release).as_posix() for p in release.rglob("*") if p.is_file()}
    assert {p for p in got if not manifest.is_generated(p)} == set(manifest.release_files(known_files(ROOT)))
    for gone in ("course/reference.py", "course/checks_tasks.py", "minbert/fast.py", "minbert/fused_adamw.py"):
        assert not (release / gone).exists()


def test_public_checks_cover_the_chosen_steps_and_never_a_hidden_test(release):
    public = sorted(p.name for p in (release / "course" / "public").iterdir())
    assert public == [f"step{n:02d}.safetensors" for n in (1, 2, 3, 4, 5, 6, 9)]
    m = stored_material(6, release / "course" / "public")
    assert m.hidden == {"long_run"}
    hidden = {k: v for k, v in m.expected.tensors.items() if k.startswith("long_run.")}
    assert hidden and all("~" not in k and not v.any() for k, v in hidden.items())  # shapes only, no values
    assert any(k.startswith("decoupled_decay.") and v.any() for k, v in m.expected.tensors.items())
    assert json.loads((release / "course" / "assignment.json").read_text())["points"]["6"] == 20


def test_the_release_grades_its_steps_with_the_assignments_points(release):
    proc = subprocess.run([sys.executable, "-m", "course.grade", "--steps", "6", "--json", "r.json"], cwd=release,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    d = json.loads((release / "r.json").read_text())
    assert d["max_score"] == 20 and len(d["tests"]) == 6
    outcomes = {t["extra_data"]["test"]: t["output"].split()[0] for t in d["tests"]}
    assert outcomes["long_run"] == "HIDDEN" and {v for k, v in outcomes.items() if k != "long_run"} == {"ERROR"}
    assert {t["visibility"] for t in d["tests"] if t["extra_data"]["test"] == "long_run"} == {"hidden"}


def test_each_named_test_is_a_gradescope_entry_with_its_share_of_the_points():
    step = next(s for s in STEPS if s.number == 7)
    tests = [Result("mean", "passed"), Result("poisoned", "failed", "h * mask keeps nan", "step07.nan_kept",
                                                      "h * mask keeps nan"), Result("empty_row", "passed")]
    d = gradescope_json([StepResult(step, "partial", tests)], 1.0, seed=3)
    assert [t["number"] for t in d["tests"]] == ["7.1", "7.2", "7.3"]
    assert [t["score"] for t in d["tests"]] == pytest.approx([10 / 3, 0, 10 / 3])
    assert sum(t["max_score"] for t in d["tests"]) == pytest.approx(d["max_score"]) == 10
    assert d["score"] == pytest.approx(sum(t["score"] for t in d["tests"]), abs=0.01)
    assert d["tests"][1]["extra_data"] == {"step": 7, "test": "poisoned",
                                           "mistakes": [{"id": "step07.nan_kept", "text": "h * mask keeps nan"}]}
    assert all(t["visibility"] == "visible" for t in d["tests"])


def test_the_larger_piece_assignment_scores_zero_unsolved_and_full_solved(tmp_path):
    """course/assignment-large.toml: step 1 also asks for SelfAttention.split_heads and forward, and step
    12 for the multitask training step's batch_loss. Its release scores 0/N, every failure a
    NotImplementedError; solved, N/N."""
    from course.grade import grade
    from course.make_student import solve
    plan = load(ROOT / "course" / "assignment-large.toml", root=ROOT)
    assert plan.large
    out = tmp_path / "release"
    fences = make_student(ROOT, out, plan=plan)
    assert {f.function for f in fences if f.path == "minbert/attention.py"} == {
        "extended_attention_mask", "split_heads", "attention", "forward"}
    assert 12 in plan.steps and [(f.path, f.function) for f in fences if f.step == 12] == [
        ("training/multitask/recipe.py", "batch_loss")]
    total = sum(s.points for s in plan.table())
    unsolved = grade(out, jobs=2, seed=1)
    assert sum(r.score for r in unsolved) == 0 and sum(r.step.points for r in unsolved) == total
    assert all("NotImplementedError" in t.message for r in unsolved for t in r.tests), \
        [r.output() for r in unsolved if any("NotImplementedError" not in t.message for t in r.tests)]
    solve(ROOT, out)
    assert "NotImplementedError" not in (out / "minbert" / "attention.py").read_text()
    assert "NotImplementedError" not in (out / "training" / "multitask" / "recipe.py").read_text()
    solved = grade(out, jobs=2, seed=1)
    assert sum(r.score for r in solved) == total, [r.output() for r in solved if r.score != r.step.points]
