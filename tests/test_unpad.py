"""Unpadding (config.unpad): the token-wise layers run on the real tokens only. Real tokens must
get what transformers (and minbert without unpadding) gives them, in outputs and in gradients."""
import json

import pytest
import torch

from minbert import BertConfig, BertModel
from minbert.safetensors import load_safetensors
from reference import DEVICES, FIXTURES, HAVE_TRANSFORMERS, TINY, hf_model_from, tiny_inputs

TOL = dict(atol=1e-5, rtol=1e-5)
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def pair(impl: str, seed: int, **cfg) -> tuple[BertModel, BertModel]:
    """The same weights twice: padded (unpad=False) and unpadded (unpad=True)."""
    torch.manual_seed(seed)
    padded = BertModel(BertConfig(**dict(TINY, **cfg), attn_implementation=impl))
    unpadded = BertModel(BertConfig(**dict(TINY, **cfg), attn_implementation=impl, unpad=True))
    unpadded.load_state_dict(padded.state_dict())
    return padded, unpadded


@pytest.mark.skipif(not HAVE_TRANSFORMERS, reason="transformers not installed")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("hf_impl", ["eager", "sdpa"])
@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_unpadded_model_matches_transformers_on_real_tokens(impl, hf_impl, device):
    _, model = pair(impl, seed=1)
    hf = hf_model_from(model, hf_impl).to(device).eval()
    model = model.to(device).eval()
    inputs = {k: v.to(device) for k, v in tiny_inputs(seed=2).items()}
    assert not inputs["attention_mask"].bool().all()  # the batch really has padding
    with torch.no_grad():
        ours, ref = model(**inputs), hf(**inputs)
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(ours["last_hidden_state"][real], ref.last_hidden_state[real], **TOL)
    torch.testing.assert_close(ours["pooler_output"], ref.pooler_output, **TOL)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_unpadding_keeps_real_token_outputs_and_all_gradients(impl, device):
    a, b = (m.to(device) for m in pair(impl, seed=3, **NO_DROPOUT))
    inputs = {k: v.to(device) for k, v in tiny_inputs(seed=4).items()}
    real = inputs["attention_mask"].bool()
    oa, ob = a(**inputs), b(**inputs)
    torch.testing.assert_close(ob["last_hidden_state"][real], oa["last_hidden_state"][real], **TOL)
    # padded positions are never computed: they come out as exact zeros
    assert torch.count_nonzero(ob["last_hidden_state"][~real]) == 0
    # a loss over the real tokens (what every head uses) gives the same gradients
    for o in (oa, ob):
        (o["last_hidden_state"][real].square().mean() + o["pooler_output"].sum()).backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pb.grad, pa.grad, atol=1e-6, rtol=1e-4, msg=lambda m: f"grad of {name}: {m}")


def test_batch_without_padding_is_untouched_by_unpad():
    a, b = pair("sdpa", seed=5, **NO_DROPOUT)
    ids = torch.randint(1, TINY["vocab_size"], (4, 9), generator=torch.Generator().manual_seed(6))
    mask = torch.ones_like(ids)
    assert torch.equal(a(ids, mask)["last_hidden_state"], b(ids, mask)["last_hidden_state"])
    assert torch.equal(a(ids)["last_hidden_state"], b(ids)["last_hidden_state"])  # no mask at all


def test_unpadded_training_step_with_dropout_runs_and_updates_every_weight():
    _, model = pair("sdpa", seed=7)
    model.train()
    inputs = tiny_inputs(seed=8)
    out = model(**inputs)
    assert out["last_hidden_state"].shape == (*inputs["input_ids"].shape, TINY["hidden_size"])
    out["last_hidden_state"].square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None and "pooler" not in n]
    assert no_grad == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_embedded_checkpoint_unpadded_matches_reference_on_real_text():
    try:
        model = BertModel.from_pretrained("all-MiniLM-L6-v2", attn_implementation="sdpa", unpad=True)
    except FileNotFoundError as e:
        pytest.skip(f"embedded checkpoint not installed: {e}")
    assert model.config.unpad
    ref = load_safetensors(FIXTURES / "minilm_reference.safetensors")
    for prefix in ("single", "pair"):
        batch = {k: ref[f"{prefix}.{k}"] for k in ("input_ids", "attention_mask", "token_type_ids")}
        real = batch["attention_mask"].bool()
        with torch.no_grad():
            out = model(**batch)
        torch.testing.assert_close(out["last_hidden_state"][real], ref[f"{prefix}.last_hidden_state"][real],
                                   atol=5e-5, rtol=1e-5)
        torch.testing.assert_close(out["pooler_output"], ref[f"{prefix}.pooler_output"], **TOL)


def test_unpad_is_a_runtime_choice_not_saved_in_the_checkpoint(tmp_path):
    _, model = pair("manual", seed=9)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert "unpad" not in saved and "attn_implementation" not in saved
    assert BertModel.from_pretrained(tmp_path).config.unpad is False
