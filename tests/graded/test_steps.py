"""Debug one graded step in this process: the same probe (course/probes.py) and the same verdict
(course/checks_*.py) as `python -m course.grade`, without the runner process, so pdb works.

    python -m pytest tests/graded -k step01                 # one step, every failure in full
    python -m pytest tests/graded -k step01 --pdb --raise   # stop in your code at the first exception

`python -m course.grade` is what scores; this file only helps you find why a step fails.
"""
import pytest

from course import assignment
from course.grade import check_inline
from course.steps import STEPS

# A release grades its assignment's steps (course/assignment.json: a larger piece's step is not in the
# standard one); this repository has no assignment.json and checks every step of the table.
NUMBERS = list(assignment.current().steps) if assignment.RESOLVED.is_file() else [s.number for s in STEPS]


@pytest.mark.parametrize("step", NUMBERS, ids=[f"step{n:02d}" for n in NUMBERS])
def test_step(step, request):
    results = check_inline(step, seed=0, raise_errors=request.config.getoption("--raise", default=False))
    failed = [f"{t.name}: {t.outcome}\n    " + t.message.strip().replace("\n", "\n    ")
              for t in results if t.outcome != "passed"]
    assert not failed, f"step {step}: {len(failed)} of {len(results)} tests failed:\n" + "\n".join(failed)
