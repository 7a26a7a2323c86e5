"""Checker side of steps 6-11 (the optimizer, the heads and the training losses): fresh random
inputs from the run's secret seed, verdicts against references written out here with PyTorch's own
functions. Nothing here imports student code."""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from . import reference as R
from .compare import Judge, likely_mistake, matches

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


def judge_6(t, spec, j: Judge):
    for c, case in enumerate(spec["cases"]):
        name, groups = case["name"], case["groups"]
        params = [t[f"c{c}.p{i}"] for i in range(len(groups))]
        grads = [[t[f"c{c}.g{s}.{i}"] for i in range(len(groups))] for s in range(case["steps"])]
        expected = R.adamw(params, grads, groups)
        uncorrected = [{**o, "correct_bias": not o["correct_bias"]} for o in groups]
        for i, e in enumerate(expected):
            got = j.got(name, f"p{i}")
            hint = lambda: likely_mistake(got, {
                "torch.optim.AdamW, which decays before the Adam update and adds eps after the bias correction":
                    lambda: torch_adamw(params, grads, groups)[i],
                "Adam with the decay added to the gradient (L2), not decoupled": lambda: l2_adam(params, grads, groups)[i],
                "the update with the bias correction the wrong way round (correct_bias ignored or inverted)":
                    lambda: R.adamw(params, grads, uncorrected)[i],
            }, "m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2; step = lr * sqrt(1 - b2^t) / (1 - b1^t) (lr when "
               "correct_bias is off); p -= step * m / (sqrt(v) + eps); then p -= lr * weight_decay * p. Read lr, "
               "betas, eps, weight_decay and correct_bias from the parameter's group.", atol=1e-6, rtol=1e-5)
            if not j.close(name, f"parameter {i} after {case['steps']} AdamW step(s)", got, e, hint, atol=1e-5, rtol=1e-4):
                break


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


def judge_7(t, spec, j: Judge):
    h, mask = t["h"], t["mask"]
    got = j.got("mean")
    j.close("mean", "mean_pool(h, mask)", got, masked_mean(h, mask), lambda: likely_mistake(got, {
        "the mean over all T positions, padding included": lambda: h.mean(1)},
        "Average over the tokens whose mask is 1 only: sum them and divide by their count, per row."))
    j.close("poisoned", "mean_pool with nan/inf at padded positions", j.got("poisoned"), masked_mean(h, mask),
            "h * mask keeps nan (nan * 0 = nan): zero the padded positions with masked_fill or torch.where.")
    j.close("empty_row", "mean_pool with an all-padding row 2", j.got("empty_row"), masked_mean(h, t["mask_empty"]),
            "An empty row must pool to zeros, not 0/0 = nan: clamp the token count to at least 1.")
    pooled = {"cls": h[:, 0], "mean": masked_mean(h, mask), "pooler": t["pooler_output"]}
    for pooling, x in pooled.items():
        others = {f"the {o} vector instead": (lambda v=v: F.linear(v, t["W"], t["b"])) for o, v in pooled.items() if o != pooling}
        got = j.got(f"head_{pooling}")
        j.close(f"head_{pooling}", f"SentimentHead(pooling={pooling!r}) logits", got, F.linear(x, t["W"], t["b"]),
                lambda: likely_mistake(got, others, f"pooling={pooling!r}: self.classifier applied to the "
                                            f"{ {'cls': 'first token', 'mean': 'masked mean', 'pooler': 'pooler_output'}[pooling]} vector."))


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


def judge_8(t, spec, j: Judge):
    u, v = t["u"], t["v"]
    got = j.got("pair_features")
    j.close("pair_features", "pair_features(u, v)", got, torch.cat([u, v, (u - v).abs(), u * v], -1), lambda: likely_mistake(got, {
        "[u, v, u - v, u * v]: the difference needs its absolute value": lambda: torch.cat([u, v, u - v, u * v], -1),
        "the blocks stacked along dim 0 instead of concatenated along the features": lambda: torch.cat([u, v, (u - v).abs(), u * v], 0),
    }, "The layout is [u, v, |u - v|, u * v] along the last dim, shape (B, 4C)."))
    cos = lambda a, b: (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))  # noqa: E731
    got = j.got("cosine")
    j.close("cosine", "cosine_score(u, v)", got, 5 * cos(u, v).clamp(min=0), lambda: likely_mistake(got, {
        "the cosine without the factor 5": lambda: cos(u, v).clamp(min=0),
        "5 * cos without the relu (negative scores)": lambda: 5 * cos(u, v)},
        "Expected 5 * relu(cos(u, v)) per row, shape (B,)."))
    j.close("cosine_extremes", "cosine_score of (parallel, orthogonal, opposite) pairs", j.got("cosine_extremes"),
            torch.tensor([5.0, 0.0, 0.0]), "Parallel vectors score 5; orthogonal and opposite ones 0.")
    refs = {"sst": (lambda o, y: F.cross_entropy(o, y), "cross-entropy on the 5 logits"),
            "quora": (lambda o, y: F.binary_cross_entropy_with_logits(o, y.float()),
                      "binary cross-entropy on the logit (labels 0/1 as floats)"),
            "sts": (lambda o, y: F.mse_loss(o, y), "mean squared error between score and label")}
    for task, (ref, what) in refs.items():
        j.close(f"loss_{task}", f"loss_from_output({task!r}, ...)", j.got(f"loss_{task}"),
                ref(t[f"{task}.out"], t[f"{task}.labels"]), f"The {task} loss is the {what}, averaged over the batch.")


