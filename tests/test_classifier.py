"""run_classifier.py (single-task SST / CFIMDB) end to end on the fixture files with a tiny random BERT,
and the labelled subset it shares with run_gan.py."""
import json
import math
from pathlib import Path

import pytest
import torch

from data.datasets import load_task
from minbert import BertModel
from minbert.safetensors import load_safetensors
from training import run_classifier
from training.multitask.splits import labelled_subset, sample

FIXTURE_DATA = Path(__file__).parent / "fixtures" / "data" / "course"



def run(tmp_path, ckpt, *extra, name="run"):
    out = tmp_path / name
    record = run_classifier.main(["--model", str(ckpt), "--data-dir", str(FIXTURE_DATA), "--device", "cpu", "--epochs", "2",
                                  "--batch-size", "2", "--threads", "1", "--out-dir", str(out),
                                  "--predictions-dir", str(out / "predictions"), *extra])
    return record, out


def test_labelled_subset_has_the_requested_size_and_is_nested_across_fractions():
    n = 1000
    sizes = {f: labelled_subset(n, f, seed=3) for f in (0.01, 0.02, 0.05, 0.5, 1.0)}
    for f, idx in sizes.items():
        assert len(idx) == math.ceil(f * n) and len(set(idx)) == len(idx) and idx == sorted(idx)
    assert set(sizes[0.01]) <= set(sizes[0.02]) <= set(sizes[0.05]) <= set(sizes[0.5])
    assert sizes[1.0] == list(range(n))
    assert labelled_subset(n, 0.05, seed=3) == sizes[0.05]
    assert labelled_subset(n, 0.05, seed=4) != sizes[0.05]
    assert len(labelled_subset(10, 0.001, seed=0)) == 1  # never an empty training set
    with pytest.raises(ValueError, match="fraction"):
        labelled_subset(n, 0.0, seed=0)


def test_limits_take_a_fixed_random_sample_in_file_order_not_the_first_rows():
    rows = list(range(100))  # the SST files are sorted by sentiment: the first rows are not representative
    picked = sample(rows, 10)
    assert len(picked) == 10 and picked == sorted(picked) and picked != rows[:10]
    assert sample(rows, 10) == picked and sample(rows, None) == rows and sample(rows, 500) == rows


def test_pretrain_mode_trains_only_the_head_and_writes_course_files(tmp_path, tiny_checkpoint):
    record, out = run(tmp_path, tiny_checkpoint, "--task", "sst", "--mode", "pretrain")
    trained = load_safetensors(out / "model.safetensors")
    original = BertModel.from_pretrained(tiny_checkpoint).state_dict()
    assert all(torch.equal(trained[f"encoder.{k}"], v) for k, v in original.items())
    for split in ("dev", "test"):
        lines = (out / "predictions" / f"sst-{split}-output.csv").read_text().splitlines()
        assert lines[0].split() == ["id", "Predicted_Sentiment"]
        rows = [line.split(" , ") for line in lines[1:]]
        expected = sorted(e["id"] for e in load_task("sst", split, FIXTURE_DATA).examples)
        assert sorted(r[0] for r in rows) == expected
        assert all(int(r[1]) in range(5) for r in rows)
    saved = json.loads((out / "result.json").read_text())
    assert saved["dev_acc"] == record["dev_acc"] and 0.0 <= record["dev_acc"] <= 1.0
    assert saved["options"]["lr"] == run_classifier.DEFAULT_LR["pretrain"]
    assert len(saved["history"]) == 2 and saved["wall_seconds"] >= 0


def test_finetune_mode_changes_the_encoder_and_cfimdb_predictions_are_binary(tmp_path, tiny_checkpoint):
    _, out = run(tmp_path, tiny_checkpoint, "--task", "cfimdb", "--mode", "finetune", "--lr", "1e-3")
    trained = load_safetensors(out / "model.safetensors")
    original = BertModel.from_pretrained(tiny_checkpoint).state_dict()
    assert not torch.equal(trained["encoder.layers.0.ffn_in.weight"], original["layers.0.ffn_in.weight"])
    for split in ("dev", "test"):
        lines = (out / "predictions" / f"cfimdb-{split}-output.csv").read_text().splitlines()
        assert lines[0].split() == ["id", "Predicted_Sentiment"]
        assert {int(line.split(" , ")[1]) for line in lines[1:]} <= {0, 1}


def test_labelled_fraction_and_steps_set_the_budget(tmp_path, tiny_checkpoint):
    record, _ = run(tmp_path, tiny_checkpoint, "--labelled-fraction", "0.4", "--steps", "3", "--no-save", "--json",
                    str(tmp_path / "r.json"))
    assert record["train_pool"] == 5 and record["train_examples"] == 2  # ceil(0.4 * 5)
    assert record["steps"] == 3 and (tmp_path / "r.json").is_file()


def test_same_seed_gives_the_same_run(tmp_path, tiny_checkpoint):
    _, a = run(tmp_path, tiny_checkpoint, "--mode", "finetune", name="a")
    _, b = run(tmp_path, tiny_checkpoint, "--mode", "finetune", name="b")
    wa, wb = load_safetensors(a / "model.safetensors"), load_safetensors(b / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("argv, message", [
    (["--labelled-fraction", "0"], "labelled-fraction"),
    (["--task", "quora"], "invalid choice"),
    (["--batch-size", "0"], "at least 1"),
])
def test_bad_options_exit_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        run_classifier.parse_args(["--device", "cpu", *argv])
    assert e.value.code != 0 and message in capsys.readouterr().err


def test_help_describes_every_option(capsys):
    with pytest.raises(SystemExit):
        run_classifier.parse_args(["--help"])
    text = capsys.readouterr().out
    for option in ("--task", "--mode", "--labelled-fraction", "--limit-train", "--limit-eval", "--seed", "--epochs",
                   "--steps", "--lr", "--batch-size", "--threads", "--out-dir", "--json", "--predictions-dir"):
        assert option in text
