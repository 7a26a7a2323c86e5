"""Instructors only: the producer of steps 6-12 (the optimizer, the heads, the training losses and step).
Fresh random inputs from a seed, and what the student's outputs are compared with: references written
out here with PyTorch's own functions, and the outputs of each known mistake, named for the hints. The
comparison itself is public (course/verdicts_tasks.py) and reads only these tensors. Nothing here
imports student code."""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from . import reference as R
from .compare import Expected

Tensor = torch.Tensor


# ---------------------------------------------------------------------------- step 6: AdamW

def adamw_cases(gen) -> list[dict]:
    lr = float(torch.empty(()).uniform_(3e-3, 3e-2, generator=gen))
    g = lambda **o: {"lr": lr, "betas": [0.9, 0.999], "eps": 1e-6, "weight_decay": 0.0, "correct_bias": True, **o}  # noqa: E731
    return [
        {"name": "first_step_corrected", "steps": 1, "groups": [g(lr=1.0)]},
        {"name": "first_step_uncorrected", "steps": 1, "groups": [g(lr=1.0, correct_bias=False)]},
        {"name": "without_decay", "steps": 30, "groups": [g(betas=[0.8, 0.99]), g()]},
        {"name": "decoupled_decay", "steps": 3, "groups": [g(lr=0.1), g(lr=0.1, weight_decay=0.5)]},
        {"name": "small_gradients", "steps": 5, "scale": 1e-5, "groups": [g(), g()]},
        {"name": "long_run", "steps": 200, "groups": [g(lr=1e-3, weight_decay=1e-4), g(lr=1e-3, weight_decay=1e-4)]},
    ]


def inputs_6(gen):
    cases, t = adamw_cases(gen), {}
    for c, case in enumerate(cases):
        shapes = [(3, 2), (5,)][: len(case["groups"])] if len(case["groups"]) > 1 else [(4,)]
        for i, shape in enumerate(shapes):
            t[f"c{c}.p{i}"] = torch.randn(shape, generator=gen)
            for s in range(case["steps"]):
                t[f"c{c}.g{s}.{i}"] = torch.randn(shape, generator=gen) * (0.1 + i) * case.get("scale", 1.0)
    return t, {"cases": cases}


def torch_adamw(params, grads, groups, decay_first=True):
    """torch.optim.AdamW: decays before the Adam step and adds eps after the bias correction."""
    ps = [p.clone().requires_grad_() for p in params]
    opt = torch.optim.AdamW([{"params": [p], "lr": g["lr"], "betas": tuple(g["betas"]), "eps": g["eps"],
                              "weight_decay": g["weight_decay"]} for p, g in zip(ps, groups)])
    for gs in grads:
        for p, gr in zip(ps, gs):
            p.grad = gr.clone()
        opt.step()
    return [p.detach() for p in ps]


def l2_adam(params, grads, groups):
    """Adam with the decay added to the gradient (L2 regularisation, not decoupled)."""
    ps = [p.double().clone() for p in params]
    m = [torch.zeros_like(p) for p in ps]
    v = [torch.zeros_like(p) for p in ps]
    for t, gs in enumerate(grads, start=1):
        for i, (p, g) in enumerate(zip(ps, gs)):
            o, g = groups[i], g.double() + groups[i]["weight_decay"] * p
            b1, b2 = o["betas"]
            m[i], v[i] = b1 * m[i] + (1 - b1) * g, b2 * v[i] + (1 - b2) * g * g
            step = o["lr"] * (1 - b2 ** t) ** 0.5 / (1 - b1 ** t) if o["correct_bias"] else o["lr"]
            p -= step * m[i] / (v[i].sqrt() + o["eps"])
    return ps