# ---------------------------------------------------------------------------- step 9: PCGrad

def project_in_order(grads: list[Tensor], i: int, order: list[int], originals: bool = True) -> Tensor:
    g, current = grads[i].double().clone(), [x.double() for x in grads]
    for k in order:
        h = current[k] if originals else current[k]
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


def judge_9(t, spec, j: Judge):
    hint = ("g_i := g_i - (g_i . g_j) / ||g_j||^2 * g_j when g_i . g_j < 0, always with the ORIGINAL g_j "
            "(not its projected version).")
    for case in ("no_conflict", "pair"):
        j.close(case, "the input gradients after project_conflicting", j.got(case, "inputs"), t[case],
                "project_conflicting changed its inputs: work on a copy (g.clone()); projecting in place also "
                "makes later projections use a projected g_j instead of the original.")
    j.close("no_conflict", "projected gradients when no pair conflicts", j.got("no_conflict"), t["no_conflict"],
            "Only a pair with a negative dot product is projected.")
    g1, g2 = t["pair"]
    off = lambda g, h: g - (g @ h) / (h @ h) * h  # noqa: E731
    j.close("pair", "projected gradients of a conflicting pair", j.got("pair"), torch.stack([off(g1, g2), off(g2, g1)]), hint)
    a, b, c = t["sum"]
    j.close("sum", "pcgrad_project of three gradients", j.got("sum"), off(a, b) + off(b, a) + c,
            "Task 0 and 1 conflict, task 2 is orthogonal to both and must stay as it is; the result is the sum.")
    j.close("inputs_unchanged", "the input gradients after project_conflicting", j.got("inputs_unchanged"), t["order"],
            "Work on a copy (g.clone()): the caller's gradients must not change.")
    runs, again = j.got("order", "y"), j.got("order", "again")
    grads = list(t["order"])
    if runs is None or again is None or not j.check(
            "order", runs.shape == (spec["draws"], 3, grads[0].numel()),
            f"project_conflicting must return one (D,) gradient per task; got {tuple(runs.shape[1:])} per call"):
        return
    seen_orders = set()
    for draw in runs:
        for i in range(3):
            options = outcomes(grads, i)
            hit = [k for k, o in enumerate(options) if matches(draw[i], o, 1e-5)]
            if not hit:
                j.fail("order", f"task {i}'s projected gradient matches no visiting order of the other tasks. {hint}")
                return
            seen_orders.add((i, hit[0]))
    if not j.check("order", len(seen_orders) > 3,
                   f"a fixed visiting order: over {spec['draws']} calls with different generators every task visited "
                   f"the others in the same order. PCGrad shuffles the order for each task: torch.randperm(K, "
                   f"generator=generator)"):
        return
    j.check("order", matches(again, runs[0], 1e-6),
            "the visiting order must come from the `generator` argument: the same seed must give the same result")


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


