"""Every component of minbert against transformers' BertModel with the same weights.

fp32 on CPU: atol 1e-5 (rtol 1e-5). On CUDA TF32 is switched off so the same tolerance holds.
"""
import pytest
import torch

from minbert import BertConfig, BertModel, Tokenizer
from minbert.safetensors import load_safetensors
from reference import (DEVICES, FIXTURES, HAVE_TRANSFORMERS, SENTENCES, TINY, hf_intermediates,
                       hf_model_from, our_intermediates, tiny_inputs, tiny_reference)
from reference import no_tf32  # noqa: F401  (a fixture: pytest finds it by name)

pytestmark = pytest.mark.usefixtures("no_tf32")

COMPONENTS = ["embeddings", "attention", "layer", "last_hidden_state", "pooler_output"]
TOL = dict(atol=1e-5, rtol=1e-5)
needs_transformers = pytest.mark.skipif(not HAVE_TRANSFORMERS, reason="transformers not installed")


def to(d: dict, device: str) -> dict:
    return {k: v.to(device) for k, v in d.items()}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", ["manual", "sdpa"])
@pytest.mark.parametrize("component", COMPONENTS)
def test_component_matches_stored_reference(component, impl, device):
    model, inputs, expected = tiny_reference(impl)
    ours = our_intermediates(model.to(device), to(inputs, device))
    torch.testing.assert_close(ours[component].cpu(), expected[component], **TOL,
                               msg=lambda m: f"{component} ({impl}) differs from transformers: {m}")


ODD_CONFIGS = [
    TINY,
    dict(TINY, hidden_size=64, num_attention_heads=4, num_hidden_layers=3, intermediate_size=130),
    dict(TINY, hidden_size=30, num_attention_heads=1, intermediate_size=17, type_vocab_size=3),
]


@needs_transformers
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("hf_impl", ["eager", "sdpa"])
@pytest.mark.parametrize("impl", ["manual", "sdpa"])
@pytest.mark.parametrize("cfg", ODD_CONFIGS, ids=["h48-nh3", "h64-nh4-L3", "h30-nh1"])
def test_components_match_transformers_on_odd_configs(cfg, impl, hf_impl, device):
    torch.manual_seed(1)
    model = BertModel(BertConfig(**cfg), attn_implementation=impl).eval()
    hf = hf_model_from(model, hf_impl).to(device)
    inputs = to(tiny_inputs(seed=2), device)
    inputs["token_type_ids"].clamp_(max=cfg["type_vocab_size"] - 1)
    ours, ref = our_intermediates(model.to(device), inputs), hf_intermediates(hf, inputs)
    for c in COMPONENTS:
        torch.testing.assert_close(ours[c], ref[c], **TOL, msg=lambda m: f"{c}: {m}")


@needs_transformers
def test_gradients_match_transformers():
    torch.manual_seed(3)
    model = BertModel(BertConfig(**TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    hf = hf_model_from(model)
    inputs = tiny_inputs(seed=4)
    model(**inputs)["pooler_output"].square().sum().backward()
    hf(**inputs).pooler_output.square().sum().backward()
    ours = dict(model.named_parameters())
    qkv = ours["layers.1.attn.qkv.weight"].grad
    torch.testing.assert_close(qkv[:TINY["hidden_size"]], hf.encoder.layer[1].attention.self.query.weight.grad, **TOL)
    torch.testing.assert_close(ours["embeddings.word_embeddings.weight"].grad,
                               hf.embeddings.word_embeddings.weight.grad, **TOL)


@pytest.fixture(scope="module")
def minilm():
    try:
        return {"model": BertModel.from_pretrained("all-MiniLM-L6-v2"), "tok": Tokenizer.from_pretrained(),
                "ref": load_safetensors(FIXTURES / "minilm_reference.safetensors")}
    except FileNotFoundError as e:
        pytest.skip(f"embedded checkpoint not installed: {e}")


def test_tokenizer_matches_reference_tokenizer(minilm):
    ref, tok = minilm["ref"], minilm["tok"]
    firsts = [a for a, _ in SENTENCES]
    single = tok(firsts)
    pair = tok(firsts[1::2], [b for _, b in SENTENCES[1::2]])
    for prefix, batch in (("single", single), ("pair", pair)):
        for k in ("input_ids", "attention_mask", "token_type_ids"):
            assert torch.equal(batch[k], ref[f"{prefix}.{k}"]), f"{prefix} {k} differs from BertTokenizerFast"
    long = tok(["word " * 40], ["other " * 10], max_length=16)
    assert torch.equal(long["input_ids"], ref["truncated.input_ids"]), "longest-first truncation differs"
    assert torch.equal(long["token_type_ids"], ref["truncated.token_type_ids"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_embedded_checkpoint_matches_reference_on_real_text(minilm, impl, device):
    model = BertModel.from_pretrained("all-MiniLM-L6-v2", attn_implementation=impl).to(device)
    ref = minilm["ref"]
    for prefix in ("single", "pair"):
        batch = {k: ref[f"{prefix}.{k}"].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")}
        with torch.no_grad():
            out = model(**batch)
        real = batch["attention_mask"].bool().cpu()  # padded positions carry no meaning
        # 6 layers of real weights accumulate fp32 rounding differently in a fused QKV matmul.
        torch.testing.assert_close(out["last_hidden_state"].cpu()[real], ref[f"{prefix}.last_hidden_state"][real],
                                   atol=5e-5, rtol=1e-5)
        torch.testing.assert_close(out["pooler_output"].cpu(), ref[f"{prefix}.pooler_output"], **TOL)


def test_padding_does_not_change_real_token_outputs():
    torch.manual_seed(7)
    model = BertModel(BertConfig(**TINY)).eval()
    inputs = tiny_inputs(seed=8)
    with torch.no_grad():
        batched = model(**inputs)["last_hidden_state"]
        n = int(inputs["attention_mask"][2].sum())
        alone = model(**{k: v[2:3, :n] for k, v in inputs.items()})["last_hidden_state"]
    torch.testing.assert_close(batched[2:3, :n], alone, **TOL)


def test_config_reads_hf_json_ignoring_unknown_keys():
    cfg = BertConfig.from_dict({"hidden_size": 48, "num_attention_heads": 3, "architectures": ["BertModel"],
                                "gradient_checkpointing": False, "use_cache": True, "model_type": "bert"})
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.head_size) == (48, 3, 16)


@pytest.mark.parametrize("bad, message", [
    (dict(hidden_size=50, num_attention_heads=3), "divisible"),
    (dict(model_type="gpt2"), "model_type"),
    (dict(position_embedding_type="relative_key"), "absolute"),
])
def test_config_rejects_invalid_values(bad, message):
    with pytest.raises(ValueError, match=message):
        BertConfig.from_dict(bad)


def test_too_long_input_gives_clear_error():
    model = BertModel(BertConfig(**TINY))
    with pytest.raises(ValueError, match="positions"):
        model(torch.ones(1, TINY["max_position_embeddings"] + 1, dtype=torch.long))
