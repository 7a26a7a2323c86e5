"""Fast paths: the same BERT, computed faster. Opt-in, beside the teaching path.

attention.py, layer.py and model.py compute BERT as the papers write it. The functions here compute
the same thing with the model's own modules and weights, and three tricks:
  * SDPA: torch.nn.functional.scaled_dot_product_attention, PyTorch's fused kernel for
    softmax(Q K^T / sqrt(hs) + mask) V, instead of SelfAttention.attention's explicit math;
  * no mask when nothing is padded: adding zeros changes nothing, and SDPA's fastest kernels take no
    mask at all;
  * unpadding ("remove padding" of FasterTransformer; MosaicBERT, ModernBERT): every part of a layer
    but the attention works token by token, so it runs on the N real tokens only, (N, C), and the
    attention scatters them into the (B, T) grid and back. That takes the padding out of the Linear
    layers (~80% of a CPU training step). Real tokens get the same values; the padded positions of
    last_hidden_state come out as zeros.
Both data-dependent tricks (the all-ones test and unpadding's nonzero()) sync with the host, and
under torch.compile they would split the graph or recompile for every N: compiled code keeps the
mask and the padded grid.

Turn them on with BertModel(config, attn_implementation="sdpa", unpad=True) (or the same arguments
to from_pretrained). tests/test_fast_paths.py proves each one equal to the teaching path, in outputs
and gradients. Keep these functions op for op as they are: the trainers' recorded loss traces
(tests/fixtures) were made with them.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F

from .attention import SelfAttention, extended_attention_mask
from .layer import BertLayer


def padding_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, T) 0/1 -> additive (B, 1, 1, T), or None when no position is padding (eager mode only)."""
    if attention_mask is None:
        return None
    if not torch.compiler.is_compiling() and bool(attention_mask.all()):
        return None
    return extended_attention_mask(attention_mask, dtype)  # (B, 1, 1, T)


def unpad_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) 0/1 -> (N,): the positions of the real tokens in the flattened (B*T) grid."""
    return attention_mask.reshape(-1).nonzero().squeeze(1)  # (N,)


def self_attention(attn: SelfAttention, x: torch.Tensor, mask: torch.Tensor | None, sdpa: bool,
                   index: torch.Tensor | None = None) -> torch.Tensor:
    """SelfAttention.forward with attn's weights: x (B, T, C) -> (B, T, C). Unpadded (index given):
    x is (N, C), the real tokens, index (N,) their places in the (B*T) grid, and the mask gives B, T."""
    C = x.shape[-1]
    qkv = attn.qkv(x)  # (B, T, 3C), or (N, 3C) unpadded
    if index is not None:
        # Attention mixes tokens, so it needs the (B, T) grid back: scatter the real rows into
        # zeros. Padded keys are masked out, and padded queries' outputs are dropped below.
        B, T = mask.shape[0], mask.shape[-1]
        qkv = qkv.new_zeros(B * T, 3 * C).index_copy(0, index, qkv).view(B, T, 3 * C)  # (B, T, 3C)
    B, T, _ = qkv.shape
    q, k, v = qkv.split(C, dim=2)  # 3 x (B, T, C)
    q, k, v = attn.split_heads(q), attn.split_heads(k), attn.split_heads(v)  # (B, nh, T, hs)
    if sdpa:
        p = attn.attn_dropout.p if attn.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, nh, T, hs)
    else:
        y = attn.attention(q, k, v, mask)  # (B, nh, T, hs)
    y = y.transpose(1, 2).reshape(B * T, C)  # (B*T, nh * hs): merge the heads back
    if index is not None:
        y = y.index_select(0, index)  # (N, C): the real tokens again
    return attn.proj(y.view(*x.shape[:-1], C))  # (B, T, C) or (N, C)


def layer_forward(layer: BertLayer, x: torch.Tensor, mask: torch.Tensor | None, sdpa: bool,
                  index: torch.Tensor | None = None) -> torch.Tensor:
    """BertLayer.forward with layer's weights, x (B, T, C), or (N, C) unpadded, -> same shape."""
    x = layer.ln1(x + layer.dropout(self_attention(layer.attn, x, mask, sdpa, index)))
    x = layer.ln2(x + layer.dropout(layer.ffn_out(layer.act(layer.ffn_in(x)))))
    return x


def encode(layers: Iterable[BertLayer], x: torch.Tensor, attention_mask: torch.Tensor | None,
           sdpa: bool, unpad: bool) -> torch.Tensor:
    """The encoder layers on embeddings x (B, T, C) -> (B, T, C), what BertModel.forward's loop computes."""
    mask = padding_mask(attention_mask, x.dtype)  # (B, 1, 1, T) or None
    if mask is None or not unpad or torch.compiler.is_compiling():
        for layer in layers:
            x = layer_forward(layer, x, mask, sdpa)
        return x
    B, T, C = x.shape
    index = unpad_index(attention_mask)  # (N,)
    x = x.view(B * T, C).index_select(0, index)  # (N, C)
    for layer in layers:
        x = layer_forward(layer, x, mask, sdpa, index)
    return x.new_zeros(B * T, C).index_copy(0, index, x).view(B, T, C)  # (B, T, C), zeros at padding