def judge_10(t, spec, j: Judge):
    expected = torch.tensor([min(max(s / n, 0.0), 1.0) for s, n in spec["lambda_cases"]], dtype=torch.float64)
    got = j.got("lambda")
    if got is not None and got.shape == expected.shape and not matches(got, expected, 1e-9):
        bad = int((got.double() - expected).abs().argmax())
        s, n = spec["lambda_cases"][bad]
        j.fail("lambda", f"annealed_lambda({s}, {n}) is {got[bad].item():.6g} but expected {expected[bad].item():.6g}: "
                         "lambda = step / total_steps clamped to [0, 1] (0 at step 0, pure teacher; 1 from total_steps on)")
    for task in ("sst", "quora", "sts"):
        gold, teacher = t[f"{task}.gold"], t[f"{task}.teacher"]
        g = F.one_hot(gold, 5).float() if task == "sst" else gold.float()
        for k, lam in enumerate(spec["lambdas"]):
            got = j.got(f"targets_{task}", f"lam{k}")
            hint = lambda: likely_mistake(got, {"the weights swapped, lam * teacher + (1 - lam) * gold":
                                        lambda: lam * teacher + (1 - lam) * g},
                                  f"A {task} target is lam * gold + (1 - lam) * teacher"
                                  + (" with gold one-hot (B, 5)" if task == "sst" else " (gold as float)") + ".")
            if not j.close(f"targets_{task}", f"mixed_targets({task!r}, gold, teacher, lam={lam})", got,
                           lam * g + (1 - lam) * teacher, hint):
                break
    o, y = t["sst.out"], t["sst.target"]
    got = j.got("loss_sst")
    j.close("loss_sst", "distill_loss('sst', logits, target)", got, -(y * o.log_softmax(-1)).sum(-1).mean(), lambda: likely_mistake(got, {
        "the mean over the 5 classes instead of the sum": lambda: -(y * o.log_softmax(-1)).mean(),
        "cross-entropy with the target's argmax (hard labels)": lambda: F.cross_entropy(o, y.argmax(-1)),
        "the sum over the batch instead of the mean": lambda: -(y * o.log_softmax(-1)).sum(),
    }, "Soft cross-entropy: -sum_c target_c * log_softmax(logits)_c per row, then the mean over the rows."))
    o, y = t["quora.out"], t["quora.target"]
    got = j.got("loss_quora")
    j.close("loss_quora", "distill_loss('quora', logits, target)", got, F.binary_cross_entropy_with_logits(o, y),
            lambda: likely_mistake(got, {"the target rounded to 0/1": lambda: F.binary_cross_entropy_with_logits(o, y.round()),
                                 "the squared error between sigmoid(logit) and the target":
                                     lambda: (torch.sigmoid(o) - y).pow(2).mean()},
                           "Binary cross-entropy with logits against the soft probability target."))
    o, y = t["sts.out"], t["sts.target"]
    got = j.got("loss_sts")
    j.close("loss_sts", "distill_loss('sts', scores, target)", got, (o - y).pow(2).mean(), lambda: likely_mistake(got, {
        "the sum of squared errors instead of the mean": lambda: (o - y).pow(2).sum(),
        "the mean absolute error": lambda: (o - y).abs().mean()},
        "Mean squared error between the predicted scores and the mixed target scores; a scalar."))


# ---------------------------------------------------------------------------- step 11: GAN-BERT

K = 3  # real classes; logits have K + 1 columns


def inputs_11(gen):
    labelled = torch.zeros(6, dtype=torch.long)
    labelled[torch.randperm(6, generator=gen)[:3]] = 1
    return ({"real": torch.randn(6, K + 1, generator=gen), "fake": torch.randn(7, K + 1, generator=gen),
             "labels": torch.randint(0, K, (6,), generator=gen), "labelled": labelled,
             "cond": torch.randint(0, K, (7,), generator=gen), "real_f": torch.randn(6, 5, generator=gen),
             "fake_f": torch.randn(7, 5, generator=gen)}, {})


