"""Graded-step debugging: make sure the code under test (minbert, heads, training) is this tree's,
not another copy that happens to be installed (the course venv pip-installs the repository in
editable mode); --raise lets a probe's first exception propagate to pytest (and --pdb)."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def pytest_addoption(parser):
    parser.addoption("--raise", action="store_true", help="graded steps: re-raise the first exception in your code")


def pytest_configure(config):
    import importlib
    for name in ("minbert", "heads", "training"):
        try:
            module = importlib.import_module(name)
        except Exception:  # a broken student file: the step's test reports the import error itself
            continue
        where = Path(module.__file__).resolve() if module.__file__ else None  # None: a namespace package
        if where is not None and ROOT not in where.parents:
            raise pytest.UsageError(
                f"grading the wrong {name}: imported {where}, expected the one under {ROOT}. Run from "
                f"{ROOT} with PYTHONPATH={ROOT}.")