def expect_6(t, spec) -> Expected:
    e = Expected()
    for c, case in enumerate(spec["cases"]):
        name, groups = case["name"], case["groups"]
        params = [t[f"c{c}.p{i}"] for i in range(len(groups))]
        grads = [[t[f"c{c}.g{s}.{i}"] for i in range(len(groups))] for s in range(case["steps"])]
        uncorrected = [{**o, "correct_bias": not o["correct_bias"]} for o in groups]
        wrong = {"step06.torch_adamw": ("torch.optim.AdamW, which decays before the Adam update and adds eps after "
                                        "the bias correction", torch_adamw(params, grads, groups)),
                 "step06.l2_decay": ("Adam with the decay added to the gradient (L2), not decoupled",
                                     l2_adam(params, grads, groups)),
                 "step06.bias_correction": ("the update with the bias correction the wrong way round (correct_bias "
                                            "ignored or inverted)", R.adamw(params, grads, uncorrected))}
        for i, p in enumerate(R.adamw(params, grads, groups)):
            e.put(f"{name}.p{i}", p, {mid: (text, ps[i]) for mid, (text, ps) in wrong.items()})
    return e


# ---------------------------------------------------------------------------- step 7: pooling, sentiment head

def inputs_7(gen):
    B, T, C, lengths = 4, 7, 8, [7, 3, 1, 5]
    h = torch.randn(B, T, C, generator=gen)
    mask = torch.tensor([[1] * n + [0] * (T - n) for n in lengths])
    poisoned = h.masked_fill(mask[..., None] == 0, float("nan"))
    poisoned[1, -1] = float("inf")
    empty = mask.clone()
    empty[2] = 0
    return ({"h": h, "mask": mask, "poisoned": poisoned, "mask_empty": empty, "W": torch.randn(5, C, generator=gen),
             "b": torch.randn(5, generator=gen), "pooler_output": torch.tanh(torch.randn(B, C, generator=gen))}, {})


def masked_mean(h, mask):
    return torch.stack([h[b][mask[b].bool()].mean(0) if mask[b].any() else torch.zeros(h.shape[-1])
                        for b in range(h.shape[0])])  # (B, C), token by token


def expect_7(t, spec) -> Expected:
    h, mask = t["h"], t["mask"]
    e = Expected()
    e.put("mean.y", masked_mean(h, mask), {
        "step07.mean_with_padding": ("the mean over all T positions, padding included", h.mean(1))})
    e.put("poisoned.y", masked_mean(h, mask))
    e.put("empty_row.y", masked_mean(h, t["mask_empty"]))
    pooled = {"cls": h[:, 0], "mean": masked_mean(h, mask), "pooler": t["pooler_output"]}
    for pooling, x in pooled.items():
        e.put(f"head_{pooling}.y", F.linear(x, t["W"], t["b"]),
              {f"step07.{pooling}_pooled_as_{o}": (f"the {o} vector instead", F.linear(v, t["W"], t["b"]))
               for o, v in pooled.items() if o != pooling})
    return e


# ---------------------------------------------------------------------------- step 8: multitask heads

def inputs_8(gen):
    t = {"u": torch.randn(5, 4, generator=gen), "v": torch.randn(5, 4, generator=gen),
         "eu": torch.tensor([[1.0, 2.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]) * (1 + torch.rand(3, 1, generator=gen)),
         "ev": torch.tensor([[2.0, 4.0, 0.0], [0.0, 3.0, 0.0], [-1.0, -1.0, 0.0]]),
         "sst.out": torch.randn(6, 5, generator=gen), "sst.labels": torch.randint(0, 5, (6,), generator=gen),
         "quora.out": torch.randn(6, generator=gen), "quora.labels": torch.randint(0, 2, (6,), generator=gen),
         "sts.out": 5 * torch.rand(6, generator=gen), "sts.labels": 5 * torch.rand(6, generator=gen)}
    # Both signs of the cosine in every draw (else relu and the factor 5 could go unseen): row 0
    # nearly parallel, row 1 nearly opposite, the rest random.
    t["v"][0] = t["u"][0] + 0.1 * t["v"][0]
    t["v"][1] = -t["u"][1] + 0.1 * t["v"][1]
    return t, {}


def expect_8(t, spec) -> Expected:
    u, v = t["u"], t["v"]
    cos = lambda a, b: (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))  # noqa: E731
    e = Expected()
    e.put("pair_features.y", torch.cat([u, v, (u - v).abs(), u * v], -1), {
        "step08.no_abs": ("[u, v, u - v, u * v]: the difference needs its absolute value",
                          torch.cat([u, v, u - v, u * v], -1)),
        "step08.stacked": ("the blocks stacked along dim 0 instead of concatenated along the features",
                           torch.cat([u, v, (u - v).abs(), u * v], 0))})
    e.put("cosine.y", 5 * cos(u, v).clamp(min=0), {
        "step08.cosine_no_factor": ("the cosine without the factor 5", cos(u, v).clamp(min=0)),
        "step08.cosine_no_relu": ("5 * cos without the relu (negative scores)", 5 * cos(u, v))})
    e.put("cosine_extremes.y", torch.tensor([5.0, 0.0, 0.0]))  # parallel, orthogonal, opposite
    e.put("loss_sst.y", F.cross_entropy(t["sst.out"], t["sst.labels"]))
    e.put("loss_quora.y", F.binary_cross_entropy_with_logits(t["quora.out"], t["quora.labels"].float()))
    e.put("loss_sts.y", F.mse_loss(t["sts.out"], t["sts.labels"]))
    return e


