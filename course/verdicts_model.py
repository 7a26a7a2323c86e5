"""The public comparisons of steps 1-5 (the BERT encoder): the runner's outputs against the expected
tensors (`e`), which hold the references and each known mistake's outputs. Nothing here computes a
reference; the tensors come from the instructors' producer (fresh secret inputs on Gradescope) or from
the release's stored public checks (course/public/). Each step lists its tests and which test builds
on which (`depends`): a dependant of a failed test says "fix the first failure first"."""
from __future__ import annotations

import torch

from .compare import Judge, matches


# ---------------------------------------------------------------------------- step 1: attention

def judge_1(t, spec, j: Judge):
    am, v = t["attention_mask"], t["v"]
    f32, f16 = j.got("mask", "f32"), j.got("mask", "f16")
    B, T = am.shape
    if f32 is not None and f16 is not None:
        for got, dtype in ((f32, torch.float32), (f16, torch.float16)):
            if not j.check("mask", got.shape == (B, 1, 1, T) and got.dtype == dtype,
                           f"extended_attention_mask(({B}, {T}) mask, {dtype}) should return a {dtype} tensor of "
                           f"shape ({B}, 1, 1, {T}) (broadcast over heads and queries); got {got.dtype} "
                           f"{tuple(got.shape)}", "step01.mask_shape"):
                break
            row = got[:, 0, 0, :].float()
            real, pad = row[am == 1], row[am == 0]
            if not (j.check("mask", bool(torch.isfinite(pad).all()),
                            f"{dtype}: the mask on padding must be finite: use torch.finfo(dtype).min, not -inf "
                            f"(a fully padded row would give NaN, and 0 * -inf is NaN), nor a constant like -1e9 "
                            f"that overflows in float16", "step01.mask_not_finite")
                    and j.check("mask", bool(torch.all(real == 0)), f"{dtype}: the mask must be exactly 0 on real tokens",
                                "step01.mask_real_not_zero")
                    and j.check("mask", bool(torch.all(pad <= -1e4)),
                                f"{dtype}: the mask on padding is {pad.max().item():.3g} at most; it must be very "
                                f"negative (torch.finfo(dtype).min) so padding gets ~0 attention",
                                "step01.mask_not_negative")):
                break
    j.close("no_mask", "attention(q, k, v, mask=None)", j.got("no_mask"), "no_mask.y",
            "Expected softmax(q k^T / sqrt(head_size)) v with the softmax over the keys (last dim).")
    j.close("padding", "attention(q, k, v, mask) with padding", j.got("padding"), "padding.y",
            "The mask is additive, shape (B, 1, 1, T): add it to the scores before the softmax.")
    j.close("forward", "SelfAttention.forward(x, mask) of layer 0", j.got("forward"), "forward.y",
            "SelfAttention.forward splits q, k, v into heads (B, nh, T, hs), calls self.attention, merges the heads "
            "back to (B, T, C) and applies self.proj.")
    e1, e2, train, calls = (j.got("dropout", key) for key in ("eval1", "eval2", "train", "dropout_calls"))
    if any(x is None for x in (e1, e2, train, calls)):
        return
    if not j.check("dropout", torch.equal(e1, e2) and matches(e1, j.e["dropout.eval"], 1e-5),
                   "in eval mode attention(...) must be deterministic and equal softmax(q k^T / sqrt(hs)) v (dropout off)"):
        return
    seen, P = j.outputs.get("dropout.dropout_in0"), j.e["dropout.probabilities"]
    mistake = None
    if int(calls) == 0:
        hint, mistake = ("no dropout ran in training mode: apply self.attn_dropout to the attention probabilities "
                         "(BERT drops attention weights)"), "step01.dropout_missing"
    elif seen is not None and seen.shape == v.shape:
        hint, mistake = ("you applied dropout to the attention output (probabilities @ v) instead of to the attention "
                         "probabilities: BERT drops the weights, att = self.attn_dropout(softmax(...)), then att @ v",
                         "step01.dropout_on_output")
    elif seen is not None and seen.shape == P.shape and not matches(seen, P):
        hint, mistake = ("dropout was applied to something other than the softmax probabilities (before the softmax?): "
                         "att = self.attn_dropout(softmax(scores)), then att @ v"), "step01.dropout_before_softmax"
    else:
        hint = "In training mode apply self.attn_dropout to the softmax probabilities, then multiply by v."
    j.close("dropout", "attention(q, k, v) in training mode (dropout p=0.5 with a known mask)", train, "dropout.train",
            hint, mistake=mistake)


