"""Runner side: what each step runs on the student's code. Executed only in a runner process
(course/runner.py), never in the checker. Each probe gets the checker's inputs (tensors, and the
JSON `spec`), runs the student's functions and returns their outputs; it decides nothing. A test
that raises is reported by name with its exception, so one missing function costs only its tests.
"""
from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from .guard import refuse_shortcuts

Tensor = torch.Tensor


class Outputs:
    """Collects each named test's tensors ("test.key") and each failed test's exception line. Each
    test runs under the step's shortcut guard (course/guard.py): a library call that does the step
    wholesale fails the test with the rule."""

    def __init__(self, step: int, raise_errors: bool = False):
        self.step, self.raise_errors = step, raise_errors
        self.tensors: dict[str, Tensor] = {}
        self.errors: dict[str, str] = {}

    def run(self, test: str, fn: Callable[[], dict]) -> None:
        try:
            with torch.no_grad(), refuse_shortcuts(self.step):
                got = fn()
            for key, value in got.items():
                if not isinstance(value, Tensor):
                    value = torch.tensor(value) if isinstance(value, (int, float, bool)) else None
                if value is None:
                    raise TypeError(f"{test}: {key} should be a tensor, got {type(got[key]).__name__}")
                self.tensors[f"{test}.{key}"] = value.detach().cpu()
        except BaseException as e:  # noqa: BLE001 - SystemExit too: the test failed, the probe goes on
            if isinstance(e, KeyboardInterrupt) or self.raise_errors:
                raise
            where = [f for f in traceback.extract_tb(e.__traceback__) if "/course/" not in f.filename.replace("\\", "/")]
            at = f" (at {Path(where[-1].filename).name}:{where[-1].lineno})" if where else ""
            self.errors[test] = f"{type(e).__name__}: {e}"[:2000] + at


class FixedDropout(nn.Dropout):
    """Stands in for an nn.Dropout: in training it multiplies the k-th call's input by the checker's
    k-th mask (0 or 1/(1-p)), so the checker knows the exact expected output; it also records what
    it was applied to, which names the mistake when the output is wrong."""

    def __init__(self, masks: list[Tensor], p: float = 0.5):
        super().__init__(p)
        self.masks, self.seen = masks, []

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        self.seen.append(x.detach().clone())
        k = len(self.seen) - 1
        if k < len(self.masks) and self.masks[k].shape == x.shape:
            return x * self.masks[k]
        return nn.functional.dropout(x, self.p, True)  # not what the checker expects: it will say so

    def record(self) -> dict[str, Tensor]:
        out = {f"dropout_in{k}": t for k, t in enumerate(self.seen[:4])}
        out["dropout_calls"] = torch.tensor(len(self.seen))
        return out


class Constant(nn.Module):
    """Stands in for the embeddings: returns a fixed (B, T, C) tensor."""

    def __init__(self, x: Tensor):
        super().__init__()
        self.x = x

    def forward(self, input_ids, token_type_ids=None):
        return self.x


def build_model(spec: dict, t: dict[str, Tensor]):
    """The student's BertModel (the teaching path) with the checker's weights (Hugging Face names "w.*")."""
    from minbert import BertConfig, BertModel
    from minbert.checkpoint import hf_to_minbert
    model = BertModel(BertConfig(**spec["config"]))
    weights = {k[2:]: v for k, v in t.items() if k.startswith("w.")}
    model.load_state_dict(hf_to_minbert(weights, model))
    return model.eval()


def write_checkpoint(directory: Path, spec: dict, weights: dict[str, Tensor]) -> Path:
    from course import wire
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"model_type": "bert", **spec["config"]}))
    wire.save(directory / "model.safetensors", weights)
    return directory


# ---------------------------------------------------------------------------------- steps 1-5

def probe_1(t, spec, out, scratch):
    from minbert.attention import extended_attention_mask
    model = build_model(spec, t)
    attn, q, k, v, am = model.layers[0].attn, t["q"], t["k"], t["v"], t["attention_mask"]
    out.run("mask", lambda: {"f32": extended_attention_mask(am, torch.float32),
                             "f16": extended_attention_mask(am, torch.float16)})
    out.run("no_mask", lambda: {"y": attn.attention(q, k, v, None)})
    out.run("padding", lambda: {"y": attn.attention(q, k, v, t["additive"])})
    out.run("forward", lambda: {"y": attn(t["x"], t["additive"])})

    def dropout():
        attn.eval()
        e1, e2 = attn.attention(q, k, v, None), attn.attention(q, k, v, None)
        attn.attn_dropout = FixedDropout([t["keep"]])
        attn.train()
        return {"eval1": e1, "eval2": e2, "train": attn.attention(q, k, v, None), **attn.attn_dropout.record()}
    out.run("dropout", dropout)


