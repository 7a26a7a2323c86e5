"""The course tooling is consistent: the fence parser, the scaffold generator, and the grader on the
student scaffold (every step 0 points, failing with NotImplementedError) and on this repository
(full marks). Each tree is graded once (module-scoped fixtures), two steps at a time."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from course.grade import gradescope_json, grade
from course.make_student import BEGIN, END, FenceError, find_fences, make_student, source_files, strip_solutions
from course.steps import LARGE_STEPS, STEPS, fence_label

ROOT = Path(__file__).resolve().parents[1]


def src(text: str) -> str:
    """Test sources spell the markers <BEGIN>/<END>, so this file itself holds no fence."""
    return textwrap.dedent(text).replace("<BEGIN>", BEGIN).replace("<END>", END)


# ---- the fence parser ----

def test_fence_becomes_a_raise_at_its_indentation_keeping_signature_and_docstring():
    text = src('''\
        def f(x: int) -> int:
            """Docstring stays."""
            y = x
            <BEGIN> step 3: add one
            y = y + 1
            <END>
            return y
        ''')
    out, fences = strip_solutions(text, "pkg/mod.py")
    assert out == src('''\
        def f(x: int) -> int:
            """Docstring stays."""
            y = x
            raise NotImplementedError('step 3: add one')
            return y
        ''')
    assert [(f.begin, f.end, f.function, f.step) for f in fences] == [(4, 6, "f", 3)]
    compile(out, "pkg/mod.py", "exec")


def test_bare_fence_is_labelled_from_the_step_table():
    text = src('''\
        class SelfAttention:
            def attention(self, q, k, v, mask):
                <BEGIN>
                return q
                <END>
        ''')
    out, (fence,) = strip_solutions(text, "minbert/attention.py")
    assert fence.step == 1 and fence.label.startswith("step 1: ")
    assert "        raise NotImplementedError('step 1: " in out
    assert fence_label("somewhere/else.py", "g") == (None, "implement g in somewhere/else.py")


@pytest.mark.parametrize("text, message", [
    ("<BEGIN>\nx = 1\n<BEGIN>\ny = 2\n<END>\n", "m.py:3: BEGIN SOLUTION inside the fence opened at line 1"),
    ("x = 0\n<BEGIN>\nx = 1\n", "m.py:2: BEGIN SOLUTION is never closed"),
    ("x = 0\n<END>\n", "m.py:2: END SOLUTION without a BEGIN"),
    ("def f():\n    <BEGIN>\n    x = 1\n<END>\n", "m.py:4: END SOLUTION is indented differently"),
], ids=["nested", "unclosed", "stray-end", "misindented"])
def test_malformed_fences_are_errors_naming_file_and_line(text, message):
    with pytest.raises(FenceError, match=message):
        find_fences(src(text), "m.py")


def test_markers_must_be_whole_comment_lines():
    text = src('s = "<BEGIN>"\n# <BEGIN>S are documented here\n')
    assert find_fences(text, "m.py") == []


def test_every_fence_in_the_repository_belongs_to_a_step():
    fences = [f for rel in source_files(ROOT) if rel.endswith(".py")
              for f in find_fences((ROOT / rel).read_text(encoding="utf-8"), rel)]
    orphans = [f"{f.path}:{f.begin}" for f in fences if f.step is None]
    assert not orphans, f"fences without a step (label them or add a row to course/steps.py): {orphans}"


def test_step_numbers_are_unique_and_each_has_a_probe_and_a_verdict():
    from course.grade import VERDICTS, producers
    from course.probes import PROBES
    numbers = [s.number for s in STEPS]
    assert len(set(numbers)) == len(numbers), numbers
    assert set(numbers) == set(VERDICTS) == set(PROBES) == set(producers())
    for n, (_, tests, depends) in VERDICTS.items():  # dependencies name tests of the same step, earlier ones
        assert all(t in tests and all(p in tests[:tests.index(t)] for p in ps) for t, ps in depends.items()), n


def test_make_student_refuses_to_overwrite(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="--force"):
        make_student(ROOT, tmp_path)
    with pytest.raises(ValueError, match="source tree"):
        make_student(ROOT, ROOT)


# ---- the grader on both trees ----

@pytest.fixture(scope="module")
def scaffold(tmp_path_factory):
    out = tmp_path_factory.mktemp("course") / "student"
    fences = make_student(ROOT, out)
    return out, fences


@pytest.fixture(scope="module")
def scaffold_results(scaffold):
    return {r.step.number: r for r in grade(scaffold[0], jobs=2)}


@pytest.fixture(scope="module")
def solution_results():
    return {r.step.number: r for r in grade(ROOT, jobs=2)}


def test_scaffold_keeps_no_solution_and_no_instructor_files(scaffold):
    out, fences = scaffold
    assert fences, "the repository has no solution fences"
    leftovers = [f"{f.path}:{f.begin}" for p in out.rglob("*.py") for f in find_fences(p.read_text(), str(p))]
    assert leftovers == []
    for instructor_only in ("tests/grader_cases.py", "docs/TEACHING.md", "tests/test_course.py"):
        assert not (out / instructor_only).exists()  # alternative solutions, instructor notes
    assert "python -m course.grade" in (out / "README.md").read_text()


def test_runner_imports_the_graded_copy_not_the_installed_packages(scaffold):
    from course.runner import BOOT
    out = scaffold[0]
    code = BOOT.split("import course.runner")[0] + "import minbert, heads, training; print(minbert.__file__, heads.__file__, training.__file__)"
    files = subprocess.run([sys.executable, "-I", "-c", code, str(out)], cwd=out, capture_output=True,
                           text=True, check=True).stdout.split()
    assert all(Path(f).resolve().is_relative_to(out.resolve()) for f in files), files


def test_scaffold_scores_zero_and_every_failure_is_not_implemented(scaffold_results):
    for n, r in scaffold_results.items():
        assert r.status == "failed" and r.score == 0, f"step {n}: {r.status}, {r.score} points\n{r.output()}"
        unrelated = [t.name for t in r.tests if "NotImplementedError" not in t.message]
        assert not unrelated, f"step {n}: failures not caused by the missing code: {unrelated}\n{r.output()}"


def test_solution_gets_full_marks(solution_results):
    for n, r in solution_results.items():
        assert r.status == "passed" and r.score == r.step.points, f"step {n}:\n{r.output()}"


def test_gradescope_results_json(solution_results):
    results = list(solution_results.values())
    d = json.loads(json.dumps(gradescope_json(results, 12.5, seed=1234)))
    assert d["max_score"] == sum(s.points for s in STEPS if s.number not in LARGE_STEPS) and d["execution_time"] == 12.5
    assert d["extra_data"]["seed"] == 1234 and len(d["extra_data"]["grader_version"]) == 16
    assert d["score"] == pytest.approx(sum(t["score"] for t in d["tests"]))
    assert {"name", "number", "score", "max_score", "output", "visibility"} <= set(d["tests"][0])
