"""python -m course.submit packs exactly what the Gradescope autograder grades (the step table's files)
plus the course's prediction files, refuses a tree that lacks a graded file, names every unfinished
step, never replaces a zip unless told, and writes a zip that course.autograder.assemble takes."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from course import autograder, submit
from course.make_student import strip_solutions
from training.multitask import tasks

ROOT = Path(__file__).resolve().parents[1]
EDIT = "\n# a student's edit\n"  # makes each submitted file differ from the repository's


def course_prediction_files() -> list[str]:
    """The prediction files the trainers write: training/multitask/tasks.py's table (run_multitask, run_ensemble)
    and run_classifier's {task}-{split}-output.csv for its single-sentence tasks sst and cfimdb."""
    names = {tasks.prediction_file("predictions", t, s).name for t in tasks.TASKS for s in ("dev", "test")}
    return sorted(names | {f"{t}-{s}-output.csv" for t in ("sst", "cfimdb") for s in ("dev", "test")})


def make_tree(tmp_path: Path, with_course: bool = True) -> Path:
    """A student's tree: the graded files (edited), the course package's release side that submit needs,
    every course prediction file, and things that must stay out of the zip."""
    tree = tmp_path / "tree"
    for rel in autograder.editable_files():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text((ROOT / rel).read_text(encoding="utf-8") + EDIT, encoding="utf-8")
    if with_course:  # the release holds assignment.py, steps.py and submit.py, not autograder.py
        for rel in ("course/__init__.py", "course/assignment.py", "course/steps.py", "course/submit.py"):
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, tree / rel)
    preds = tree / "predictions"
    preds.mkdir()
    for i, name in enumerate(course_prediction_files()):
        (preds / name).write_text(f"id \t Predicted \n{i} , 1 \n")
    (preds / "my-notes.csv").write_text("not a course file\n")
    (tree / "explore.ipynb").write_text("{}\n")
    (tree / "runs" / "multitask" / "best").mkdir(parents=True)
    (tree / "runs" / "multitask" / "best" / "model.safetensors").write_bytes(b"\0" * 64)
    (tree / "minbert" / "scratch.py").write_text("print('mine')\n")
    return tree


def run_submit(tree: Path, *args: str) -> subprocess.CompletedProcess:
    """The command a student types, run in the tree itself (so it works without course/autograder.py)."""
    return subprocess.run([sys.executable, "-m", "course.submit", *args], cwd=tree, capture_output=True,
                          text=True, timeout=60)


def test_the_graded_files_and_limit_are_the_autograders():
    assert submit.graded_files() == autograder.editable_files()
    assert submit.MAX_FILE == autograder.MAX_FILE
    assert sorted(submit.PREDICTION_FILES) == course_prediction_files()


def test_the_zip_holds_exactly_the_graded_files_and_the_prediction_files(tmp_path):
    tree = make_tree(tmp_path)
    r = run_submit(tree)
    assert r.returncode == 0, r.stderr
    out = tree / "submission.zip"
    expected = autograder.editable_files() + [f"predictions/{n}" for n in course_prediction_files()]
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == sorted(expected)
        for name in expected:
            assert zf.read(name) == (tree / name).read_bytes(), name
    for name in expected:  # the printed list: each path with its size
        assert f"{(tree / name).stat().st_size:,} bytes" in next(line for line in r.stdout.splitlines()
                                                                 if line.split()[:1] == [name])
    assert str(out) in r.stdout
    assert "unfinished" not in r.stderr


def test_other_prediction_and_output_folders(tmp_path):
    tree = make_tree(tmp_path)
    elsewhere = tmp_path / "preds-ensemble"
    elsewhere.mkdir()
    (elsewhere / "sts-test-output.csv").write_text("id \t Predicted_Similiary \n1 , 2.5000 \n")
    out = tmp_path / "upload" / "mine.zip"
    r = run_submit(tree, "--predictions", str(elsewhere), "--out", str(out))
    assert r.returncode == 0, r.stderr
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == sorted(autograder.editable_files() + ["predictions/sts-test-output.csv"])
        assert zf.read("predictions/sts-test-output.csv") == (elsewhere / "sts-test-output.csv").read_bytes()
    shutil.rmtree(elsewhere)
    elsewhere.mkdir()
    r = run_submit(tree, "--predictions", str(elsewhere), "--out", str(tmp_path / "none.zip"))
    assert r.returncode == 0 and "no prediction files" in r.stderr
    with zipfile.ZipFile(tmp_path / "none.zip") as zf:
        assert sorted(zf.namelist()) == autograder.editable_files()


