"""--preset best (issue 18): the full preset plus the two options that measured best on dev, a task-specific
top layer and the EMA of the weights. A tiny run shows both take effect, and that an option given on the
command line overrides the preset's value."""
import json

import pytest
from reliability_cases import FIXTURE_DATA
from training.multitask import options
from training import run_distill, run_multitask


def tiny_best_run(ckpt, out, *extra):
    return run_multitask.main(["--model", str(ckpt), "--data-dir", str(FIXTURE_DATA), "--device", "cpu",
                               "--preset", "best", "--epochs", "1", "--limit-train", "16", "--limit-eval", "16",
                               "--max-length", "32", "--batch-size", "4", "--amp", "none", "--threads", "1",
                               "--out-dir", str(out), "--predictions-dir", str(out / "pred"), *extra])


def dev_rows(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if '"eval": "dev"' in line]


def test_preset_best_runs_with_task_layers_and_the_weight_average(tiny_checkpoint, tmp_path):
    out = tmp_path / "best"
    tiny_best_run(tiny_checkpoint, out)
    assert json.loads((out / "best" / "heads.json").read_text())["heads"]["task_layers"] == 1
    weights = (out / "best" / "model.safetensors").read_bytes()
    assert b"task_layers.sst.0." in weights and b"task_layers.quora.0." in weights  # each task's own top layer
    assert "raw_overall" in dev_rows(out)[-1]  # EMA on: the raw weights are scored beside the average


def test_options_given_override_the_preset(tiny_checkpoint, tmp_path):
    out = tmp_path / "plain"
    tiny_best_run(tiny_checkpoint, out, "--task-layers", "0", "--ema", "0")
    assert json.loads((out / "best" / "heads.json").read_text())["heads"]["task_layers"] == 0
    assert b"task_layers." not in (out / "best" / "model.safetensors").read_bytes()
    assert "raw_overall" not in dev_rows(out)[-1]


def test_the_other_presets_leave_both_off_and_the_distillation_trainer_refuses_best():
    for preset in ("full", "quick"):
        a = options.parse_args(["--device", "cpu", "--preset", preset])
        assert (a.task_layers, a.ema) == (0, 0)
    with pytest.raises(SystemExit):
        run_distill.parse_args(["all", "--device", "cpu", "--preset", "best"])