# ---------------------------------------------------------------------------- step 2: layer

def judge_2(t, spec, j: Judge):
    x = t["x"]
    hint = ("Expected x = LN1(x + Dropout(attn(x, mask))), then x = LN2(x + Dropout(FFN(x))) with "
            "FFN = ffn_out(gelu(ffn_in(x))).")
    got = j.got("shape")
    if got is not None:
        j.check("shape", got.shape == x.shape, f"BertLayer.forward must return a tensor shaped like its input "
                                               f"{tuple(x.shape)}, got {tuple(got.shape)}")
    j.close("unpadded", "layer 0 output for sequence 0 (no mask)", j.got("unpadded"), "unpadded.y", hint)
    got, passed = j.got("padded"), j.outputs.get("padded.mask_passed")
    if got is not None and passed is not None and not bool(passed):
        j.fail("padded", "self.attn got no mask for the padded batch: pass the mask on, self.attn(x, mask)",
               mistake="step02.mask_dropped")
    j.close("padded", "layer 0 output for the padded batch", got, "padded.y", hint)
    train, calls = j.got("dropout", "train"), j.got("dropout", "dropout_calls")
    if train is None or calls is None:
        return
    seen = [j.outputs.get(f"dropout.dropout_in{k}") for k in range(2)]
    mistake = None
    if int(calls) == 0:
        hint, mistake = "no dropout ran in training mode: apply self.dropout to both residual branches", \
            "step02.dropout_missing"
    elif int(calls) == 1:
        hint, mistake = ("dropout on only one residual branch: BERT applies self.dropout to the attention output AND to "
                         "the feed-forward output, each before its residual sum"), "step02.dropout_one_branch"
    elif matches(seen[0], j.e["dropout.after_ln1"]):
        hint, mistake = ("dropout after the LayerNorm: BERT drops the branch output before the residual sum, "
                         "x = LN(x + Dropout(branch(x)))"), "step02.dropout_after_ln"
    elif not matches(seen[0], j.e["dropout.attention_output"]):
        hint = "the first dropout must act on the attention output self.attn(x, mask), before the residual sum"
    elif not matches(seen[1], j.e["dropout.ffn_output"]):
        hint = "the second dropout must act on the feed-forward output ffn_out(gelu(ffn_in(x))), before the residual sum"
    else:
        hint = "x = LN1(x + Dropout(attn(x))); x = LN2(x + Dropout(FFN(x))): dropout on each branch, before each sum."
    j.close("dropout", "layer 0 in training mode (dropout p=0.5 with known masks)", train, "dropout.train", hint,
            mistake=mistake)


# ---------------------------------------------------------------------------- step 3: embeddings

def judge_3(t, spec, j: Judge):
    j.close("full", "embeddings(input_ids, token_type_ids)", j.got("full"), "full.y",
            "Expected LayerNorm(word_embeddings(ids) + position_embeddings(0..T-1) + token_type_embeddings(types)), "
            "then dropout.")
    j.close("no_types", "embeddings(input_ids, token_type_ids=None)", j.got("no_types"), "no_types.y",
            "token_type_ids=None must mean every token is in segment A (type 0).")
    j.close("short", "embeddings of the first 5 tokens", j.got("short"), "short.y",
            "Positions must be 0..T-1 for a batch of length T.")
    e1, e2, train, calls = (j.got("dropout", k) for k in ("eval1", "eval2", "train", "dropout_calls"))
    if any(x is None for x in (e1, e2, train, calls)):
        return
    if not j.check("dropout", torch.equal(e1, e2) and matches(e1, j.e["dropout.eval"], 1e-5),
                   "in eval mode the embeddings must be deterministic and equal LN(sum) (dropout off)"):
        return
    seen = j.outputs.get("dropout.dropout_in0")
    if int(calls) == 0:
        hint, mistake = "no dropout ran in training mode: apply self.dropout after the LayerNorm", "step03.dropout_missing"
    elif matches(seen, j.e["dropout.sum"]):
        hint, mistake = "dropout before the LayerNorm: BERT applies it to LN(sum)", "step03.dropout_before_ln"
    else:
        hint, mistake = "In training mode apply self.dropout once, to LayerNorm(word + position + token type).", None
    j.close("dropout", "embeddings in training mode (dropout p=0.5 with a known mask)", train, "dropout.train", hint,
            mistake=mistake)