# ---------------------------------------------------------------------------- step 9: PCGrad

def project_in_order(grads: list[Tensor], i: int, order: list[int]) -> Tensor:
    g, current = grads[i].double().clone(), [x.double() for x in grads]
    for k in order:
        h = current[k]
        if g @ h < 0:
            g = g - (g @ h) / (h @ h) * h
    return g


def outcomes(grads: list[Tensor], i: int) -> list[Tensor]:
    """Task i's projected gradient for every order of visiting the other tasks."""
    others = [k for k in range(len(grads)) if k != i]
    return [project_in_order(grads, i, list(p)) for p in itertools.permutations(others)]


def inputs_9(gen):
    def randn(*s):
        return torch.randn(*s, generator=gen)
    no_conflict = randn(3, 4).abs()
    while True:
        pair = randn(2, 3)
        if pair[0] @ pair[1] < -0.1:
            break
    g1, g2 = pair
    total = torch.stack([g1, g2, torch.linalg.cross(g1, g2)])  # g3 orthogonal to both
    while True:  # every task conflicts with both others, and the visiting order changes its result
        order = randn(3, 4)
        if all(len({tuple(o.round(decimals=4).tolist()) for o in outcomes(list(order), i)}) == 2 for i in range(3)):
            break
    return {"no_conflict": no_conflict, "pair": pair, "sum": total, "order": order}, {"draws": 16}


def expect_9(t, spec) -> Expected:
    off = lambda g, h: g - (g @ h) / (h @ h) * h  # noqa: E731
    g1, g2 = t["pair"]
    a, b, c = t["sum"]
    grads = list(t["order"])
    e = Expected()
    e.put("no_conflict.y", t["no_conflict"])
    e.put("pair.y", torch.stack([off(g1, g2), off(g2, g1)]))
    e.put("sum.y", off(a, b) + off(b, a) + c)
    e.put("inputs_unchanged.y", t["order"])
    # every visiting order's outcome, per task: (3 tasks, 2 orders, D), in float64
    e.put("order.outcomes", torch.stack([torch.stack(outcomes(grads, i)) for i in range(3)]))
    return e


# ---------------------------------------------------------------------------- step 10: distillation

def inputs_10(gen):
    t = {"sst.gold": torch.randint(0, 5, (3,), generator=gen),
         "sst.teacher": torch.rand(3, 5, generator=gen).softmax(-1),
         "quora.gold": torch.randint(0, 2, (4,), generator=gen), "quora.teacher": torch.rand(4, generator=gen),
         "sts.gold": 5 * torch.rand(4, generator=gen), "sts.teacher": 5 * torch.rand(4, generator=gen),
         "sst.out": torch.randn(4, 5, generator=gen), "sst.target": torch.rand(4, 5, generator=gen).softmax(-1),
         "quora.out": torch.randn(4, generator=gen), "quora.target": torch.rand(4, generator=gen),
         "sts.out": 5 * torch.rand(4, generator=gen), "sts.target": 5 * torch.rand(4, generator=gen)}
    total = int(torch.randint(5, 50, (), generator=gen))
    cases = [[0, total], [total, total], [0, 1], [1, 1], [total + 5, total], [-3, total]] + [[s, 8] for s in range(9)]
    lam = float(torch.rand((), generator=gen))
    return t, {"lambda_cases": cases, "lambdas": [0.0, round(lam, 6), 1.0]}


