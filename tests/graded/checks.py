"""Shared by the graded steps: the stored reference, and comparisons whose failure messages say what
was expected and where the output differs. Everything here comes from tests/fixtures (written from
transformers by tests/make_fixtures.py) or from PyTorch itself: no solution code."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from minbert import BertConfig, BertModel
from minbert.checkpoint import hf_to_minbert
from minbert.safetensors import load_safetensors

ROOT = Path(__file__).resolve().parents[2]  # the tree being graded
FIXTURES = ROOT / "tests" / "fixtures"

ATOL = RTOL = 1e-5


def tiny(attn_implementation: str = "manual"):
    """(model with the fixture's weights, in eval mode; its inputs; transformers' intermediates:
    embeddings, attention (block of layer 0), layer (layer 0), last_hidden_state, pooler_output).
    The same fixture as tests/reference.py's tiny_reference, read without importing transformers."""
    torch.manual_seed(0)
    config = BertConfig(**json.loads((FIXTURES / "tiny_config.json").read_text()))
    t = load_safetensors(FIXTURES / "tiny_reference.safetensors")
    part = {p: {k[len(p) + 1:]: v for k, v in t.items() if k.startswith(p + ".")} for p in ("weights", "inputs", "expected")}
    model = BertModel(config).eval()
    model.load_state_dict(hf_to_minbert(part["weights"], model))
    if attn_implementation == "sdpa":  # the layers attend with PyTorch's kernel, not step 1's code
        for layer in model.layers:
            layer.attn.attention = torch_attention(layer.attn)
    return model, part["inputs"], part["expected"]


def torch_attention(attn) -> Callable:
    """A stand-in for SelfAttention.attention(q, k, v, mask): PyTorch's own scaled_dot_product_attention."""
    def attention(q, k, v, mask):
        p = attn.attn_dropout.p if attn.training else 0.0
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
    return attention


def additive_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) 0/1 -> (B, 1, 1, T) with -inf on padding: a valid mask built independently of step 1."""
    return torch.zeros(attention_mask.shape, dtype=torch.float32).masked_fill(
        attention_mask == 0, float("-inf"))[:, None, None, :]


def assert_close(name: str, got, expected: torch.Tensor, hint: str = "", atol: float = ATOL,
                 rtol: float = RTOL) -> None:
    """Raise an AssertionError that names the shape, the worst element and a hint."""
    if not isinstance(got, torch.Tensor):
        raise AssertionError(f"{name}: expected a tensor of shape {tuple(expected.shape)}, got {type(got).__name__}")
    if got.shape != expected.shape:
        raise AssertionError(f"{name} has shape {tuple(got.shape)} but the reference has shape "
                             f"{tuple(expected.shape)}. {hint}".strip())
    g, e = got.detach().double().cpu(), expected.detach().double().cpu()
    if not torch.isfinite(g).all():
        at = [int(i) for i in (~torch.isfinite(g)).nonzero()[0]]
        raise AssertionError(f"{name} {tuple(g.shape)} contains {g[tuple(at)].item()} at {at}. {hint}".strip())
    diff = (g - e).abs()
    bad = diff > atol + rtol * e.abs()
    if bad.any():
        at = [int(i) for i in torch.nonzero(diff == diff.max())[0]]
        raise AssertionError(
            f"{name} {tuple(g.shape)} differs from the reference: max |diff| {diff.max().item():.3g} at {at} "
            f"(got {g[tuple(at)].item():.5g}, expected {e[tuple(at)].item():.5g}; tolerance {atol:g} + {rtol:g}*|x|); "
            f"{int(bad.sum())} of {bad.numel()} values differ. {hint}".strip())


def likely_mistake(got: torch.Tensor, candidates: dict[str, Callable[[], torch.Tensor]], default: str,
                   atol: float = 1e-4, rtol: float = 1e-4) -> str:
    """If `got` matches one of the typical wrong outputs, say which; otherwise `default`."""
    for description, make in candidates.items():
        try:
            wrong = make()
        except Exception:  # a candidate that cannot be computed says nothing
            continue
        if isinstance(got, torch.Tensor) and got.shape == wrong.shape and torch.allclose(
                got.detach().double(), wrong.detach().double(), atol=atol, rtol=rtol):
            return f"Your output matches {description}."
    return default
