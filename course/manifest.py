"""The student release, written down in one place: which files students get, which stay with the
instructors, and which the generator writes. course/make_student.py copies exactly RELEASE (fences
stripped) and writes GENERATED; tests/test_release.py checks that every tracked file is in exactly one
of RELEASE and INSTRUCTOR, and that a generated release holds exactly RELEASE + GENERATED.

Students read everything they are given, so the release holds what a student needs and nothing that
computes a graded step: no reference (course/reference.py), no producer of expected tensors
(course/checks_*.py), no fast path that does a step on its own (minbert/fast.py: SDPA is step 1 and
layer_forward is step 2; minbert/fused_adamw.py: step 6 through torch's kernel), no unit test that
writes a graded function out as its independent reference, no benchmark. Patterns are fnmatch-style
on repository paths ("*" crosses folders).
"""
from __future__ import annotations

from fnmatch import fnmatchcase

RELEASE = [
    ".gitignore", "setup.sh", "pyproject.toml",
    # the model: every file but the fast paths (minbert/fast.py, minbert/fused_adamw.py)
    "minbert/__init__.py", "minbert/config.py", "minbert/embeddings.py", "minbert/attention.py", "minbert/layer.py",
    "minbert/model.py", "minbert/optimizer.py", "minbert/safetensors.py", "minbert/checkpoint.py", "minbert/hub.py",
    "minbert/tokenizer.py",
    "heads/*.py",
    "data/*.py",
    # the trainers and what they import; not the benchmarks
    "training/__init__.py", "training/run_multitask.py", "training/run_classifier.py", "training/run_distill.py",
    "training/run_gan.py", "training/run_mlm.py", "training/run_predict.py", "training/run_export.py",
    "training/run_ensemble.py", "training/run_summarize.py",
    "training/engine/*.py", "training/multitask/*.py", "training/methods/*.py",
    # the grader's public side: the runner, the probes, the comparisons (they read stored tensors only)
    "course/__init__.py", "course/compare.py", "course/grade.py", "course/guard.py", "course/probes.py",
    "course/runner.py", "course/sandbox.py", "course/steps.py", "course/verdicts_model.py", "course/verdicts_tasks.py",
    "course/wire.py", "course/submit.py", "course/assignment.py",
    # the public checks, and the unit tests that neither compute a graded function of their own nor
    # need a graded step (the data loaders, batching, download, the CPU pin), with their fixture files
    "tests/graded/*", "tests/conftest.py", "tests/cpu_guard.py", "tests/test_batching.py", "tests/test_cpu_pinned.py",
    "tests/test_data_loaders.py", "tests/test_download.py", "tests/fixtures/data/*",
]

INSTRUCTOR = [
    "README.md", "requirements.txt", ".ci/*", "docs/*",
    "minbert/fast.py", "minbert/fused_adamw.py",
    "bench/*.py",
    # the producers, the references, the catalogue of known mistakes, the release and Gradescope tooling
    "course/checks_model.py", "course/checks_tasks.py", "course/reference.py", "course/make_student.py",
    "course/manifest.py", "course/assignment.toml", "course/assignment-large.toml", "course/gradescope.py", "course/autograder.py", "course/report.py", "course/code_similarity.py",
    "course/handout.py",  # writes the release's README.md and PROJECT.md
    "tests/*",
]

# Written by make_student into the release: the handout, the project overview, a requirements file
# without the reference libraries, the stored public checks (course/public/stepNN.safetensors) and the
# resolved assignment (course/assignment.json: the steps graded, their points, the tests' visibility).
GENERATED = ["README.md", "PROJECT.md", "requirements.txt", "course/public/step*.safetensors", "course/assignment.json"]

# Test-only reference libraries: the release's requirements.txt leaves them out (students never need them).
REFERENCE_LIBRARIES = ("transformers", "safetensors", "sentence-transformers")


def classify(path: str) -> str | None:
    """"release" or "instructor" for a repository path, by the first list that names it (RELEASE wins:
    INSTRUCTOR's broad patterns such as tests/* hold what RELEASE does not take); None if neither."""
    if any(fnmatchcase(path, p) for p in RELEASE):
        return "release"
    if any(fnmatchcase(path, p) for p in INSTRUCTOR):
        return "instructor"
    return None


def release_files(paths: list[str]) -> list[str]:
    return sorted(p for p in paths if classify(p) == "release")


def is_generated(path: str) -> bool:
    return any(fnmatchcase(path, p) for p in GENERATED)