def expect_10(t, spec) -> Expected:
    e = Expected()
    e.put("lambda.y", torch.tensor([min(max(s / n, 0.0), 1.0) for s, n in spec["lambda_cases"]], dtype=torch.float64))
    for task in ("sst", "quora", "sts"):
        gold, teacher = t[f"{task}.gold"], t[f"{task}.teacher"]
        g = F.one_hot(gold, 5).float() if task == "sst" else gold.float()
        for k, lam in enumerate(spec["lambdas"]):
            e.put(f"targets_{task}.lam{k}", lam * g + (1 - lam) * teacher, {
                "step10.targets_swapped": ("the weights swapped, lam * teacher + (1 - lam) * gold",
                                           lam * teacher + (1 - lam) * g)})
    o, y = t["sst.out"], t["sst.target"]
    e.put("loss_sst.y", -(y * o.log_softmax(-1)).sum(-1).mean(), {
        "step10.mean_over_classes": ("the mean over the 5 classes instead of the sum", -(y * o.log_softmax(-1)).mean()),
        "step10.hard_labels": ("cross-entropy with the target's argmax (hard labels)", F.cross_entropy(o, y.argmax(-1))),
        "step10.sum_over_batch": ("the sum over the batch instead of the mean", -(y * o.log_softmax(-1)).sum())})
    o, y = t["quora.out"], t["quora.target"]
    e.put("loss_quora.y", F.binary_cross_entropy_with_logits(o, y), {
        "step10.rounded_target": ("the target rounded to 0/1", F.binary_cross_entropy_with_logits(o, y.round())),
        "step10.squared_error": ("the squared error between sigmoid(logit) and the target",
                                 (torch.sigmoid(o) - y).pow(2).mean())})
    o, y = t["sts.out"], t["sts.target"]
    e.put("loss_sts.y", (o - y).pow(2).mean(), {
        "step10.sum_squared": ("the sum of squared errors instead of the mean", (o - y).pow(2).sum()),
        "step10.absolute_error": ("the mean absolute error", (o - y).abs().mean())})
    return e


# ---------------------------------------------------------------------------- step 11: GAN-BERT

K = 3  # real classes; logits have K + 1 columns


def inputs_11(gen):
    labelled = torch.zeros(6, dtype=torch.long)
    labelled[torch.randperm(6, generator=gen)[:3]] = 1
    return ({"real": torch.randn(6, K + 1, generator=gen), "fake": torch.randn(7, K + 1, generator=gen),
             "labels": torch.randint(0, K, (6,), generator=gen), "labelled": labelled,
             "cond": torch.randint(0, K, (7,), generator=gen), "real_f": torch.randn(6, 5, generator=gen),
             "fake_f": torch.randn(7, 5, generator=gen)}, {})


