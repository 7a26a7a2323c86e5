"""Data-parallel training: 2 processes (torchrun, gloo on CPU) with per-rank batch 2 train the same
model as 1 process with batch 4, to float rounding, PCGrad and uneven last batches included."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from minbert import BertModel
from reliability_cases import FIXTURE_DATA, SCRIPT, base_argv, make_tiny_checkpoint
from training.engine import checkpointing
from training import run_multitask
from training.engine.streams import TaskStream


def encoded(n: int) -> list[dict]:
    return [{"input_ids": [1] * (3 + i * 7 % 11), "token_type_ids": [0] * (3 + i * 7 % 11), "id": str(i), "label": 1}
            for i in range(n)]


@pytest.mark.parametrize("n, batch_size, world_size", [(23, 2, 2), (5, 2, 2), (17, 3, 4), (3, 1, 4), (40, 4, 3)])
def test_rank_shards_together_are_the_single_process_global_batch(n, batch_size, world_size):
    data = encoded(n)
    single = TaskStream(data, batch_size * world_size, 0, seed=7)
    ranks = [TaskStream(data, batch_size, 0, seed=7, rank=r, world_size=world_size) for r in range(world_size)]
    for _ in range(3 * n):  # several epochs
        expected, _ = single.next_indices()
        shards = [s.next_indices() for s in ranks]
        real = [idx for (idx, w) in shards if w > 0]
        assert sorted(i for idx in real for i in idx) == sorted(expected)
        assert all(len(idx) <= batch_size for idx, _ in shards)
        # weight_r = n_r * R / n: DDP's average of (weight_r * mean over rank r) is the global mean
        assert sum(w for _, w in shards) == pytest.approx(world_size)
        assert all(w == pytest.approx(len(idx) * world_size / len(expected)) for idx, w in shards if w > 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), dropout=0.0)  # dropout draws differ per rank


# PCGrad for the multitask epochs (per-task gradients all-reduced by hand), then an sst epoch through
# DDP's own all-reduce; 5 sst examples in global batches of 4 leave one rank with nothing in the last one.
MODE = ["--epochs", "4", "--dropout", "0", "--pcgrad", "--extra-epochs", "sst=2", "--pair-mode", "bi",
        "--sts-mode", "regressor", "--save-every", "2"]


def torchrun_cmd(ckpt, out, *extra) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()), str(SCRIPT),
            *base_argv(ckpt, FIXTURE_DATA, out), *MODE, "--batch-size", "2", *extra]


def torchrun(ckpt, out, *extra) -> subprocess.CompletedProcess:
    return subprocess.run(torchrun_cmd(ckpt, out, *extra), capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def single(ckpt, tmp_path_factory):
    """One process, batch 4: what 2 processes with batch 2 must reproduce."""
    out = tmp_path_factory.mktemp("single")
    run_multitask.main(base_argv(ckpt, FIXTURE_DATA, out) + MODE + ["--batch-size", "4"])
    return out


def assert_same_weights(single, out, tol: float = 1e-6):
    a_state, a = checkpointing.load(single / "last")
    b_state, b = checkpointing.load(out / "last")
    assert a_state["step"] == b_state["step"] and b_state["world_size"] == 2
    start = BertModel.from_pretrained(ckpt_of(single)).state_dict()
    moved = max((a["model"][f"encoder.{k}"] - t).abs().max().item() for k, t in start.items())
    assert moved > 1e-4, "training should have moved the weights"
    worst = max((a["model"][k] - b["model"][k]).abs().max().item() for k in a["model"])
    assert worst < tol, f"DDP and single-process weights differ by {worst}"


def ckpt_of(out):
    return checkpointing.load(out / "last")[0]["options"]["model"]


def test_two_process_gloo_run_matches_single_process_with_the_same_global_batch(tmp_path, ckpt, single):
    out = tmp_path / "ddp"
    p = torchrun(ckpt, out)
    assert p.returncode == 0, p.stderr[-3000:]
    assert_same_weights(single, out)
    # Only rank 0 writes: one log with the single-process run's rows, the same prediction files.
    rows = [len((d / "log.jsonl").read_text().splitlines()) for d in (out, single)]
    assert rows[0] == rows[1]
    assert sorted(f.name for f in (out / "predictions").iterdir()) == sorted(
        f.name for f in (single / "predictions").iterdir())


def test_two_process_run_killed_and_resumed_still_matches(tmp_path, ckpt, single):
    out = tmp_path / "ddp"
    # SIGKILL torchrun and both ranks (their process group) from outside once step 4's checkpoint is in
    p = subprocess.Popen(torchrun_cmd(ckpt, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    deadline = time.time() + 300
    while (checkpointing.saved_step(out / "last") or 0) < 4 and p.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=60)
    assert p.returncode != 0 and checkpointing.saved_step(out / "last") >= 4
    p = torchrun(ckpt, out, "--resume")
    assert p.returncode == 0, p.stderr[-3000:]
    assert_same_weights(single, out)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="an NCCL run needs two CUDA devices")
def test_two_process_nccl_run_matches_single_process_within_cuda_tolerance(tmp_path, ckpt, single):
    """The same run as the gloo test, one GPU per rank and NCCL (distributed.init picks it for cuda).
    CUDA is not bitwise deterministic here (atomics in the unpadding backward, NCCL's reduction
    order) and the reference ran on the CPU, so the weights must agree to 1e-4, not 1e-6."""
    out = tmp_path / "nccl"
    cmd = torchrun_cmd(ckpt, out)
    cmd[cmd.index("--device") + 1] = "cuda"
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert_same_weights(single, out, tol=1e-4)


def test_resume_refuses_another_number_of_processes(tmp_path, ckpt, monkeypatch):
    out = tmp_path / "run"
    run_multitask.main(base_argv(ckpt, FIXTURE_DATA, out) + ["--dropout", "0"])
    state_file = out / "last" / "state.json"
    state_file.write_text(state_file.read_text().replace('"world_size": 1', '"world_size": 2'))
    with pytest.raises(SystemExit) as e:
        run_multitask.main(base_argv(ckpt, FIXTURE_DATA, out) + ["--dropout", "0", "--resume"])
    assert "written by 2 process(es), this run has 1" in str(e.value.code)
