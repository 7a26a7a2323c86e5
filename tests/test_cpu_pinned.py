"""The guard that keeps CPU tests on the CPU (tests/cpu_guard.py, applied by conftest.py) fires."""
import argparse
import subprocess
import sys

import pytest

from cpu_guard import problem, script_of


@pytest.mark.parametrize("argv, pinned", [
    (["--epochs", "1"], False),
    (["--device", "cuda"], False),
    (["--device", "cuda:0"], False),
    (["--device=cuda:1"], False),
    (["--device", "cuda", "--device", "cpu"], True),  # argparse keeps the last one
    (["--device", "cpu"], True),
    (["--device=cpu"], True),
    (["--device", "tpu"], True),      # refused by the trainer itself: runs nowhere
    (["--device", "cuda:99"], True),  # a device no machine has: an option-error test
])
def test_problem_tells_pinned_from_unpinned(argv, pinned):
    assert (problem(argv) is None) == pinned


def test_script_of_finds_trainers_in_command_lines():
    assert script_of([sys.executable, "training/run_multitask.py", "--device", "cpu"]) == "run_multitask.py"
    assert script_of([sys.executable, "-m", "torch.distributed.run", "/x/training/run_multitask.py"]) == "run_multitask.py"
    assert script_of([sys.executable, "-c", "print(1)"]) is None


def test_guard_fails_an_unpinned_in_process_parse():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    with pytest.raises(pytest.fail.Exception, match="--device cpu"):
        p.parse_args([])
    assert p.parse_args(["--device", "cpu"]).device == "cpu"


def test_guard_leaves_parsers_without_device_alone():
    p = argparse.ArgumentParser()
    p.add_argument("--x", default=1)
    assert p.parse_args([]).x == 1


def test_guard_fails_an_unpinned_trainer_subprocess():
    with pytest.raises(pytest.fail.Exception, match="run_multitask.py"):
        subprocess.run([sys.executable, "training/run_multitask.py", "--epochs", "1"])


@pytest.mark.gpu
def test_gpu_marked_tests_are_not_guarded():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    assert p.parse_args([]).device == "cuda"