def test_a_missing_graded_file_refuses_and_writes_nothing(tmp_path):
    tree = make_tree(tmp_path)
    gone = ["heads/pooling.py", "training/engine/pcgrad.py"]
    for rel in gone:
        (tree / rel).unlink()
    before = sorted(p.name for p in tree.iterdir())
    r = run_submit(tree)
    assert r.returncode == 1
    for rel in gone:
        assert f"missing: {rel}" in r.stderr
    assert sorted(p.name for p in tree.iterdir()) == before  # no zip, no half-written temporary


def test_each_unfinished_step_is_named_and_the_zip_is_still_written(tmp_path):
    tree = make_tree(tmp_path)
    stubbed = {}
    for rel in ("minbert/attention.py", "training/methods/gan.py"):  # make_student's own stubs of steps 1 and 11
        text, fences = strip_solutions((ROOT / rel).read_text(encoding="utf-8"), rel)
        (tree / rel).write_text(text, encoding="utf-8")
        stubbed[rel] = [f for f in fences if not f.large]  # the larger-piece fences stay solved
    r = run_submit(tree)
    assert r.returncode == 0, r.stderr
    warned = [line for line in r.stderr.splitlines() if "unfinished step" in line]
    assert len(warned) == sum(len(f) for f in stubbed.values())
    for rel, fences in stubbed.items():
        lines = (tree / rel).read_text(encoding="utf-8").splitlines()
        for f in fences:
            line = next(w for w in warned if w.startswith(f"warning: {rel}:") and w.endswith(f"unfinished {f.label}"))
            assert f.label.startswith(f"step {f.step}: ")
            number = int(line.split(":")[2])  # the stub is at the line the warning names
            assert lines[number - 1].strip() == f"raise NotImplementedError({f.label!r})"
    assert "step(s) 1, 11 still raise NotImplementedError" in r.stderr
    with zipfile.ZipFile(tree / "submission.zip") as zf:
        assert zf.read("training/methods/gan.py") == (tree / "training/methods/gan.py").read_bytes()


def test_an_existing_zip_is_replaced_only_with_force(tmp_path):
    tree = make_tree(tmp_path)
    out = tree / "submission.zip"
    out.write_bytes(b"an older submission")
    r = run_submit(tree)
    assert r.returncode == 1 and "--force" in r.stderr
    assert out.read_bytes() == b"an older submission"
    r = run_submit(tree, "--force")
    assert r.returncode == 0, r.stderr
    with zipfile.ZipFile(out) as zf:
        assert zf.read("minbert/attention.py") == (tree / "minbert/attention.py").read_bytes()


def test_the_zip_never_goes_into_a_folder_it_zips(tmp_path):
    tree = make_tree(tmp_path)
    for where in ("minbert/submission.zip", "training/engine/sub/submission.zip", "predictions/submission.zip"):
        r = run_submit(tree, "--out", where)
        assert r.returncode == 1 and "inside a folder that the submission zips" in r.stderr, where
        assert not (tree / where).exists()


def test_gradescope_assembles_the_zip(tmp_path):
    tree = make_tree(tmp_path, with_course=False)
    out = tmp_path / "submission.zip"
    assert submit.main(["--root", str(tree), "--out", str(out)]) == 0
    folder = tmp_path / "submission"
    with zipfile.ZipFile(out) as zf:
        zf.extractall(folder)
    scaffold = tmp_path / "scaffold"  # the repository's packages (not its .venv)
    for pkg in ("minbert", "heads", "training", "data", "course"):
        shutil.copytree(ROOT / pkg, scaffold / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    log = autograder.assemble(scaffold, folder, tmp_path / "graded")
    assert log == [f"submitted: {rel}" for rel in autograder.editable_files()]
    for rel in autograder.editable_files():
        assert (tmp_path / "graded" / rel).read_bytes() == (tree / rel).read_bytes()


def test_help_explains_itself(tmp_path):
    r = run_submit(make_tree(tmp_path), "--help")
    assert r.returncode == 0
    for word in ("--out", "--predictions", "--force", "NotImplementedError", "Gradescope"):
        assert word in r.stdout


def test_the_graded_files_follow_the_trees_assignment(tmp_path):
    """The standard assignment leaves step 12's file (shipped solved) out; the larger-piece one asks for it."""
    from course import assignment
    from course.steps import STEPS
    large = assignment.load(ROOT / "course" / "assignment-large.toml")
    (tmp_path / "course").mkdir()
    (tmp_path / "course" / "assignment.json").write_text(large.to_json())
    step12 = set(next(s for s in STEPS if s.number == 12).fences)
    assert step12 <= set(submit.graded_files(tmp_path))
    assert not step12 & set(submit.graded_files())  # this repository: the standard assignment
    assert set(submit.graded_files(tmp_path)) == {p for s in STEPS if s.number in large.steps for p in s.fences}
