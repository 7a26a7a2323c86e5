"""The reference implementation (transformers) and the fixtures made from it, for the tests.

With transformers installed, tests compare with it live. Without it (a student's environment), they
compare with tests/fixtures/*.safetensors, written from transformers by tests/make_fixtures.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from minbert import BertConfig, BertModel, fast
from minbert.attention import extended_attention_mask
from minbert.checkpoint import hf_to_minbert, minbert_to_hf
from minbert.safetensors import load_safetensors

FIXTURES = Path(__file__).parent / "fixtures"
# An odd shape on purpose: head size 16, intermediate not a multiple of anything, tiny vocab.
TINY = dict(vocab_size=99, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
            intermediate_size=100, max_position_embeddings=40, type_vocab_size=2)
SENTENCES = [
    ("The quick brown fox jumps over the lazy dog.", None),
    ("BERT reads in both directions!", "Does it, really?"),
    ("un-believably unaffable : ) naïve café", None),
    ("How do I learn PyTorch?", "What is the best way to learn PyTorch?"),
]

try:
    import transformers  # noqa: F401
    HAVE_TRANSFORMERS = True
except ImportError:
    HAVE_TRANSFORMERS = False

DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")])]


@pytest.fixture
def no_tf32():
    """fp32 matmuls on CUDA really in fp32, so that CPU tolerances hold there too."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def tiny_inputs(seed: int = 0, B: int = 3, T: int = 11) -> dict[str, torch.Tensor]:
    """Random ids with padding (row 1 has 4 pad positions, row 2 has 7) and both segments."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, TINY["vocab_size"], (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, T - 4:] = 0
    mask[2, T - 7:] = 0
    ids = ids * mask  # pad id 0 on padding
    types = torch.zeros(B, T, dtype=torch.long)
    types[:, T // 2:] = 1
    types = types * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


# The only settings the reference takes from our model: its shape. Everything else (GELU kind,
# LayerNorm eps, pad id, ...) is transformers' own BERT default, so a wrong default in minbert's
# BertConfig shows up as a mismatch instead of being copied into the reference.
SHAPE = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
         "max_position_embeddings", "type_vocab_size")


def hf_model_from(model: BertModel, attn_implementation: str = "eager"):
    """A transformers BertModel of `model`'s shape holding exactly its weights (live reference)."""
    from transformers import BertConfig as HFConfig
    from transformers import BertModel as HFBert
    cfg = HFConfig(**{k: getattr(model.config, k) for k in SHAPE}, attn_implementation=attn_implementation)
    hf = HFBert(cfg)
    missing, unexpected = hf.load_state_dict(minbert_to_hf(model.state_dict(), model.config), strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    return hf.eval()


def hf_additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, T) 1/0 -> (B, 1, 1, T) additive mask for one transformers BertLayer, written out here as
    transformers' get_extended_attention_mask made it (not minbert's extended_attention_mask, a graded
    step: the reference must not share its mistakes)."""
    keep = attention_mask[:, None, None, :].to(dtype)  # (B, 1, 1, T)
    return (1.0 - keep) * torch.finfo(dtype).min


@torch.no_grad()
def hf_intermediates(hf, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Embeddings, the first attention block, the first layer, and the whole model, from transformers."""
    emb = hf.embeddings(input_ids=inputs["input_ids"], token_type_ids=inputs["token_type_ids"])
    mask = hf_additive_mask(inputs["attention_mask"], emb.dtype)
    attn = hf.encoder.layer[0].attention(emb, attention_mask=mask)[0]
    layer = hf.encoder.layer[0](emb, attention_mask=mask)
    layer = layer[0] if isinstance(layer, tuple) else layer
    out = hf(**inputs)
    return {"embeddings": emb, "attention": attn, "layer": layer,
            "last_hidden_state": out.last_hidden_state, "pooler_output": out.pooler_output}


def tiny_reference(attn_implementation: str = "manual") -> tuple[BertModel, dict, dict]:
    """(our model with the fixture's weights, inputs, expected intermediates) from the stored fixture."""
    cfg = BertConfig(**json.loads((FIXTURES / "tiny_config.json").read_text()))
    t = load_safetensors(FIXTURES / "tiny_reference.safetensors")
    model = BertModel(cfg, attn_implementation=attn_implementation).eval()
    weights = {k[len("weights."):]: v for k, v in t.items() if k.startswith("weights.")}
    model.load_state_dict(hf_to_minbert(weights, model))
    inputs = {k[len("inputs."):]: v for k, v in t.items() if k.startswith("inputs.")}
    expected = {k[len("expected."):]: v for k, v in t.items() if k.startswith("expected.")}
    return model, inputs, expected


@torch.no_grad()
def our_intermediates(model: BertModel, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    emb = model.embeddings(inputs["input_ids"], inputs["token_type_ids"])
    mask = extended_attention_mask(inputs["attention_mask"], emb.dtype)
    layer0 = model.layers[0]
    if model.attn_implementation == "sdpa":  # the fast path's functions on the same weights
        attn = fast.self_attention(layer0.attn, emb, mask, sdpa=True)
        layer = fast.layer_forward(layer0, emb, mask, sdpa=True)
    else:  # the teaching path
        attn, layer = layer0.attn(emb, mask), layer0(emb, mask)
    out = model(**inputs)
    # attention block = HF's BertAttention
    return {"embeddings": emb, "attention": layer0.ln1(emb + attn), "layer": layer, **out}
