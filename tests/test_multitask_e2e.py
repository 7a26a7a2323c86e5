"""run_multitask.py end to end on the fixture files with a tiny random BERT: files, formats,
determinism, and every training mode running through."""
from pathlib import Path

import pytest
import torch

from minbert import BertModel
from minbert.safetensors import load_safetensors
from training import options, run_multitask

FIXTURE_DATA = Path(__file__).parent / "fixtures" / "data" / "course"



def run(tmp_path, ckpt, *extra, name="run"):
    out = tmp_path / name
    result = run_multitask.main([
        "--model", str(ckpt), "--data-dir", str(FIXTURE_DATA), "--device", "cpu", "--preset", "quick", "--amp", "none", "--epochs", "1",
        "--batch-size", "2", "--out-dir", str(out), "--predictions-dir", str(out / "predictions"),
        "--threads", "1", "--log-every", "1", *extra])
    return result, out


def test_tiny_run_writes_all_six_prediction_files_in_course_format(tmp_path, tiny_checkpoint):
    result, out = run(tmp_path, tiny_checkpoint)
    headers = {"sst": "Predicted_Sentiment", "para": "Predicted_Is_Paraphrase", "sts": "Predicted_Similiary"}
    for prefix, header in headers.items():
        for split in ("dev", "test"):
            lines = (out / "predictions" / f"{prefix}-{split}-output.csv").read_text().splitlines()
            assert lines[0].split() == ["id", header]
            rows = [line.split(" , ") for line in lines[1:]]
            assert rows and all(len(r) == 2 for r in rows), f"{prefix}-{split}: expected 'id , value' rows"
            values = [float(v) for _, v in rows]
            if prefix == "sst":
                assert all(v in range(5) for v in values)
            elif prefix == "para":
                assert all(v in (0, 1) for v in values)
            else:
                assert all(0.0 <= v <= 5.0 for v in values)
    assert set(result["dev"]) == {"sst", "quora", "sts", "overall"}
    assert (out / "best" / "model.safetensors").is_file() and (out / "best" / "options.json").is_file()
    assert (out / "log.jsonl").read_text().count('"eval": "dev"') == 1


def test_prediction_ids_cover_each_test_file_once(tmp_path, tiny_checkpoint):
    from data.datasets import load_task
    _, out = run(tmp_path, tiny_checkpoint)
    for task, prefix in (("sst", "sst"), ("quora", "para"), ("sts", "sts")):
        expected = sorted(e["id"] for e in load_task(task, "test", FIXTURE_DATA).examples)
        lines = (out / "predictions" / f"{prefix}-test-output.csv").read_text().splitlines()[1:]
        assert sorted(line.split(" , ")[0] for line in lines) == expected


def test_same_seed_gives_same_result_on_cpu(tmp_path, tiny_checkpoint):
    a, out_a = run(tmp_path, tiny_checkpoint, name="a")
    b, out_b = run(tmp_path, tiny_checkpoint, name="b")
    assert a["history"][0] | {"minutes": 0} == b["history"][0] | {"minutes": 0}
    wa = load_safetensors(out_a / "best" / "model.safetensors")
    wb = load_safetensors(out_b / "best" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("mode", [
    ["--pcgrad"], ["--schedule", "round_robin"], ["--schedule", "sequential", "--extra-epochs", "sst=1"],
    ["--pair-mode", "bi", "--sts-mode", "cosine", "--augment-symmetric"], ["--sts-mode", "regressor", "--pair-mode", "bi"],
    ["--tasks", "sst"], ["--attn", "manual", "--sentiment-pooling", "mean"],
    ["--task-batch-size", "quora=3", "--loss-weights", "sts=2", "--layer-decay", "0.8"],
], ids=lambda m: " ".join(m))
def test_training_modes_run_through(tmp_path, tiny_checkpoint, mode):
    result, _ = run(tmp_path, tiny_checkpoint, *mode)
    assert result["history"], "no evaluation happened"


def test_freezing_the_encoder_leaves_it_unchanged(tmp_path, tiny_checkpoint):
    _, out = run(tmp_path, tiny_checkpoint, "--freeze", "encoder")
    trained = load_safetensors(out / "best" / "model.safetensors")
    original = BertModel.from_pretrained(tiny_checkpoint).state_dict()
    assert all(torch.equal(trained[f"encoder.{k}"], v) for k, v in original.items())
    head = [k for k in trained if k.startswith("heads.sst")]
    assert head, "the sst head should exist and be trained"


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "sst,imdb"], "unknown task"),
    (["--batch-size", "0"], "batch sizes"),
    (["--loss-weights", "nli=2"], "task=value"),
])
def test_bad_options_exit_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        run_multitask.parse_args(["--device", "cpu", *argv])
    assert e.value.code != 0
    assert message in capsys.readouterr().err


def test_bf16_on_cpu_is_refused_only_without_native_bf16(monkeypatch, capsys):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    with pytest.raises(SystemExit):
        run_multitask.parse_args(["--amp", "bf16", "--device", "cpu"])
    assert "AVX512-BF16" in capsys.readouterr().err
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert run_multitask.parse_args(["--amp", "bf16", "--device", "cpu"]).amp == "bf16"


@pytest.mark.skipif(not options.cpu_has_bf16(), reason="this CPU has no native bf16 (AVX512-BF16/AMX)")
def test_bf16_autocast_run_on_cpu_trains_and_predicts(tmp_path, tiny_checkpoint):
    result, out = run(tmp_path, tiny_checkpoint, "--amp", "bf16", "--device", "cpu")
    assert set(result["dev"]) == {"sst", "quora", "sts", "overall"}
    trained = load_safetensors(out / "best" / "model.safetensors")
    assert all(v.dtype == torch.float32 for v in trained.values())  # autocast: the weights stay fp32
    original = BertModel.from_pretrained(tiny_checkpoint).state_dict()
    assert any(not torch.equal(trained[f"encoder.{k}"], v) for k, v in original.items())


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "none")])
def test_amp_auto_picks_bf16_only_where_the_cpu_has_it(monkeypatch, native, expected):
    monkeypatch.setattr(options, "cpu_has_bf16", lambda: native)
    assert run_multitask.parse_args(["--device", "cpu"]).amp == expected  # the presets say auto
    assert run_multitask.parse_args(["--device", "cpu", "--amp", "none"]).amp == "none"