class StandInAttention(nn.Module):
    """Stands in for SelfAttention in step 2, so that the layer is graded apart from step 1: every
    query weighs the real keys alike (scores 0 plus the additive mask), over values x @ value. Not
    BERT's attention, on purpose; the checker knows it. Records whether a mask arrived."""

    def __init__(self, value: Tensor):
        super().__init__()
        self.value, self.masks = value, []

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        self.masks.append(mask is not None)
        B, T, _ = x.shape
        scores = torch.zeros(B, T, T, dtype=x.dtype)
        if mask is not None:
            scores = scores + mask[:, 0]  # (B, T, T): (B, 1, 1, T) broadcast over the queries
        return scores.softmax(-1) @ (x @ self.value)  # (B, T, C)


def probe_2(t, spec, out, scratch):
    model = build_model(spec, t)
    layer, x = model.layers[0], t["x"]
    layer.attn = StandInAttention(t["stand_in.value"])
    out.run("shape", lambda: {"y": layer(x, None)})
    out.run("unpadded", lambda: {"y": layer(x[:1], None)})

    def padded():
        layer.attn.masks.clear()
        y = layer(x, t["additive"])
        return {"y": y, "mask_passed": torch.tensor(all(layer.attn.masks) and bool(layer.attn.masks))}
    out.run("padded", padded)

    def dropout():
        layer.dropout = FixedDropout([t["keep1"], t["keep2"]])
        layer.train()
        return {"train": layer(x, None), **layer.dropout.record()}
    out.run("dropout", dropout)


def probe_3(t, spec, out, scratch):
    emb = build_model(spec, t).embeddings
    ids, types = t["input_ids"], t["token_type_ids"]
    out.run("full", lambda: {"y": emb(ids, types)})
    out.run("no_types", lambda: {"y": emb(ids[:1], None)})
    out.run("short", lambda: {"y": emb(ids[:, :5], types[:, :5])})

    def dropout():
        e1, e2 = emb(ids, types), emb(ids, types)
        emb.dropout = FixedDropout([t["keep"]])
        emb.train()
        return {"eval1": e1, "eval2": e2, "train": emb(ids, types), **emb.dropout.record()}
    out.run("dropout", dropout)


def probe_4(t, spec, out, scratch):
    batch = {k: t[k] for k in ("input_ids", "attention_mask", "token_type_ids")}

    def pooler_only():
        model = build_model(spec, t)
        model.embeddings, model.layers = Constant(t["hidden"]), nn.ModuleList()
        return {"y": model(t["input_ids"])["pooler_output"]}
    out.run("pooler", pooler_only)
    out.run("model", lambda: build_model(spec, t)(**batch))

    def padding():
        n = int(t["attention_mask"][1].sum())
        return {"alone": build_model(spec, t)(**{k: v[1:2, :n] for k, v in batch.items()})["last_hidden_state"]}
    out.run("padding", padding)


