"""The student release is exactly its manifest (course/manifest.py), holds no answer, and grades
itself on its stored public checks as the live producers would (issue 27)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from course import manifest
from course.grade import judge, live_material, stored_material
from course.make_student import PUBLIC_SEED, find_fences, known_files, make_student
from course.probes import run_probe

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("release") / "student"
    make_student(ROOT, out)
    return out


def tree_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def test_every_file_of_the_repository_is_in_the_manifest():
    unclassified = [p for p in known_files(ROOT) if manifest.classify(p) is None]
    assert unclassified == [], f"add these to RELEASE or INSTRUCTOR in course/manifest.py: {unclassified}"


def test_the_release_is_exactly_the_manifest(release):
    expected = set(manifest.release_files(known_files(ROOT)))
    got = tree_files(release)
    generated = {p for p in got if manifest.is_generated(p)}
    assert got - generated == expected, (sorted(got - generated - expected), sorted(expected - got))
    assert {"README.md", "PROJECT.md", "requirements.txt"} <= generated
    assert {f"course/public/step{n:02d}.safetensors" for n in range(1, 12)} <= generated


def test_the_release_leaves_out_the_producers_references_and_fast_paths(release):
    for gone in ("course/reference.py", "course/checks_model.py", "course/checks_tasks.py", "minbert/fast.py",
                 "minbert/fused_adamw.py", "tests/grader_cases.py", "course/make_student.py", "docs/TEACHING.md"):
        assert not (release / gone).exists(), gone
    leftovers = [f"{p}:{f.begin}" for p in release.rglob("*.py") for f in find_fences(p.read_text(), str(p))]
    assert leftovers == []
    requirements = (release / "requirements.txt").read_text()
    assert "torch==" in requirements and "transformers" not in requirements.split("#")[0]
    names = [line.split(">")[0].split("=")[0].strip() for line in requirements.splitlines() if line and line[0] != "#"]
    assert not set(names) & set(manifest.REFERENCE_LIBRARIES), names


def test_no_release_file_holds_code_that_computes_a_graded_step(release):
    """Names of the instructors' references and of the fast paths that did a step by themselves."""
    markers = ("def attention_math", "def bert_layer", "def layer_forward", "_fused_adamw_(", "def masked_mean",
               "def project_in_order", "scaled_dot_product_attention(", "def torch_attention",
               "def _fused_coefficients", "def additive_mask")
    found = [(p.relative_to(release).as_posix(), m) for p in release.rglob("*.py") for m in markers
             if m in p.read_text()]
    allowed = {("course/guard.py", m) for m in markers}  # the guard names what it refuses, and calls nothing
    assert set(found) <= allowed, found


def test_stored_public_checks_judge_like_the_live_producers(release):
    """On the public seed, the solution's outputs and one wrong output per step get the same verdict
    from the stored tensors as from the live producers."""
    public = release / "course" / "public"
    for step in range(1, 12):
        live, stored = live_material(step, PUBLIC_SEED), stored_material(step, public)
        assert stored.seed == PUBLIC_SEED and stored.spec == json.loads(json.dumps(live.spec))
        out = run_probe(step, {k: v.clone() for k, v in stored.tensors.items()}, stored.spec, release / "scratch")
        assert judge(step, live, out.tensors, out.errors) == judge(step, stored, out.tensors, out.errors)
        assert all(r.outcome == "passed" for r in judge(step, stored, out.tensors, out.errors)), step
        wrong = {k: v * 1.5 + 0.25 if v.is_floating_point() else v for k, v in out.tensors.items()}
        verdict = judge(step, stored, wrong, out.errors)
        assert verdict == judge(step, live, wrong, out.errors) and any(r.outcome != "passed" for r in verdict)


def test_the_release_grades_itself_on_its_stored_checks(release):
    """python -m course.grade in the release: no producer there, so the stored public checks; the
    unsolved steps score 0, with NotImplementedError."""
    proc = subprocess.run([sys.executable, "-m", "course.grade", "--steps", "7,9", "--json", "r.json"], cwd=release,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"seed {PUBLIC_SEED}" in proc.stdout, proc.stdout
    results = json.loads((release / "r.json").read_text())
    assert results["score"] == 0 and all("NotImplementedError" in t["output"] for t in results["tests"])
    proc = subprocess.run([sys.executable, "-m", "course.grade", "--steps", "7", "--seed", "3"], cwd=release,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "takes no --seed" in proc.stderr
