"""Apple MPS: the branches written for CUDA that must also handle --device mps. No MPS device runs here,
so each branch's logic is tested with torch's MPS queries patched (what they would answer on a Mac);
what only a Mac can show (the kernels, autocast and the scaler on the GPU) stays unproven."""
import pytest
import torch

from training.engine import checkpointing, distributed
from training.multitask import options
from training import run_mlm, run_predict
from training.engine.loop import Precision


@pytest.fixture
def mac(monkeypatch):
    """torch as on a Mac with Apple silicon: MPS available, no CUDA."""
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_device_mps_runs_the_default_recipe_in_fp32(mac):
    args = options.parse_args(["--device", "mps"])  # the default preset: --amp auto
    assert args.amp == "none" and options.auto_amp("mps") == "none"
    assert options.parse_args(["--device", "mps", "--amp", "fp16"]).amp == "fp16"  # asked for: allowed


def test_device_mps_without_mps_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        options.parse_args(["--device", "mps"])
    assert "MPS is not available on this machine" in capsys.readouterr().err


def test_amp_on_other_devices_is_refused():
    assert options.amp_problems("bf16", "mps") == [] and options.amp_problems("fp16", "cpu") == []
    assert "cuda, mps or cpu" in options.amp_problems("fp16", "meta")[0]


def test_run_mlm_picks_fp32_on_mps(mac, tmp_path):
    args = run_mlm.parse_args(["--device", "mps", "--steps", "1", "--out", str(tmp_path / "o")])
    assert args.amp == "none"


def test_auto_amp_on_cuda_is_bf16_where_native_else_fp16(monkeypatch):
    """The T4/V100 case: CUDA without native bf16 gets fp16, not emulated bf16."""
    monkeypatch.setattr(torch.cuda, "device", lambda d: __import__("contextlib").nullcontext())
    for native, want in ((True, "bf16"), (False, "fp16")):
        seen = []

        def is_bf16_supported(including_emulation=True, native=native):
            seen.append(including_emulation)
            return native or including_emulation  # emulation would say yes on every GPU
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
        assert options.auto_amp("cuda:0") == want and seen == [False]


def test_torchrun_on_mps_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SystemExit, match="on a Mac run one process"):
        distributed.init("mps")


def test_checkpoints_carry_the_mps_rng_state(mac, monkeypatch):
    """A resume on MPS restores the generator its dropout draws from (until now only CUDA's was saved)."""
    saved = torch.arange(16, dtype=torch.uint8)
    restored = []
    monkeypatch.setattr(torch.mps, "get_rng_state", lambda: saved.clone())
    monkeypatch.setattr(torch.mps, "set_rng_state", lambda t: restored.append(t.clone()))
    state = checkpointing.rng_state()
    assert "mps" in state
    checkpointing.set_rng_state(state)
    assert len(restored) == 1 and torch.equal(restored[0], saved)


def test_run_predict_accepts_mps_where_it_exists(mac, monkeypatch, capsys):
    args = run_predict.parse_args(["--run", "r", "--task", "sst", "--device", "mps", "x"])
    assert args.device == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        run_predict.parse_args(["--run", "r", "--task", "sst", "--device", "mps", "x"])
    assert "MPS is not available" in capsys.readouterr().err


def test_fp16_on_mps_scales_on_the_mps_device():
    precision = Precision.of("fp16", "mps", say=lambda *a: None)
    assert precision.scaler is not None and precision.scaler._device == "mps"
    assert Precision.of("none", "mps").scaler is None


def test_the_benchmark_syncs_and_counts_memory_on_mps(monkeypatch):
    """bench/benchmark.py's GPU mode on a Mac: it waits for MPS kernels and reads MPS's allocator
    (patched here: no Mac on this machine)."""
    import torch
    from bench import benchmark
    calls = []
    monkeypatch.setattr(torch.mps, "synchronize", lambda: calls.append("sync"))
    monkeypatch.setattr(torch.mps, "current_allocated_memory", lambda: 3 * 2**20)
    benchmark.device_sync(torch.device("mps"))()
    assert calls == ["sync"]
    assert benchmark.allocated(torch.device("mps")) == 3 * 2**20
    assert benchmark.allocated(torch.device("cpu")) == 0


def test_the_usage_device_table_is_what_amp_auto_picks(monkeypatch):
    """docs/USAGE.md's `--amp auto` table, row by row, against options.auto_amp on each kind of device
    (the device's capabilities patched)."""
    import contextlib
    import re
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "docs" / "USAGE.md").read_text()
    rows = [r for r in text.splitlines() if r.startswith("| ") and "`--amp auto` picks" not in r and "|--" not in r]
    table = rows[:5]
    picks = [re.search(r"`(bf16|fp16|none)`", r.split("|")[2]).group(1) for r in table]
    monkeypatch.setattr(torch.cuda, "device", lambda d: contextlib.nullcontext())
    got = []
    for cuda_native, cpu_native, device in ((True, True, "cuda:0"), (False, True, "cuda:0"), (True, True, "cpu"),
                                            (True, False, "cpu"), (True, True, "mps")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True, n=cuda_native: n)
        monkeypatch.setattr(options, "cpu_has_bf16", lambda n=cpu_native: n)
        got.append(options.auto_amp(device))
    assert got == picks, (table, got)