def probe_5(t, spec, out, scratch):
    from minbert import BertModel
    batch = {k: t[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    weights = {k[2:]: v for k, v in t.items() if k.startswith("w.")}
    out.run("hf", lambda: BertModel.from_pretrained(write_checkpoint(scratch / "hf", spec, weights))(**batch))
    google = {"bert." + k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
              for k, v in weights.items()}
    google["cls.predictions.bias"] = torch.zeros(3)
    out.run("google", lambda: BertModel.from_pretrained(write_checkpoint(scratch / "google", spec, google))(**batch))

    def round_trip():
        BertModel.from_pretrained(scratch / "hf").save_pretrained(scratch / "saved")
        return BertModel.from_pretrained(scratch / "saved")(**batch)
    out.run("round_trip", round_trip)
    real = {k: t["real." + k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    out.run("minilm", lambda: BertModel.from_pretrained("all-MiniLM-L6-v2")(**real))


# ---------------------------------------------------------------------------------- steps 6-11

def probe_6(t, spec, out, scratch):
    from minbert import AdamW
    for c, case in enumerate(spec["cases"]):
        def run_case(c=c, case=case):
            ps = [t[f"c{c}.p{i}"].clone().requires_grad_() for i in range(len(case["groups"]))]
            groups = [{"params": [p], **{k: (tuple(v) if k == "betas" else v) for k, v in g.items()}}
                      for p, g in zip(ps, case["groups"])]
            opt = AdamW(groups, lr=case["groups"][0]["lr"])
            with torch.enable_grad():
                for s in range(case["steps"]):
                    for i, p in enumerate(ps):
                        p.grad = t[f"c{c}.g{s}.{i}"].clone()
                    opt.step()
            return {f"p{i}": p.detach() for i, p in enumerate(ps)}
        out.run(case["name"], run_case)


def probe_7(t, spec, out, scratch):
    from heads.pooling import mean_pool
    from heads.sentiment import SentimentHead
    h, mask = t["h"], t["mask"]
    out.run("mean", lambda: {"y": mean_pool(h, mask)})
    out.run("poisoned", lambda: {"y": mean_pool(t["poisoned"], mask)})
    out.run("empty_row", lambda: {"y": mean_pool(h, t["mask_empty"])})
    for pooling in ("cls", "mean", "pooler"):
        def head(pooling=pooling):
            m = SentimentHead(hidden_size=h.shape[-1], num_classes=5, pooling=pooling).eval()
            linear = [mod for mod in m.classifier.modules() if isinstance(mod, nn.Linear)][-1]
            linear.weight.copy_(t["W"])
            linear.bias.copy_(t["b"])
            return {"y": m(h, mask, pooler_output=t["pooler_output"])}
        out.run(f"head_{pooling}", head)


def probe_8(t, spec, out, scratch):
    from heads.paraphrase import pair_features
    from heads.similarity import cosine_score
    from training.multitask.tasks import loss_from_output
    out.run("pair_features", lambda: {"y": pair_features(t["u"], t["v"])})
    out.run("cosine", lambda: {"y": cosine_score(t["u"], t["v"])})
    out.run("cosine_extremes", lambda: {"y": cosine_score(t["eu"], t["ev"])})
    for task in ("sst", "quora", "sts"):
        out.run(f"loss_{task}", lambda task=task: {"y": loss_from_output(task, t[f"{task}.out"], t[f"{task}.labels"])})


def probe_9(t, spec, out, scratch):
    from training.engine.pcgrad import pcgrad_project, project_conflicting
    gen = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    for case in ("no_conflict", "pair"):
        grads = [g.clone() for g in t[case].unbind(0)]
        out.run(case, lambda grads=grads: {"y": torch.stack(project_conflicting(grads, gen(0))),
                                           "inputs": torch.stack(grads)})
    out.run("sum", lambda: {"y": pcgrad_project(list(t["sum"].unbind(0)), gen(1))})

    def unchanged():
        grads = [g.clone() for g in t["order"].unbind(0)]
        project_conflicting(grads, gen(0))
        return {"y": torch.stack(grads)}
    out.run("inputs_unchanged", unchanged)

    def order():
        grads = list(t["order"].unbind(0))
        runs = [torch.stack(project_conflicting(grads, gen(s))) for s in range(spec["draws"])]
        return {"y": torch.stack(runs), "again": torch.stack(project_conflicting(grads, gen(0)))}
    out.run("order", order)


def probe_10(t, spec, out, scratch):
    from training.methods.distill_targets import annealed_lambda, distill_loss, mixed_targets
    out.run("lambda", lambda: {"y": torch.tensor([float(annealed_lambda(s, n)) for s, n in spec["lambda_cases"]],
                                                 dtype=torch.float64)})
    for task in ("sst", "quora", "sts"):
        out.run(f"targets_{task}", lambda task=task: {
            f"lam{j}": mixed_targets(task, t[f"{task}.gold"], t[f"{task}.teacher"], lam)
            for j, lam in enumerate(spec["lambdas"])})
        out.run(f"loss_{task}", lambda task=task: {"y": distill_loss(task, t[f"{task}.out"], t[f"{task}.target"])})


def probe_11(t, spec, out, scratch):
    from training.methods.gan import discriminator_loss, generator_loss, supervised_loss
    labels, labelled, none = t["labels"], t["labelled"].bool(), torch.zeros_like(t["labelled"]).bool()
    out.run("supervised", lambda: {"y": supervised_loss(t["real"], labels, labelled)})
    out.run("supervised_none", lambda: {"y": supervised_loss(t["real"], labels, none)})
    out.run("d_unsupervised", lambda: {"y": discriminator_loss(t["real"], t["fake"], labels, none)})
    out.run("d_supervised", lambda: {"y": discriminator_loss(t["real"], t["fake"], labels, labelled)})
    out.run("d_ac", lambda: {"y": discriminator_loss(t["real"], t["fake"], labels, labelled, t["cond"])})
    out.run("g_adversarial", lambda: {"y": generator_loss(t["fake"], t["real_f"].clone(), t["real_f"].clone())})
    out.run("g_matching", lambda: {"y": generator_loss(t["fake"], t["real_f"], t["fake_f"])})
    out.run("g_ac", lambda: {"y": generator_loss(t["fake"], t["real_f"], t["fake_f"], t["cond"])})

    def gradients():
        real_f, fake_f = t["real_f"].clone().requires_grad_(), t["fake_f"].clone().requires_grad_()
        with torch.enable_grad():
            loss = generator_loss(t["fake"], real_f, fake_f)
            if not (isinstance(loss, Tensor) and loss.requires_grad):
                raise AssertionError("generator_loss must return a tensor that depends on fake_features")
            loss.backward()
        zero = torch.zeros_like
        return {"real": zero(real_f) if real_f.grad is None else real_f.grad,
                "fake": zero(fake_f) if fake_f.grad is None else fake_f.grad}
    out.run("g_gradients", gradients)


class StandInMultitask(nn.Module):
    """Stands in for MultitaskBert in step 12: heads on each sentence's first position x[:, 0], so the
    checker knows every output (course/checks_tasks.py writes them out). net(task, *inputs) as
    MultitaskBert's forward, encode_pair as its sentence vectors (the --quora-mnrl term)."""

    def __init__(self, t: dict[str, Tensor]):
        super().__init__()
        self.W = nn.ParameterDict({task: nn.Parameter(t[f"W.{task}"].clone()) for task in ("sst", "quora", "sts")})
        self.E = nn.Parameter(t["E"].clone())

    def forward(self, task: str, *inputs: dict) -> Tensor:
        if task == "sst":
            return inputs[0]["x"][:, 0] @ self.W["sst"]  # (B, 5)
        z = (inputs[0]["x"][:, 0] * inputs[1]["x"][:, 0]) @ self.W[task]  # (B,)
        return z if task == "quora" else 5 * torch.sigmoid(z)

    def encode_pair(self, a: dict, b: dict) -> tuple[Tensor, Tensor]:
        return a["x"][:, 0] @ self.E, b["x"][:, 0] @ self.E  # (B, D) each


def probe_12(t, spec, out, scratch):
    from types import SimpleNamespace

    from training.multitask.recipe import batch_loss

    def options(**changed):  # the options batch_loss reads, at their defaults (training/multitask/options.py)
        return SimpleNamespace(**{"device": "cpu", "amp": "none", "rdrop": 0.0, "sts_loss": "mse", "quora_mnrl": 0.0,
                                  "loss_weights": {}, **changed})

    def batch(task: str) -> dict:
        def encoded(x):
            return {"x": x, "attention_mask": torch.ones(x.shape[:2], dtype=torch.long)}  # (B, T)
        if task == "sst":
            return {"inputs": encoded(t["sst.x"]), "labels": t["sst.y"], "ids": list(range(len(t["sst.y"])))}
        return {"inputs1": encoded(t[f"{task}.a"]), "inputs2": encoded(t[f"{task}.b"]), "labels": t[f"{task}.y"],
                "ids": list(range(len(t[f"{task}.y"])))}

    def loss(task: str, weight: float = 1.0, **changed) -> dict:
        model = StandInMultitask(t)
        return {"y": batch_loss(model, model, task, batch(task), weight, options(**changed))}

    out.run("sst", lambda: loss("sst"))
    out.run("weighted", lambda: loss("quora", spec["weight"], loss_weights={"quora": spec["loss_weight"]}))
    out.run("sts_cosent", lambda: loss("sts", sts_loss="cosent"))
    out.run("mnrl", lambda: loss("quora", quora_mnrl=spec["mnrl"]))

    def gradient():
        model = StandInMultitask(t)
        with torch.enable_grad():
            value = batch_loss(model, model, "sst", batch("sst"), 1.0, options())
            if not (isinstance(value, Tensor) and value.requires_grad):
                raise AssertionError("batch_loss returned a loss the loop cannot differentiate (no gradient): "
                                     "do not detach it, call .item() or compute it under torch.no_grad()")
            value.backward()
        return {"W": torch.zeros_like(model.W["sst"]) if model.W["sst"].grad is None else model.W["sst"].grad}
    out.run("gradient", gradient)


PROBES = {1: probe_1, 2: probe_2, 3: probe_3, 4: probe_4, 5: probe_5, 6: probe_6, 7: probe_7, 8: probe_8,
          9: probe_9, 10: probe_10, 11: probe_11, 12: probe_12}


def run_probe(step: int, tensors: dict[str, Tensor], spec: dict, scratch: Path, raise_errors: bool = False) -> Outputs:
    """raise_errors: let the first exception propagate (debugging under pytest --pdb)."""
    torch.manual_seed(0)
    out = Outputs(step, raise_errors)
    PROBES[step](tensors, spec, out, scratch)
    return out


