"""Step 2: one post-LN transformer layer (BertLayer.forward in minbert/layer.py).

The layer's attention runs on PyTorch's fused kernel ("sdpa") and the padding mask is built here,
so this step is graded independently of step 1. Reference: transformers' layer 0 output.
"""
import torch
import torch.nn.functional as F

from checks import additive_mask, assert_close, likely_mistake, tiny

HINT = "Expected x = LN1(x + Dropout(attn(x, mask))), then x = LN2(x + Dropout(FFN(x))) with FFN = ffn_out(gelu(ffn_in(x)))."


def mistakes(layer, x, mask):
    ffn = lambda h, act=layer.act: layer.ffn_out(act(layer.ffn_in(h)))  # noqa: E731
    def pre_ln():
        h = x + layer.attn(layer.ln1(x), mask)
        return h + ffn(layer.ln2(h))
    def tanh_gelu():
        h = layer.ln1(x + layer.attn(x, mask))
        return layer.ln2(h + ffn(h, lambda t: F.gelu(t, approximate="tanh")))
    def no_ffn_residual():
        h = layer.ln1(x + layer.attn(x, mask))
        return layer.ln2(ffn(h))
    return {"a pre-LN layer (LayerNorm before each branch, as in GPT-2); BERT normalises after the residual sum": pre_ln,
            "a layer using the tanh approximation of GELU; config.hidden_act 'gelu' is the exact erf form": tanh_gelu,
            "a layer without the residual connection around the feed-forward network": no_ffn_residual}


def test_layer_keeps_the_shape_B_T_C():
    model, inputs, expected = tiny("sdpa")
    x = expected["embeddings"]
    with torch.no_grad():
        got = model.layers[0](x, None)
    assert isinstance(got, torch.Tensor) and got.shape == x.shape, (
        f"BertLayer.forward must return a tensor shaped like its input {tuple(x.shape)}, got "
        f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}")


def test_layer_matches_transformers_on_an_unpadded_sequence():
    model, inputs, expected = tiny("sdpa")
    layer, x = model.layers[0], expected["embeddings"][:1]  # row 0 has no padding: no mask needed
    with torch.no_grad():
        got = layer(x, None)
        hint = likely_mistake(got, mistakes(layer, x, None), HINT)
    assert_close("layer 0 output for sequence 0 (no padding)", got, expected["layer"][:1], hint)


def test_layer_matches_transformers_with_padding_mask():
    model, inputs, expected = tiny("sdpa")
    layer, x = model.layers[0], expected["embeddings"]
    mask = additive_mask(inputs["attention_mask"])  # (B, 1, 1, T)
    with torch.no_grad():
        got = layer(x, mask)
        hint = likely_mistake(got, mistakes(layer, x, mask), HINT + " Pass the mask on to self.attn.")
    assert_close("layer 0 output for the padded batch", got, expected["layer"], hint)


def test_layer_applies_dropout_only_in_training():
    model, inputs, expected = tiny("sdpa")
    layer, x = model.layers[0], expected["embeddings"]
    layer.attn.attn_dropout.p = 0.0  # isolate the layer's own dropout on the residual branches
    layer.dropout.p = 0.5
    with torch.no_grad():
        layer.eval()
        evaluation = layer(x, None)
        layer.train()
        torch.manual_seed(0)
        training = layer(x, None)
    assert not torch.allclose(training, evaluation), (
        "in training mode the layer gave the same output as in eval mode: apply self.dropout to the "
        "attention and feed-forward outputs before each residual sum")