def expect_11(t, spec) -> Expected:
    real, fake, labels, lab, cond = t["real"], t["fake"], t["labels"], t["labelled"].bool(), t["cond"]
    p_fake = lambda x: x.softmax(-1)[:, -1]  # noqa: E731
    ce = lambda x, y: F.cross_entropy(x[:, :K], y)  # noqa: E731
    e = Expected()
    sup = ce(real[lab], labels[lab])
    e.put("supervised.y", sup, {
        "step11.all_rows": ("the cross-entropy over ALL rows: keep only the rows where labelled is True", ce(real, labels)),
        "step11.fake_column": ("the cross-entropy over all k + 1 logits: leave out the last (fake) column",
                               F.cross_entropy(real[lab], labels[lab])),
        "step11.sum_labelled": ("the sum over the labelled rows instead of the mean",
                                ce(real[lab], labels[lab]) * int(lab.sum()))})
    e.put("supervised_none.y", torch.tensor(0.0))
    unsup = -torch.log(1 - p_fake(real)).mean() - torch.log(p_fake(fake)).mean()
    e.put("d_unsupervised.y", unsup, {
        "step11.d_no_real_term": ("the fake term alone: the real term -log(1 - p_fake(real)) is missing",
                                  -torch.log(p_fake(fake)).mean()),
        "step11.d_no_fake_term": ("the real term alone: the fake term -log p_fake(fake) is missing",
                                  -torch.log(1 - p_fake(real)).mean()),
        "step11.d_terms_swapped": ("the two terms swapped: D must call real rows real and fakes fake",
                                   -torch.log(p_fake(real)).mean() - torch.log(1 - p_fake(fake)).mean()),
        "step11.d_supervised_all_rows": ("a supervised term over every real row, labelled or not",
                                         unsup + ce(real, labels))})
    e.put("d_supervised.y", sup + unsup, {
        "step11.d_no_supervised": ("no supervised term", unsup),
        "step11.d_supervised_every_row": ("a supervised term over every row", unsup + ce(real, labels))})
    aux = ce(fake, cond)

    def ac(player: str, base: Tensor, subtracted: str) -> dict:
        """With fake_labels the loss is base + CE(fake_logits[:, :k], fake_labels), D's and G's alike."""
        return {f"step11.{player}_no_ac_term": ("the loss without the AC-GAN term", base),
                f"step11.{player}_ac_all_logits": ("the AC-GAN term over all k + 1 logits: use fake_logits[:, :k]",
                                                   base + F.cross_entropy(fake, cond)),
                f"step11.{player}_ac_subtracted": (subtracted, base - aux)}

    e.put("d_ac.y", sup + unsup + aux, ac("d", sup + unsup, "the AC-GAN term subtracted"))
    adv = -torch.log(1 - p_fake(fake)).mean()
    e.put("g_adversarial.y", adv, {
        "step11.g_saturating": ("+mean log p_fake(fake), the saturating minimax form", torch.log(p_fake(fake)).mean()),
        "step11.g_called_real": ("-mean log p_fake(fake): G wants its fakes called REAL", -torch.log(p_fake(fake)).mean()),
        "step11.g_sign": ("mean log(1 - p_fake(fake)): the sign is wrong", -adv)})
    rf, ff = t["real_f"], t["fake_f"]
    fm = (rf.mean(0) - ff.mean(0)).pow(2).mean()
    e.put("g_matching.y", adv + fm, {
        "step11.g_no_matching": ("the adversarial term alone: add the feature-matching term", adv),
        "step11.g_matching_sum": ("the SUM over the feature dimension: GAN-BERT averages it",
                                  adv + (rf.mean(0) - ff.mean(0)).pow(2).sum()),
        "step11.g_matching_abs": ("|difference| instead of the squared difference", adv + (rf.mean(0) - ff.mean(0)).abs().mean())})
    e.put("g_ac.y", adv + fm + aux, ac("g", adv + fm, "the AC-GAN term subtracted: G wants D to find the conditioning class"))
    ff_ref = ff.clone().requires_grad_()
    with torch.enable_grad():
        (rf.mean(0) - ff_ref.mean(0)).pow(2).mean().backward()
    e.put("g_gradients.fake", ff_ref.grad)
    return e


# ---------------------------------------------------------------------------- step 12: the training step

# The stand-in model of course/probes.py's StandInMultitask, written out again: each sentence is its
# first position's features x[:, 0] (B, F); sst logits x W (B, 5), quora's logit (a * b) w (B,), sts's
# score 5 sigmoid((a * b) w) (B,), the sentence vectors of encode_pair x E (B, D).
first = lambda x: x[:, 0]  # noqa: E731 - (B, T, F) -> (B, F)


def stand_in(t, task: str) -> Tensor:
    if task == "sst":
        return first(t["sst.x"]) @ t["W.sst"]
    z = (first(t[f"{task}.a"]) * first(t[f"{task}.b"])) @ t[f"W.{task}"]
    return z if task == "quora" else 5 * torch.sigmoid(z)