# ---------------------------------------------------------------------------- step 4: model

def judge_4(t, spec, j: Judge):
    j.close("pooler", "pooler_output", j.got("pooler"), "pooler.y",
            "Expected pooler_output = tanh(self.pooler(last_hidden_state[:, 0])), shape (B, C).")
    ref, real = j.e["model.last_hidden_state"], t["attention_mask"].bool()
    got = j.got("model", "last_hidden_state")
    if got is not None and j.check("model", got.shape == ref.shape,
                                   f"last_hidden_state has shape {tuple(got.shape)}, expected {tuple(ref.shape)}"):
        j.close("model", "last_hidden_state on the real tokens", got[real], "model.last_hidden_state",
                "The model chains steps 1-3: make those pass first.", expected=ref[real])
        j.close("model", "pooler_output of the whole model", j.got("model", "pooler_output"), "model.pooler_output",
                "The model chains steps 1-3 and the pooler: make those pass first.")
    n = int(real[1].sum())
    j.close("padding", f"sequence 1's {n} real tokens computed alone", j.got("padding", "alone"),
            "model.last_hidden_state", "Padding must be invisible: the attention mask must give padded keys no weight.",
            expected=ref[1:2, :n])


# ---------------------------------------------------------------------------- step 5: checkpoints

def judge_5(t, spec, j: Judge):
    ref, real = j.e["tiny.last_hidden_state"], t["attention_mask"].bool()
    hint = "The loaded model chains steps 1-4: make those pass first."
    for test, what in (("hf", "from a Hugging Face checkpoint"), ("google", "from a Google-layout checkpoint"),
                       ("round_trip", "after save_pretrained")):
        got = j.got(test, "last_hidden_state")
        if got is not None and j.check(test, got.shape == ref.shape,
                                       f"last_hidden_state of the model loaded {what} has shape {tuple(got.shape)}"):
            j.close(test, f"last_hidden_state of the model loaded {what}", got[real], "tiny.last_hidden_state", hint,
                    expected=ref[real])
            j.close(test, f"pooler_output of the model loaded {what}", j.got(test, "pooler_output"),
                    "tiny.pooler_output", hint)
    got, ref = j.got("minilm", "last_hidden_state"), j.e["minilm.last_hidden_state"]
    real = t["real.attention_mask"].bool()
    if got is not None and j.check("minilm", got.shape == ref.shape, f"last_hidden_state has shape {tuple(got.shape)}"):
        # 6 layers of real weights: fp32 rounding accumulates, hence the looser tolerance.
        j.close("minilm", "all-MiniLM-L6-v2 last_hidden_state on real tokens", got[real], "minilm.last_hidden_state",
                hint, atol=5e-5, rtol=1e-4, expected=ref[real])
        j.close("minilm", "all-MiniLM-L6-v2 pooler_output", j.got("minilm", "pooler_output"), "minilm.pooler_output",
                hint, atol=5e-5, rtol=1e-4)


# step -> (verdict, tests in order, which test builds on which)
STEPS = {1: (judge_1, ["mask", "no_mask", "padding", "forward", "dropout"],
             {"padding": ["no_mask"], "forward": ["padding"], "dropout": ["no_mask"]}),
         2: (judge_2, ["shape", "unpadded", "padded", "dropout"], {"padded": ["unpadded"], "dropout": ["unpadded"]}),
         3: (judge_3, ["full", "no_types", "short", "dropout"],
             {"no_types": ["full"], "short": ["full"], "dropout": ["full"]}),
         4: (judge_4, ["pooler", "model", "padding"], {"padding": ["model"]}),
         5: (judge_5, ["hf", "google", "round_trip", "minilm"], {"google": ["hf"], "round_trip": ["hf"]})}
