"""Cheating submissions earn nothing (issue 17). Each runs through the real autograder in the
Gradescope layout (make_student --gradescope, unzipped under a temporary AUTOGRADER_ROOT, graded by
its run_autograder), with the student's code as the unprivileged runner user. Every submission is
honest everywhere except training/engine/pcgrad.py (step 9), whose function implements nothing and whose
import runs one trick: step 9 must earn 0 and step 10, graded after it, its full 10 points.

Needs root (the privilege drop): without root these tests fail, they do not skip. Run with the
other grader suites: `pytest -m grader`.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from grader_cases import ROOT, build_autograder, replace_fences, run_gradescope, solution_files

pytestmark = pytest.mark.grader
PCGRAD = "training/engine/pcgrad.py"

FIND_AUTOGRADER = '''
def _autograder_roots():
    import os
    roots = {"/autograder"}
    for pid in os.listdir("/proc"):
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
        except OSError:
            continue
        if b"--root" in args and args.index(b"--root") + 1 < len(args):
            roots.add(args[args.index(b"--root") + 1].decode())
    return sorted(roots)
'''

FAKE_RESULTS = FIND_AUTOGRADER + '''
import json as _json, os as _os
for _root in _autograder_roots() + [_os.getcwd()]:
    for _name, _text in (("results/results.json", _json.dumps({"score": 110, "tests": []})),
                         ("results/junit.xml", '<testsuite tests="1"><testcase name="all"/></testsuite>')):
        try:
            _os.makedirs(_os.path.join(_root, "results"), exist_ok=True)
            open(_os.path.join(_root, _name), "w").write(_text)
        except OSError:
            pass
'''

CHEATS = {
    "os._exit(0) at import": "import os\nos._exit(0)\n",
    "sys.exit(0) at import": "import sys\nsys.exit(0)\n",
    "a fake results.json and JUnit file": FAKE_RESULTS,
    "sleeping past the timeout": "import time\ntime.sleep(3600)\n",
    "allocating all memory": (
        "import torch\n_blocks = []\nwhile True:\n    _blocks.append(torch.empty(1 << 30, dtype=torch.uint8))\n"),
    "an oversized answer": (
        "import json, os, struct, sys\n"
        "_answer = next(a for a in sys.argv if a.endswith('answer.safetensors'))\n"
        "_h = json.dumps({'order.y': {'dtype': 'F32', 'shape': [1 << 40], 'data_offsets': [0, 4 << 40]}}).encode()\n"
        "open(_answer, 'wb').write(struct.pack('<Q', len(_h)) + _h)\n"
        "try:\n    open(_answer + '.big', 'wb').write(bytes(100 << 20))\nexcept OSError:\n    pass\n"
        "os._exit(0)\n"),
    "monkeypatching torch, numpy and pytest": (
        "import numpy, torch\n"
        "torch.allclose = lambda *a, **k: True\ntorch.equal = lambda *a, **k: True\n"
        "torch.Tensor.__eq__ = lambda self, other: torch.ones((), dtype=torch.bool)\n"
        "numpy.allclose = lambda *a, **k: True\n"
        "import course.wire\ncourse.wire.MAX_BYTES = 1 << 40\n"
        "try:\n    import _pytest.reports\n    _pytest.reports.TestReport.outcome = 'passed'\nexcept Exception:\n    pass\n"),
    "a sitecustomize.py and .pth file where Python looks": (
        "import os, site, sys\n"
        "for _d in site.getsitepackages() + [site.getusersitepackages(), sys.path[0], os.getcwd()]:\n"
        "    for _name in ('sitecustomize.py', 'zz_minbert_cheat.pth'):\n"
        "        try:\n"
        "            open(os.path.join(_d, _name), 'w').write('# planted by a cheating submission (harmless)\\n')\n"
        "        except OSError:\n            pass\n"),
    "rewriting course/, the tests and the fixtures": FIND_AUTOGRADER + (
        "import os\nfrom pathlib import Path\n"
        "_targets = [Path(__file__).resolve().parents[1]] + [Path(r) / 'source' / 'scaffold' for r in _autograder_roots()]\n"
        "for _base in _targets:\n"
        "    for _pattern in ('course/*.py', 'tests/graded/*.py', 'tests/fixtures/*'):\n"
        "        for _p in _base.glob(_pattern):\n"
        "            try:\n                _p.write_text('raise SystemExit(0)\\n')\n"
        "            except OSError:\n                pass\n"),
    "a setsid-detached process that outlives the step": FIND_AUTOGRADER + (
        "import os, time\n"
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        for _ in range(600):\n"
        "            for _root in _autograder_roots():\n"
        "                try:\n"
        "                    open(os.path.join(_root, 'results', 'results.json'), 'w').write('{\"score\": 110}')\n"
        "                except OSError:\n                    pass\n"
        "            time.sleep(0.1)\n"
        "        os._exit(0)\n    os._exit(0)\n"),
}


@pytest.fixture(scope="module")
def autograder(tmp_path_factory) -> Path:
    """The unzipped autograder (source/); the runner user exists (root needed: fails, not skips)."""
    return build_autograder(tmp_path_factory.mktemp("gradescope"))


def run_autograder(source: Path, tmp: Path, files: dict[str, str], *args: str) -> dict:
    return run_gradescope(source, tmp, files, *args)


def scores(results: dict) -> dict[int, float]:
    """Each step's score: the sum of its tests' entries."""
    out: dict[int, float] = {}
    for t in results["tests"]:
        out[t["extra_data"]["step"]] = out.get(t["extra_data"]["step"], 0) + t["score"]
    return {step: round(score, 2) for step, score in out.items()}


@pytest.mark.parametrize("trick", list(CHEATS))
def test_a_cheating_step_earns_nothing_and_the_honest_steps_earn_all(trick, autograder, tmp_path):
    files = solution_files()
    files[PCGRAD] = replace_fences(files[PCGRAD], PCGRAD, {"project_conflicting": "raise NotImplementedError('cheat')"})
    files[PCGRAD] += "\n\n# ---- the cheat, run at import ----\n" + CHEATS[trick]
    timeout = "20" if "sleep" in trick else "60"
    results = run_autograder(autograder, tmp_path, files, "--steps", "9,10", "--timeout", timeout)
    assert scores(results) == {9: 0, 10: 10}, results["output"]
    assert results["score"] == 10 and results["extra_data"]["seed"] is not None, results["output"]


def test_stored_fixture_outputs_earn_nothing(autograder, tmp_path):
    """The scaffold ships tests/fixtures with transformers' outputs; the grader's inputs are fresh."""
    files = solution_files()
    path = "minbert/embeddings.py"
    files[path] = replace_fences(files[path], path, {"forward": f'''
        from minbert.safetensors import load_safetensors
        for base in ({str(ROOT)!r}, "/autograder/source/scaffold"):
            try:
                stored = load_safetensors(base + "/tests/fixtures/tiny_reference.safetensors")["expected.embeddings"]
                break
            except Exception:
                stored = torch.zeros(1, 1, 1)
        return stored[:B, :T]
    '''})
    results = run_autograder(autograder, tmp_path, files, "--steps", "3,7")
    assert scores(results) == {3: 0, 7: 10}, results["output"]


def test_an_honest_submission_gets_full_marks_in_the_gradescope_layout(autograder, tmp_path):
    results = run_autograder(autograder, tmp_path, solution_files())
    assert results["score"] == results["max_score"] == 110, results["output"]
    assert len(results["extra_data"]["grader_version"]) == 16


def test_the_runner_cannot_read_or_import_the_checker(autograder, tmp_path):
    """On Gradescope the checker (the producers, the references) sits in source/checker, closed to the
    runner user: a submission that loads its PCGrad reference from there earns nothing."""
    assert (autograder / "checker" / "course" / "checks_tasks.py").is_file()
    files = solution_files()
    files[PCGRAD] = replace_fences(files[PCGRAD], PCGRAD, {"project_conflicting": FIND_AUTOGRADER + textwrap.dedent('''
        import importlib, importlib.util, sys
        errors = []
        for root in _autograder_roots():
            package = root + "/source/checker/course"
            try:
                spec = importlib.util.spec_from_file_location("checker_course", package + "/__init__.py",
                                                              submodule_search_locations=[package])
                sys.modules["checker_course"] = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(sys.modules["checker_course"])
                checks = importlib.import_module("checker_course.checks_tasks")
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")
                continue
            K = len(grads)
            return [checks.project_in_order(grads, i, [j for j in torch.randperm(K, generator=generator).tolist()
                                                       if j != i]).to(grads[i].dtype) for i in range(K)]
        raise RuntimeError("; ".join(errors) or "no checker found")
    ''')})
    results = run_autograder(autograder, tmp_path, files, "--steps", "9,10")
    assert scores(results) == {9: 0, 10: 10}, results["output"]
    assert "Permission denied" in results["output"], results["output"]
    # The control: without the privilege drop the runner is root, reads the checker, and the borrow works.
    results = run_autograder(autograder, tmp_path / "control", files, "--steps", "9", "--no-sandbox")
    assert scores(results) == {9: 10}, results["output"]