def inputs_12(gen):
    x = lambda B: torch.randn(B, 3, 4, generator=gen)  # noqa: E731 - (B, T, F)
    quora_y = torch.randint(0, 2, (8,), generator=gen)
    quora_y[:3] = 1  # at least two duplicates: the MNRL term is not 0
    return ({"sst.x": x(6), "sst.y": torch.randint(0, 5, (6,), generator=gen), "W.sst": torch.randn(4, 5, generator=gen),
             "quora.a": x(8), "quora.b": x(8), "quora.y": quora_y[torch.randperm(8, generator=gen)],
             "W.quora": torch.randn(4, generator=gen), "E": torch.randn(4, 3, generator=gen),
             "sts.a": x(6), "sts.b": x(6), "sts.y": 5 * torch.rand(6, generator=gen), "W.sts": torch.randn(4, generator=gen)},
            {"weight": 0.5, "loss_weight": 3.0, "mnrl": 0.5})


def cosent(scores: Tensor, y: Tensor, lam: float = 20.0) -> Tensor:
    """log(1 + sum over y_i > y_j of exp(lam (s_j - s_i))), the sum written as a loop (Su 2022)."""
    terms = [lam * (scores[j] - scores[i]) for i in range(len(y)) for j in range(len(y)) if y[i] > y[j]]
    return torch.log1p(torch.stack(terms).exp().sum())


def mnrl(u: Tensor, v: Tensor, scale: float = 20.0) -> Tensor:
    """Row i of u must be nearest v_i among the rows of v: cross-entropy of scale * cosines (SBERT)."""
    cos = F.cosine_similarity(u[:, None, :], v[None, :, :], dim=-1)  # (n, n)
    return F.cross_entropy(scale * cos, torch.arange(len(u)))


def expect_12(t, spec) -> Expected:
    w, lw, aux = spec["weight"], spec["loss_weight"], spec["mnrl"]
    e = Expected()
    sst = F.cross_entropy(stand_in(t, "sst"), t["sst.y"])
    e.put("sst.y", sst, {"step12.mse": ("the mean squared error of the logits: use the task's own loss (task_loss)",
                                        F.mse_loss(stand_in(t, "sst"), F.one_hot(t["sst.y"], 5).float()))})
    bce = F.binary_cross_entropy_with_logits(stand_in(t, "quora"), t["quora.y"].float())
    e.put("weighted.y", bce * lw * w, {
        "step12.no_stream_weight": ("the loss x the task's --loss-weights only: multiply by the batch's `weight` "
                                    "(the stream's) too", bce * lw),
        "step12.no_loss_weight": ("the loss x the stream's weight only: multiply by args.loss_weights.get(task, 1.0) "
                                  "too", bce * w),
        "step12.unweighted": ("the unweighted loss: multiply by args.loss_weights.get(task, 1.0) and by weight", bce)})
    score = stand_in(t, "sts")
    e.put("sts_cosent.y", cosent(score / 5, t["sts.y"]), {
        "step12.loss_option": ("the table's default loss (MSE) under --sts-loss cosent: take the loss from "
                               "tasks.task_loss(task, args), which reads the option", F.mse_loss(score, t["sts.y"]))})
    dup = t["quora.y"] == 1
    m = mnrl(first(t["quora.a"][dup]) @ t["E"], first(t["quora.b"][dup]) @ t["E"])
    e.put("mnrl.y", bce + aux * m, {
        "step12.no_aux": ("the loss without its second term under --quora-mnrl: add tasks.aux_weight(task, args) x "
                          "aux_output(model, task, batch, args)", bce),
        "step12.aux_unweighted": ("the second loss added without its weight tasks.aux_weight(task, args)", bce + m)})
    W = t["W.sst"].clone().requires_grad_()
    with torch.enable_grad():
        F.cross_entropy(first(t["sst.x"]) @ W, t["sst.y"]).backward()
    e.put("gradient.W", W.grad)
    return e


PRODUCERS = {6: (inputs_6, expect_6), 7: (inputs_7, expect_7), 8: (inputs_8, expect_8), 9: (inputs_9, expect_9),
             10: (inputs_10, expect_10), 11: (inputs_11, expect_11), 12: (inputs_12, expect_12)}
