"""The runner user reaches what it needs wherever the clone lives (a clone under a private folder,
mode 700, made every sandboxed step crash with `Permission denied: .../.venv/bin/python3`).

With the interpreter staged outside the clone (tests/staging.py), a tree under a private folder
grades to full marks as the runner user; an interpreter or a temp folder the runner user cannot
reach stops the grader before any step, with exit status 2 and a message that names the folder.

Needs root (the privilege drop): without root these tests fail, they do not skip. Run with the
other grader suites: `pytest -m grader`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from course.sandbox import RUNNER_USER
from course.steps import get_steps
from grader_cases import PACKAGES, ROOT
from staging import stage_python

pytestmark = pytest.mark.grader


@pytest.fixture(scope="module")
def staged_python():
    """bin/python of a venv the runner user can reach (under /tmp, not pytest's private basetemp)."""
    assert os.geteuid() == 0, "the sandbox access suite needs root: it tests the privilege drop"
    dest = Path(tempfile.mkdtemp(prefix="minbert-python-"))
    try:
        yield stage_python(dest)  # made 755 there
    finally:
        shutil.rmtree(dest)


@pytest.fixture
def open_tmp():
    """A folder others can traverse (pytest's basetemp is 700: a folder in it would be closed twice)."""
    folder = Path(tempfile.mkdtemp(prefix="minbert-access-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def private(folder: Path) -> Path:
    folder.mkdir()
    folder.chmod(0o700)
    return folder


def grade(python: Path, tree: Path, tmp: Path, **env: str) -> subprocess.CompletedProcess:
    """Step 9 of `tree`, graded by `python` with the runner as the runner user."""
    cmd = [str(python), "-m", "course.grade", "--root", str(tree), "--steps", "9", "--sandbox-user", RUNNER_USER,
           "--jobs", "1", "--json", str(tmp / "results.json")]
    return subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)


def copy_packages(dest: Path) -> Path:
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_a_tree_under_a_private_folder_gets_full_marks_as_the_runner_user(staged_python, tmp_path):
    tree = copy_packages(private(tmp_path / "private") / "tree")
    proc = grade(staged_python, tree, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    (step,) = get_steps([9])
    assert {t["extra_data"]["step"] for t in results["tests"]} == {9}
    assert all(t["status"] == "passed" for t in results["tests"]), results["output"]
    assert results["score"] == results["max_score"] == step.points


def test_an_interpreter_in_a_private_folder_stops_the_grader_naming_the_folder(staged_python, open_tmp, tmp_path):
    # the same venv, reached through a 700 folder: root runs it, the runner user cannot
    closed = private(open_tmp / "closed")
    (closed / "venv").symlink_to(staged_python.parents[1], target_is_directory=True)
    python = closed / "venv" / "bin" / "python"
    proc = grade(python, copy_packages(tmp_path / "tree"), tmp_path)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"cannot run {python}: {closed} is mode 700" in proc.stderr
    assert f"chmod o+x {closed}" in proc.stderr
    assert "total" not in proc.stdout and not (tmp_path / "results.json").exists()  # no step was graded


def test_a_temp_folder_in_a_private_folder_stops_the_grader_naming_the_folder(staged_python, open_tmp, tmp_path):
    # grade.py copies the tree into tempfile's folder: the runner user must reach it too
    closed = private(open_tmp / "closed")
    (closed / "tmp").mkdir(mode=0o777)
    proc = grade(staged_python, copy_packages(tmp_path / "tree"), tmp_path, TMPDIR=str(closed / "tmp"))
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"cannot reach the grader's temp folder {closed / 'tmp'}: {closed} is mode 700" in proc.stderr
    assert "total" not in proc.stdout and not (tmp_path / "results.json").exists()
