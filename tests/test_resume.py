"""Crash-safe checkpoints and --resume: a run killed with SIGKILL and resumed ends bit-identical to a
run that was never interrupted (CPU, one thread): weights, optimizer state, metrics, predictions, log."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from reliability_cases import FIXTURE_DATA, SCRIPT, base_argv, make_tiny_checkpoint, snapshot
from minbert import AdamW
from minbert.safetensors import load_safetensors, save_safetensors
from training.engine import checkpointing
from training import run_multitask
from training.engine.streams import TaskStream

# 3 epochs of the fixture data, batch 2: 21 steps (proportional) or 9 (PCGrad + an extra sst epoch);
# ema: the proportional run with --ema (last/ carries the average: outcome() compares it too).
MODES = {"proportional": [], "pcgrad": ["--pcgrad", "--extra-epochs", "sst=1"], "ema": ["--ema", "0.9"]}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), dropout=0.1)  # dropout on: RNG state matters


def argv(ckpt, out, *extra):
    return base_argv(ckpt, FIXTURE_DATA, out) + ["--epochs", "3", "--save-every", "2", *extra]


def cli(*args, **kw):
    return subprocess.Popen([sys.executable, str(SCRIPT), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, **kw)


def outcome(out) -> dict:
    """Everything a finished run leaves behind, minus wall-clock times."""
    state, tensors = checkpointing.load(out / "last")
    best = load_safetensors(out / "best" / "model.safetensors")
    rows = [{k: v for k, v in json.loads(line).items() if k != "minutes"}
            for line in (out / "log.jsonl").read_text().splitlines()]
    keep = ("step", "streams", "lr_schedule", "optimizer", "running", "best", "skipped", "rng", "order", "done")
    return {"tensors": {**{f"last.{g}.{k}": v for g, ts in tensors.items() for k, v in ts.items()},
                        **{f"best.{k}": v for k, v in best.items()}},
            "state": {k: state[k] for k in keep},
            "history": [{k: v for k, v in h.items() if k != "minutes"} for h in state["history"]],
            "dev": json.loads((out / "best" / "options.json").read_text())["dev"],
            "predictions": {f.name: f.read_bytes() for f in sorted((out / "predictions").iterdir())},
            "log": rows}


def assert_same(a: dict, b: dict) -> None:
    assert a["tensors"].keys() == b["tensors"].keys()
    different = [k for k in a["tensors"] if not torch.equal(a["tensors"][k], b["tensors"][k])]
    assert not different, f"not bit-identical: {different[:5]}"
    for key in ("state", "history", "dev", "predictions", "log"):
        assert a[key] == b[key], key


@pytest.fixture(scope="module")
def uninterrupted(ckpt, tmp_path_factory):
    """The outcome of an uninterrupted run per mode (made once; --save-every does not change it)."""
    cache = {}

    def get(mode):
        if mode not in cache:
            out = tmp_path_factory.mktemp(f"uninterrupted-{mode}")
            run_multitask.main(argv(ckpt, out, *MODES[mode]))
            cache[mode] = (outcome(out), checkpointing.saved_step(out / "last"))
        return cache[mode]
    return get


def kill_after_save(p, out, step: int) -> int:
    """SIGKILL the run from outside as soon as its checkpoint of `step` (or a later one) is committed."""
    deadline = time.time() + 120
    while (checkpointing.saved_step(out / "last") or 0) < step and p.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    p.send_signal(signal.SIGKILL)
    assert p.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed: " + p.stderr.read()
    return checkpointing.saved_step(out / "last")


@pytest.mark.parametrize("mode", ["proportional", "pcgrad", "ema"])
def test_run_killed_with_sigkill_and_resumed_ends_bit_identical(tmp_path, ckpt, uninterrupted, mode):
    reference, total = uninterrupted(mode)
    out = tmp_path / "killed"
    p = cli(*argv(ckpt, out, *MODES[mode]))
    saved = kill_after_save(p, out, 4)
    assert saved is not None and saved < total
    run_multitask.main(argv(ckpt, out, *MODES[mode], "--resume"))  # the same process as the reference
    assert_same(reference, outcome(out))


def test_sigterm_stops_like_ctrl_c_with_a_whole_checkpoint_and_a_resume_hint(tmp_path, ckpt, uninterrupted):
    out = tmp_path / "stopped"
    p = cli(*argv(ckpt, out))
    deadline = time.time() + 120
    while not checkpointing.exists(out / "last") and p.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) == 130
    err = p.stderr.read()
    assert "interrupted; to continue, run the same command with --resume" in err, err
    checkpointing.load(out / "last")  # whole: it loads
    run_multitask.main(argv(ckpt, out, "--resume"))
    assert_same(uninterrupted("proportional")[0], outcome(out))


def test_external_sigkill_at_a_random_moment_then_resume(tmp_path, ckpt, uninterrupted):
    """A real kill from outside, at whatever the run is doing (saving every step, evaluating ...)."""
    out = tmp_path / "killed"
    p = cli(*argv(ckpt, out, "--save-every", "1"))
    deadline = time.time() + 60
    while not checkpointing.exists(out / "last") and p.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    time.sleep(random.Random(0).uniform(0.0, 0.2))  # the run takes a second or more after its first save
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    run_multitask.main(argv(ckpt, out, "--save-every", "1", "--resume"))
    assert_same(uninterrupted("proportional")[0], outcome(out))


def test_resume_of_a_finished_run_only_predicts_again(tmp_path, ckpt):
    out = tmp_path / "run"
    first = run_multitask.main(argv(ckpt, out))
    before = snapshot(out / "last")
    again = run_multitask.main(argv(ckpt, out, "--resume"))
    assert again["dev"] == first["dev"] and snapshot(out / "last") == before


def test_resume_without_a_checkpoint_starts_from_the_beginning(tmp_path, ckpt):
    a = run_multitask.main(argv(ckpt, tmp_path / "a"))
    b = run_multitask.main(argv(ckpt, tmp_path / "b", "--resume"))
    assert a["dev"] == b["dev"]


def test_overwrite_replaces_an_earlier_run(tmp_path, ckpt):
    out = tmp_path / "run"
    run_multitask.main(argv(ckpt, out, "--epochs", "1"))
    run_multitask.main(argv(ckpt, out, "--overwrite"))
    assert checkpointing.load(out / "last")[0]["history"][-1]["epoch"] == 3
    assert sum('"eval": "dev"' in line for line in (out / "log.jsonl").read_text().splitlines()) == 3


# ----------------------------------------------------------------------------- the pieces


def test_crash_during_a_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    d = tmp_path / "last"
    old = {"model": {"w": torch.arange(6.0)}, "optimizer": {"0.exp_avg": torch.ones(3)}}
    checkpointing.save(d, old, {"step": 1})
    before = snapshot(d)
    real = checkpointing.save_safetensors

    def crash_after_the_first_file(tensors, path, metadata=None):
        real(tensors, path, metadata)
        if "optimizer" in str(path):
            raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(checkpointing, "save_safetensors", crash_after_the_first_file)
    with pytest.raises(KeyboardInterrupt):
        checkpointing.save(d, {"model": {"w": torch.zeros(6)}, "optimizer": {"0.exp_avg": torch.zeros(3)}}, {"step": 2})
    state, tensors = checkpointing.load(d)
    assert state["step"] == 1 and torch.equal(tensors["model"]["w"], old["model"]["w"])
    monkeypatch.setattr(checkpointing, "save_safetensors", real)
    (d / ".state.json.0123.tmp").write_text("{")  # a temp file whose rename never happened
    checkpointing.save(d, old, {"step": 3})  # the next save sweeps the orphaned files away
    assert len(snapshot(d)) == len(before) == 3


def test_stream_position_round_trips(tmp_path):
    encoded = [{"input_ids": [1] * (3 + i % 7), "token_type_ids": [0] * (3 + i % 7), "id": str(i), "label": i % 5}
               for i in range(23)]
    for consumed in (0, 1, 5, 6, 17):
        a = TaskStream(encoded, 4, 0, seed=3)
        for _ in range(consumed):
            a.next_indices()
        b = TaskStream(encoded, 4, 0, seed=3)
        b.load_state_dict(json.loads(json.dumps(a.state_dict())))
        assert [a.next_indices() for _ in range(15)] == [b.next_indices() for _ in range(15)]


def test_rng_states_round_trip():
    g = torch.Generator().manual_seed(5)
    state = json.loads(json.dumps(checkpointing.rng_state({"pcgrad": g})))
    draws = (torch.rand(3), np.random.rand(3), random.random(), torch.randperm(9, generator=g))
    torch.manual_seed(99), np.random.seed(99), random.seed(99), g.manual_seed(99)
    checkpointing.set_rng_state(state, {"pcgrad": g})
    again = (torch.rand(3), np.random.rand(3), random.random(), torch.randperm(9, generator=g))
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1])
    assert draws[2] == again[2] and torch.equal(draws[3], again[3])


def test_optimizer_state_round_trips_exactly(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    groups = [{"params": net[0].parameters(), "lr": 1e-2, "name": "a"}, {"params": net[1].parameters(), "lr": 5e-3}]
    opt = AdamW(groups, weight_decay=0.1)

    def step(o, model):
        model(torch.ones(2, 4)).sum().backward()
        o.step()
        o.zero_grad()

    step(opt, net)
    tensors, meta = checkpointing.optimizer_state(opt)
    save_safetensors(tensors, tmp_path / "opt.safetensors")  # through the file, as in a real resume
    tensors, meta = load_safetensors(tmp_path / "opt.safetensors"), json.loads(json.dumps(meta))
    twin = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    twin.load_state_dict(net.state_dict())
    opt2 = AdamW([{"params": twin[0].parameters(), "lr": 1.0, "name": "a"},
                  {"params": twin[1].parameters(), "lr": 1.0}])
    checkpointing.load_optimizer_state(opt2, tensors, meta)
    step(opt, net), step(opt2, twin)
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), twin.parameters()))


def test_a_checkpoint_older_than_an_option_resumes_at_its_default_and_only_there(tmp_path, ckpt):
    """A last/ written before --task-layers, --ema and --sts-loss existed does not record them: it resumes when
    they are at their defaults (the default preset's, for the two that presets set), and a run that sets one
    of them is refused as a different run."""
    out = tmp_path / "run"
    first = run_multitask.main(argv(ckpt, out))
    state_file = out / "last" / checkpointing.STATE
    state = json.loads(state_file.read_text())
    for new in ("task_layers", "ema", "sts_loss"):
        del state["options"][new]  # as a checkpoint written before the option was added
    state_file.write_text(json.dumps(state))
    again = run_multitask.main(argv(ckpt, out, "--resume"))
    assert again["dev"] == first["dev"]
    with pytest.raises(SystemExit, match=r"cannot resume with different options.*--task-layers 0 \(now 1\)"):
        run_multitask.main(argv(ckpt, out, "--resume", "--task-layers", "1"))
    with pytest.raises(SystemExit, match=r"cannot resume with different options.*--ema 0.0 \(now 0.999\)"):
        run_multitask.main(argv(ckpt, out, "--resume", "--ema", "0.999"))
