"""Every trainer still takes the same steps: its per-step training losses on the fixture data (CPU,
fp32) equal, to 1e-6, the ones recorded from the code before the training loop was refactored
(tests/fixtures/loss_traces.json, made by tests/loss_traces.py, which names the commit)."""
import json
import math

import pytest

from loss_traces import CASES, FIXTURE, make_checkpoint, record

STORED = json.loads(FIXTURE.read_text())["cases"]
# Where each recorded script lives now (the entry scripts were renamed in the refactor).
SCRIPTS = {"training/run_multitask.py": "training/run_multitask.py",
           "training/run_classifier.py": "training/run_classifier.py",
           "training/distill.py": "training/run_distill.py",
           "training/run_gan.py": "training/run_gan.py"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("trace-bert"))


@pytest.mark.parametrize("name", list(CASES))
def test_training_losses_match_the_recorded_trace(name, ckpt, tmp_path):
    expected = STORED[name]["losses"]
    assert len(set(expected)) > len(expected) // 2, "a trace of (nearly) constant losses tests nothing"
    got = record(name, ckpt, tmp_path, script=SCRIPTS[STORED[name]["script"]])
    assert len(got) == len(expected), f"{name}: {len(got)} loss calls, the trace has {len(expected)}"
    bad = [(i, g, e) for i, (g, e) in enumerate(zip(got, expected)) if not math.isclose(g, e, rel_tol=1e-6, abs_tol=1e-6)]
    assert not bad, f"{name}: {len(bad)} losses differ; first (call, now, recorded): {bad[:3]}"
