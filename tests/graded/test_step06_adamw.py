"""Step 6: AdamW (AdamW.update in minbert/optimizer.py).

References: torch.optim.Adam where the two must agree, the documented formulas for the first step,
and the course's stored test vector (1000 steps of the original CS224N optimizer test).
"""
import os
from pathlib import Path

import numpy as np
import torch

from checks import ROOT, assert_close, likely_mistake
from minbert import AdamW

VECTOR_PLACES = [Path(p) for p in [os.environ.get("COURSE_ADAMW_REFERENCE", ""),
                                   ROOT / "tests" / "graded" / "fixtures" / "adamw_reference.npy",
                                   ROOT.parent / "shared" / "reference" / "adamw_reference.npy"] if str(p)]


def course_procedure(make_optimizer) -> torch.Tensor:
    """The original CS224N optimizer test: fit y = [x0 + x1, -x2] with a bias-free Linear(3, 2)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = torch.nn.Linear(3, 2, bias=False)
    opt = make_optimizer(model.parameters())
    for _ in range(1000):
        opt.zero_grad()
        x = torch.FloatTensor(rng.uniform(size=[model.in_features]))
        y = torch.Tensor([x[0] + x[1], -x[2]])
        ((y - model(x)) ** 2).sum().backward()
        opt.step()
    return model.weight.detach()


def fit(opt, params, steps=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        opt.zero_grad()
        sum(((p - torch.randn(p.shape, generator=g)) ** 2).sum() for p in params).backward()
        opt.step()


def test_without_weight_decay_adamw_is_adam():
    # eps tiny: torch adds eps after the bias correction, the course before; then the two agree.
    torch.manual_seed(0)
    ours = [torch.randn(4, 3, requires_grad=True), torch.randn(5, requires_grad=True)]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    fit(AdamW(ours, lr=1e-2, eps=1e-12), ours)
    fit(torch.optim.Adam(theirs, lr=1e-2, eps=1e-12), theirs)
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert_close(f"parameter {k} after 50 AdamW steps (weight_decay=0)", a, b,
                     "Without weight decay AdamW must equal Adam (torch.optim.Adam): check the moment "
                     "updates m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2 and the bias correction.", atol=1e-6)


def test_first_step_follows_the_course_formula():
    # After one step with gradient 1: m = 0.1, v = 0.001; the bias correction is folded into the step
    # size lr * sqrt(1 - b2) / (1 - b1), and eps is added to the uncorrected sqrt(v).
    for correct_bias, step_size in ((True, (1 - 0.999) ** 0.5 / (1 - 0.9)), (False, 1.0)):
        p = torch.zeros(1, requires_grad=True)
        p.grad = torch.ones(1)
        AdamW([p], lr=1.0, correct_bias=correct_bias).step()
        expected = torch.tensor([-step_size * 0.1 / (0.001 ** 0.5 + 1e-6)])
        assert_close(f"the weight after one step (correct_bias={correct_bias}, lr=1, gradient 1)", p, expected,
                     "correct_bias=True scales the step by sqrt(1 - b2^t) / (1 - b1^t); correct_bias=False "
                     "must skip that correction.", atol=1e-6)


def test_weight_decay_is_decoupled_and_applied_after_the_adam_step():
    torch.manual_seed(0)
    plain = torch.randn(3, requires_grad=True)
    decayed = plain.detach().clone().requires_grad_()
    opt = AdamW([{"params": [plain]}, {"params": [decayed], "weight_decay": 0.5}], lr=1e-2)
    (plain.sum() + decayed.sum()).backward()  # the same gradient for both
    opt.step()
    expected = plain - 1e-2 * 0.5 * plain  # same Adam step, then p -= lr * wd * p on the updated p
    assert_close("the weight with weight_decay=0.5 after one step", decayed, expected,
                 "Decoupled decay: after the Adam update, p -= lr * weight_decay * p; do not add the decay "
                 "to the gradient, and read lr and weight_decay from the parameter's group.", atol=1e-7)


def test_matches_the_course_reference_vector():
    found = [p for p in VECTOR_PLACES if p.is_file()]
    assert found, ("the course vector adamw_reference.npy was not found; looked in "
                   + ", ".join(map(str, VECTOR_PLACES)) + " (instructors: see docs/TEACHING.md)")
    ref = torch.from_numpy(np.load(found[0]))
    got = course_procedure(lambda ps: AdamW(ps, lr=1e-3, weight_decay=1e-4, correct_bias=True))
    hint = likely_mistake(got, {
        "torch.optim.AdamW, which decays before the Adam update and adds eps after the bias correction":
            lambda: course_procedure(lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=1e-4, eps=1e-6)),
    }, "The course applies the decay after the Adam update and adds eps to the uncorrected sqrt(v).",
        atol=1e-7, rtol=1e-6)
    assert_close("the weight after the 1000-step course procedure", got, ref, hint, atol=1e-6, rtol=1e-4)