def judge_11(t, spec, j: Judge):
    real, fake, labels, lab, cond = t["real"], t["fake"], t["labels"], t["labelled"].bool(), t["cond"]
    p_fake = lambda x: x.softmax(-1)[:, -1]  # noqa: E731
    ce = lambda x, y: F.cross_entropy(x[:, :K], y)  # noqa: E731
    sup = ce(real[lab], labels[lab])
    got = j.got("supervised")
    j.close("supervised", "supervised_loss(logits, labels, labelled)", got, sup, lambda: likely_mistake(got, {
        "the cross-entropy over ALL rows: keep only the rows where labelled is True": lambda: ce(real, labels),
        "the cross-entropy over all k + 1 logits: leave out the last (fake) column":
            lambda: F.cross_entropy(real[lab], labels[lab]),
        "the sum over the labelled rows instead of the mean": lambda: ce(real[lab], labels[lab]) * int(lab.sum()),
    }, "Expected the mean cross-entropy of logits[labelled, :k] against labels[labelled]."))
    j.close("supervised_none", "supervised_loss with no labelled row", j.got("supervised_none"), torch.tensor(0.0),
            "A batch without labelled rows has no supervised term: return a zero tensor (not 0/0 = nan).")
    unsup = -torch.log(1 - p_fake(real)).mean() - torch.log(p_fake(fake)).mean()
    got = j.got("d_unsupervised")
    j.close("d_unsupervised", "discriminator_loss with no labelled rows", got, unsup, lambda: likely_mistake(got, {
        "the fake term alone: the real term -log(1 - p_fake(real)) is missing": lambda: -torch.log(p_fake(fake)).mean(),
        "the real term alone: the fake term -log p_fake(fake) is missing": lambda: -torch.log(1 - p_fake(real)).mean(),
        "the two terms swapped: D must call real rows real and fakes fake":
            lambda: -torch.log(p_fake(real)).mean() - torch.log(1 - p_fake(fake)).mean(),
        "a supervised term over every real row, labelled or not": lambda: unsup + ce(real, labels),
    }, "D's loss is -mean log(1 - p_fake(real)) - mean log p_fake(fake), p_fake = softmax(logits)[:, -1]."))
    got = j.got("d_supervised")
    j.close("d_supervised", "discriminator_loss with labelled rows", got, sup + unsup, lambda: likely_mistake(got, {
        "no supervised term": lambda: unsup, "a supervised term over every row": lambda: unsup + ce(real, labels)},
        "D's loss = supervised_loss(real_logits, labels, labelled) + the two unsupervised terms."))
    aux = ce(fake, cond)

    def close_ac(name: str, what: str, base: Tensor, subtracted: str) -> None:
        """The loss with fake_labels must be base + CE(fake_logits[:, :k], fake_labels) (D's and G's alike)."""
        got = j.got(name)
        j.close(name, what, got, base + aux, lambda: likely_mistake(got, {
            "the loss without the AC-GAN term": lambda: base,
            "the AC-GAN term over all k + 1 logits: use fake_logits[:, :k]": lambda: base + F.cross_entropy(fake, cond),
            subtracted: lambda: base - aux},
            "With fake_labels, add CE(fake_logits[:, :k], fake_labels)."))

    close_ac("d_ac", "discriminator_loss with fake_labels (AC-GAN)", sup + unsup, "the AC-GAN term subtracted")
    adv = -torch.log(1 - p_fake(fake)).mean()
    got = j.got("g_adversarial")
    j.close("g_adversarial", "generator_loss with real features == fake features", got, adv, lambda: likely_mistake(got, {
        "+mean log p_fake(fake), the saturating minimax form": lambda: torch.log(p_fake(fake)).mean(),
        "-mean log p_fake(fake): G wants its fakes called REAL": lambda: -torch.log(p_fake(fake)).mean(),
        "mean log(1 - p_fake(fake)): the sign is wrong": lambda: -adv},
        "With identical features G's loss is its adversarial term -mean log(1 - p_fake(fake))."))
    rf, ff = t["real_f"], t["fake_f"]
    fm = (rf.mean(0) - ff.mean(0)).pow(2).mean()
    got = j.got("g_matching")
    j.close("g_matching", "generator_loss (6 real rows, 7 fakes, 5 features)", got, adv + fm, lambda: likely_mistake(got, {
        "the adversarial term alone: add the feature-matching term": lambda: adv,
        "the SUM over the feature dimension: GAN-BERT averages it": lambda: adv + (rf.mean(0) - ff.mean(0)).pow(2).sum(),
        "|difference| instead of the squared difference": lambda: adv + (rf.mean(0) - ff.mean(0)).abs().mean()},
        "Feature matching: mean over the features of (mean real features - mean fake features)^2."))
    close_ac("g_ac", "generator_loss with fake_labels (AC-GAN)", adv + fm,
             "the AC-GAN term subtracted: G wants D to find the conditioning class")
    real_grad, fake_grad = j.got("g_gradients", "real"), j.got("g_gradients", "fake")
    if real_grad is None or fake_grad is None:
        return
    if j.check("g_gradients", real_grad.shape == rf.shape and float(real_grad.abs().max()) == 0.0,
               "real_features got a gradient: the real side is a fixed target for G; use real_features.detach()"):
        ff_ref = ff.clone().requires_grad_()
        (rf.mean(0) - ff_ref.mean(0)).pow(2).mean().backward()
        j.close("g_gradients", "the gradient of generator_loss with respect to fake_features", fake_grad, ff_ref.grad,
                "The fake features must get the feature-matching gradient.")


STEPS = {6: (inputs_6, judge_6, [c["name"] for c in adamw_cases(torch.Generator().manual_seed(0))]),
         7: (inputs_7, judge_7, ["mean", "poisoned", "empty_row", "head_cls", "head_mean", "head_pooler"]),
         8: (inputs_8, judge_8, ["pair_features", "cosine", "cosine_extremes", "loss_sst", "loss_quora", "loss_sts"]),
         9: (inputs_9, judge_9, ["no_conflict", "pair", "sum", "inputs_unchanged", "order"]),
         10: (inputs_10, judge_10, ["lambda", "targets_sst", "targets_quora", "targets_sts", "loss_sst", "loss_quora",
                                    "loss_sts"]),
         11: (inputs_11, judge_11, ["supervised", "supervised_none", "d_unsupervised", "d_supervised", "d_ac",
                                    "g_adversarial", "g_matching", "g_ac", "g_gradients"])}
