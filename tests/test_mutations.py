"""tests/test_learning.py can fail: run it in a subprocess under two mutations of torch that break
learning everywhere, and expect failures (and no failure without a mutation).

Each mutation is a sitecustomize.py in a temporary folder put first on PYTHONPATH, so Python
imports it at start-up, before pytest and the project:
- sign: every gradient's sign flipped (torch.autograd.backward, which Tensor.backward calls, and
  torch.autograd.grad, which GAN-BERT's players and PCGrad call): gradient ascent.
- zero_grad: Optimizer.zero_grad and Module.zero_grad do nothing, so .grad accumulates over steps
  (minbert.AdamW inherits Optimizer.zero_grad; training/engine/loop.py calls opt.zero_grad).

The mutated run must fail the expected tests (pytest exit code 1), not crash, and the
sitecustomize must have been imported (it writes a marker file). GAN-BERT is not expected to fail
without zero_grad: training/engine/loop.py's backward assigns each player's .grad (p.grad = g) rather than
accumulating, so nothing there depends on zeroing.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

MARK = """
import os
open(os.environ["MUTATION_MARKER"], "w").write("{name}")
import torch
"""

MUTATIONS = {
    "sign": """
_backward, _grad = torch.autograd.backward, torch.autograd.grad


def backward(tensors, grad_tensors=None, *args, **kwargs):
    tensors = (tensors,) if isinstance(tensors, torch.Tensor) else tuple(tensors)
    return _backward(tuple(-t for t in tensors), grad_tensors, *args, **kwargs)  # d(-L) = -dL


def grad(outputs, inputs, *args, **kwargs):
    grads = _grad(outputs, inputs, *args, **kwargs)
    return tuple(None if g is None else -g for g in grads)


torch.autograd.backward, torch.autograd.grad = backward, grad
""",
    "zero_grad": """
torch.optim.Optimizer.zero_grad = lambda self, set_to_none=True: None
torch.nn.Module.zero_grad = lambda self, set_to_none=True: None
""",
}


LEARNING = {"test_multitask_learns_every_task", "test_single_task_classifier_learns",
            "test_distillation_teachers_and_student_learn", "test_gan_bert_discriminator_learns"}
EXPECTED_FAILURES = {"sign": LEARNING, "zero_grad": LEARNING - {"test_gan_bert_discriminator_learns"}}


def run_learning_tests(tmp_path: Path, mutation: str | None) -> tuple[subprocess.CompletedProcess, Path]:
    site = tmp_path / "site"
    site.mkdir()
    marker = tmp_path / "marker"
    if mutation:
        (site / "sitecustomize.py").write_text(MARK.format(name=mutation) + MUTATIONS[mutation])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO), os.environ.get("PYTHONPATH", "")]),
           "MUTATION_MARKER": str(marker)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", "-W", "ignore",
                           str(REPO / "tests" / "test_learning.py")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    return proc, marker


@pytest.mark.grader
def test_learning_tests_pass_without_a_mutation(tmp_path):
    proc, _ = run_learning_tests(tmp_path, None)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


@pytest.mark.grader
@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_learning_tests_fail_under_the_mutation(tmp_path, mutation):
    proc, marker = run_learning_tests(tmp_path, mutation)
    assert marker.is_file() and marker.read_text() == mutation, "the mutation was not loaded"
    assert proc.returncode == 1, f"expected failing tests (exit code 1), got {proc.returncode}:\n" \
                                 + proc.stdout[-4000:] + proc.stderr[-2000:]
    failed = {line.split("::")[1].split()[0] for line in proc.stdout.splitlines() if line.startswith("FAILED")}
    assert failed == EXPECTED_FAILURES[mutation], proc.stdout[-4000:]
