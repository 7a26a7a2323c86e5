"""Step 5: loading pretrained weights (BertModel.from_pretrained / save_pretrained).

The loader and its key mapping (minbert/checkpoint.py) are given; this step checks that a model
loaded from a Hugging Face checkpoint reproduces transformers' outputs, so it needs steps 1-4.
"""
import shutil

import pytest
import torch

from checks import FIXTURES, assert_close
from minbert import BertModel
from minbert.safetensors import load_safetensors, save_safetensors

HINT = "The loaded model chains steps 1-4: make those pass first."


def fixture():
    t = load_safetensors(FIXTURES / "tiny_reference.safetensors")
    split = lambda prefix: {k[len(prefix):]: v for k, v in t.items() if k.startswith(prefix)}  # noqa: E731
    return split("weights."), split("inputs."), split("expected.")


def write_checkpoint(directory, weights):
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / "tiny_config.json", directory / "config.json")
    save_safetensors(weights, directory / "model.safetensors")
    return directory


def check_outputs(model, inputs, expected, what):
    with torch.no_grad():
        out = model(**inputs)
    for key in ("last_hidden_state", "pooler_output"):
        assert_close(f"{key} of the model loaded {what}", out[key], expected[key], HINT)


def test_from_pretrained_reproduces_transformers(tmp_path):
    weights, inputs, expected = fixture()
    model = BertModel.from_pretrained(write_checkpoint(tmp_path / "hf", weights))
    check_outputs(model, inputs, expected, "from a Hugging Face checkpoint")


def test_from_pretrained_reads_the_original_google_layout(tmp_path):
    """bert-base-uncased's file: "bert." prefix, LayerNorm gamma/beta, pre-training heads cls.*."""
    weights, inputs, expected = fixture()
    google = {"bert." + k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
              for k, v in weights.items()}
    google["cls.predictions.bias"] = torch.zeros(3)
    model = BertModel.from_pretrained(write_checkpoint(tmp_path / "google", google))
    check_outputs(model, inputs, expected, "from a Google-layout checkpoint")


def test_save_pretrained_then_from_pretrained_round_trips(tmp_path):
    weights, inputs, expected = fixture()
    model = BertModel.from_pretrained(write_checkpoint(tmp_path / "hf", weights))
    model.save_pretrained(tmp_path / "saved")
    check_outputs(BertModel.from_pretrained(tmp_path / "saved"), inputs, expected, "after save_pretrained")


def test_embedded_minilm_reproduces_transformers_on_real_text():
    try:
        model = BertModel.from_pretrained("all-MiniLM-L6-v2")
    except FileNotFoundError as e:
        pytest.fail(f"the embedded checkpoint is not installed ({e}); run `bash setup.sh`")
    ref = load_safetensors(FIXTURES / "minilm_reference.safetensors")
    batch = {k: ref[f"single.{k}"] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        out = model(**batch)
    real = batch["attention_mask"].bool()  # padded positions carry no meaning
    # 6 layers of real weights: fp32 rounding accumulates, hence the looser tolerance.
    assert_close("all-MiniLM-L6-v2 last_hidden_state on real tokens", out["last_hidden_state"][real],
                 ref["single.last_hidden_state"][real], HINT, atol=5e-5)
    assert_close("all-MiniLM-L6-v2 pooler_output", out["pooler_output"], ref["single.pooler_output"], HINT)
