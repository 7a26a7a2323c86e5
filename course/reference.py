"""The checker's own references: a small functional BERT on Hugging Face weight names, and AdamW to
the course's formula. Written from the papers (Devlin et al. 2018; Loshchilov & Hutter 2019 with
the CS224N "efficient" bias correction), with PyTorch's functions only: the checker imports no
student code and no project code, so nothing a submission changes can change these numbers.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def hf_name(key: str) -> str:
    """Google / older layouts -> the names used here ("bert." prefix, LayerNorm gamma/beta)."""
    key = key[5:] if key.startswith("bert.") else key
    return key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


def random_bert(cfg: dict, gen: torch.Generator) -> dict[str, Tensor]:
    """Random weights (HF names) for a BERT of this shape; LayerNorms away from 1/0 so they matter."""
    C, I, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    rn = lambda *s, std=0.3: torch.randn(*s, generator=gen) * std  # noqa: E731
    w = {"embeddings.word_embeddings.weight": rn(cfg["vocab_size"], C, std=1.0),
         "embeddings.position_embeddings.weight": rn(cfg["max_position_embeddings"], C, std=1.0),
         "embeddings.token_type_embeddings.weight": rn(cfg["type_vocab_size"], C, std=1.0),
         "embeddings.LayerNorm.weight": 1 + rn(C), "embeddings.LayerNorm.bias": rn(C),
         "pooler.dense.weight": rn(C, C), "pooler.dense.bias": rn(C)}
    for i in range(L):
        p = f"encoder.layer.{i}."
        for name, (o, n) in {"attention.self.query": (C, C), "attention.self.key": (C, C),
                             "attention.self.value": (C, C), "attention.output.dense": (C, C),
                             "intermediate.dense": (I, C), "output.dense": (C, I)}.items():
            w[p + name + ".weight"], w[p + name + ".bias"] = rn(o, n, std=1 / math.sqrt(n)), rn(o, std=0.1)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[p + name + ".weight"], w[p + name + ".bias"] = 1 + rn(C), rn(C)
    return w


def linear(w: dict[str, Tensor], name: str, x: Tensor) -> Tensor:
    return F.linear(x, w[name + ".weight"], w[name + ".bias"])


def layer_norm(w: dict[str, Tensor], name: str, x: Tensor, eps: float) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], w[name + ".weight"], w[name + ".bias"], eps)


def additive_mask(attention_mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """(B, T) 0/1 -> (B, 1, 1, T): 0 on tokens, the dtype's minimum on padding."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def attention_math(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float | None = None,
                   keep: Tensor | None = None) -> Tensor:
    """softmax(q k^T * scale + mask) v; keep: a 0/(1/(1-p)) dropout mask on the probabilities."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    att = q @ k.transpose(-2, -1) * scale  # (B, nh, T, T)
    if mask is not None:
        att = att + mask
    att = att.softmax(-1)
    if keep is not None:
        att = att * keep
    return att @ v  # (B, nh, T, hs)


def heads(x: Tensor, nh: int) -> Tensor:
    B, T, C = x.shape
    return x.view(B, T, nh, C // nh).transpose(1, 2)  # (B, nh, T, hs)


def self_attention(w: dict[str, Tensor], i: int, x: Tensor, mask: Tensor | None, nh: int) -> Tensor:
    """The attention sub-block of layer i before its residual: proj(merge(attention(q, k, v)))."""
    p = f"encoder.layer.{i}.attention."
    q, k, v = (heads(linear(w, p + "self." + n, x), nh) for n in ("query", "key", "value"))
    y = attention_math(q, k, v, mask).transpose(1, 2).reshape(x.shape)  # (B, T, C)
    return linear(w, p + "output.dense", y)


def stand_in_attention(value: Tensor, x: Tensor, mask: Tensor | None) -> Tensor:
    """What the step-2 probe puts in place of SelfAttention (course/probes.py, StandInAttention), so
    that step 2 is graded apart from step 1: every query weighs the real keys alike (scores 0 plus the
    additive mask), over values x @ value. Not BERT's attention, on purpose."""
    B, T, _ = x.shape
    scores = torch.zeros(B, T, T, dtype=x.dtype)
    if mask is not None:
        scores = scores + mask[:, 0]  # (B, T, T): (B, 1, 1, T) broadcast over the queries
    return scores.softmax(-1) @ (x @ value)  # (B, T, C)


def ffn(w: dict[str, Tensor], i: int, h: Tensor, act=F.gelu) -> Tensor:
    p = f"encoder.layer.{i}."
    return linear(w, p + "output.dense", act(linear(w, p + "intermediate.dense", h)))


def bert_layer(w, i, x, mask, cfg, drop1: Tensor | None = None, drop2: Tensor | None = None) -> Tensor:
    """Post-LN: h = LN(x + drop1 * attn(x)); LN(h + drop2 * ffn(h)). drop*: fixed dropout masks."""
    eps, p = cfg["layer_norm_eps"], f"encoder.layer.{i}."
    a = self_attention(w, i, x, mask, cfg["num_attention_heads"])
    h = layer_norm(w, p + "attention.output.LayerNorm", x + (a if drop1 is None else a * drop1), eps)
    f = ffn(w, i, h)
    return layer_norm(w, p + "output.LayerNorm", h + (f if drop2 is None else f * drop2), eps)


def embeddings(w, ids: Tensor, types: Tensor | None, eps: float) -> Tensor:
    """LN(word + position + token type), before dropout."""
    types = torch.zeros_like(ids) if types is None else types
    x = (F.embedding(ids, w["embeddings.word_embeddings.weight"])
         + w["embeddings.position_embeddings.weight"][: ids.shape[1]]
         + F.embedding(types, w["embeddings.token_type_embeddings.weight"]))
    return layer_norm(w, "embeddings.LayerNorm", x, eps)


def bert(w, cfg, ids, attention_mask=None, types=None) -> dict[str, Tensor]:
    x = embeddings(w, ids, types, cfg["layer_norm_eps"])
    mask = None if attention_mask is None else additive_mask(attention_mask)
    for i in range(cfg["num_hidden_layers"]):
        x = bert_layer(w, i, x, mask, cfg)
    return {"last_hidden_state": x, "pooler_output": torch.tanh(linear(w, "pooler.dense", x[:, 0]))}


def adamw(params: list[Tensor], grads: list[list[Tensor]], groups: list[dict]) -> list[Tensor]:
    """The course's AdamW, written from the formula. params[i] belongs to groups[i] (lr, betas, eps,
    weight_decay, correct_bias); grads[s][i] is its gradient at step s. In float64, returned as such.
        m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
        step = lr * sqrt(1 - b2^t) / (1 - b1^t)   (lr when correct_bias is off)
        p = p - step * m / (sqrt(v) + eps);  then  p = p - lr * wd * p   (decoupled, after Adam)"""
    ps = [p.double().clone() for p in params]
    m = [torch.zeros_like(p) for p in ps]
    v = [torch.zeros_like(p) for p in ps]
    for t, gs in enumerate(grads, start=1):
        for i, (p, g) in enumerate(zip(ps, gs)):
            o, g = groups[i], g.double()
            b1, b2 = o["betas"]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            step = o["lr"] * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) if o["correct_bias"] else o["lr"]
            p -= step * m[i] / (v[i].sqrt() + o["eps"])
            p -= o["lr"] * o["weight_decay"] * p
    return ps
