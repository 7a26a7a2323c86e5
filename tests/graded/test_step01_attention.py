"""Step 1: multi-head self-attention (minbert/attention.py).

extended_attention_mask and SelfAttention.attention are checked directly against PyTorch's own
scaled_dot_product_attention on the fixture's queries, keys and values; the last test runs the whole
attention block of layer 0 against transformers' stored output.
"""
import torch
import torch.nn.functional as F

from checks import additive_mask, assert_close, likely_mistake, tiny
from minbert.attention import extended_attention_mask


def qkv_and_mask():
    """q, k, v (B, nh, T, hs) of layer 0 applied to transformers' embeddings, and the padding mask."""
    model, inputs, expected = tiny()
    attn = model.layers[0].attn
    x = expected["embeddings"]  # (B, T, C): the input of layer 0
    with torch.no_grad():
        q, k, v = attn.qkv(x).split(x.shape[-1], dim=2)  # 3 x (B, T, C)
    return attn, attn.split_heads(q), attn.split_heads(k), attn.split_heads(v), inputs["attention_mask"]


def reference_attention(q, k, v, attention_mask=None, scale=None):
    keep = None if attention_mask is None else attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=scale)


def test_mask_has_shape_B_1_1_T_and_the_requested_dtype():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    got = extended_attention_mask(mask, torch.float32)
    assert isinstance(got, torch.Tensor) and got.shape == (2, 1, 1, 4) and got.dtype == torch.float32, (
        f"extended_attention_mask((2, 4) mask, float32) should return a float32 tensor of shape (2, 1, 1, 4) "
        f"(one row per sequence, broadcast over heads and queries); got "
        f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__} "
        f"{getattr(got, 'dtype', '')}")


def test_mask_is_zero_on_tokens_and_very_negative_but_finite_on_padding():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    for dtype in (torch.float32, torch.float16):
        got = extended_attention_mask(mask, dtype)[:, 0, 0, :].float()  # (B, T)
        real, pad = got[mask == 1], got[mask == 0]
        assert torch.all(real == 0), f"{dtype}: the mask must be exactly 0 on real tokens, got {real.tolist()}"
        assert torch.all(torch.isfinite(pad)), (
            f"{dtype}: the mask on padding is {pad.tolist()}; use a finite very negative number such as "
            f"torch.finfo(dtype).min, not -inf (a fully padded row would give NaN), and not a constant "
            f"like -1e9 that overflows to -inf in float16")
        assert torch.all(pad <= -1e4), (
            f"{dtype}: the mask on padding is {pad.tolist()}; it must be very negative (e.g. "
            f"torch.finfo(dtype).min) so that padding gets ~0 attention after the softmax")


def test_attention_matches_reference_without_mask():
    attn, q, k, v, _ = qkv_and_mask()
    with torch.no_grad():
        got = attn.attention(q, k, v, None)
    expected = reference_attention(q, k, v)
    hs = q.shape[-1]
    hint = likely_mistake(got, {
        "attention without the 1/sqrt(head_size) scaling": lambda: reference_attention(q, k, v, scale=1.0),
        "attention scaled by 1/head_size instead of 1/sqrt(head_size)": lambda: reference_attention(q, k, v, scale=1 / hs),
        "the values v themselves (was the softmax-weighted sum skipped?)": lambda: v,
    }, "Expected softmax(q k^T / sqrt(head_size)) v with the softmax over the keys (last dim).")
    assert_close("attention(q, k, v, mask=None)", got, expected, hint)


def test_attention_gives_padded_keys_no_weight():
    attn, q, k, v, attention_mask = qkv_and_mask()
    with torch.no_grad():
        got = attn.attention(q, k, v, additive_mask(attention_mask))
    expected = reference_attention(q, k, v, attention_mask)
    hint = likely_mistake(got, {"attention that ignores the mask": lambda: reference_attention(q, k, v)},
                          "The mask is additive, shape (B, 1, 1, T): add it to the scores before the softmax.")
    assert_close("attention(q, k, v, mask) with padding", got, expected, hint)


def test_attention_applies_dropout_to_probabilities_only_in_training():
    attn, q, k, v, _ = qkv_and_mask()
    attn.attn_dropout.p = 0.5
    with torch.no_grad():
        attn.eval()
        first, second = attn.attention(q, k, v, None), attn.attention(q, k, v, None)
        attn.train()
        training = attn.attention(q, k, v, None)
    assert torch.equal(first, second), "in eval mode attention(...) must be deterministic (dropout off)"
    assert not torch.allclose(training, first), (
        "in training mode attention(...) gave the same output as in eval mode: apply self.attn_dropout "
        "to the attention probabilities (BERT drops attention weights, not only activations)")


def test_attention_block_of_layer_0_matches_transformers():
    model, inputs, expected = tiny("manual")
    layer = model.layers[0]
    x = expected["embeddings"]
    with torch.no_grad():
        mask = extended_attention_mask(inputs["attention_mask"], x.dtype)
        got = layer.ln1(x + layer.attn(x, mask))  # (B, T, C): transformers' BertAttention output
    assert_close("attention block LN(x + SelfAttention(x, mask)) of layer 0", got, expected["attention"],
                 "Check the 1/sqrt(head_size) scaling, the softmax axis and the padding mask.")
