"""minbert.AdamW against the course's stored test vector and against torch.optim.AdamW."""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from minbert import AdamW

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "adamw_reference.npy"


def course_procedure(opt_cls=AdamW) -> torch.Tensor:
    """The original CS224N optimizer_test.py procedure (../shared/reference/README.md)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = torch.nn.Linear(3, 2, bias=False)
    opt = opt_cls(model.parameters(), lr=1e-3, weight_decay=1e-4, correct_bias=True)
    for _ in range(1000):
        opt.zero_grad()
        x = torch.FloatTensor(rng.uniform(size=[model.in_features]))
        y_hat = model(x)
        y = torch.Tensor([x[0] + x[1], -x[2]])
        loss = ((y - y_hat) ** 2).sum()
        loss.backward()
        opt.step()
    return model.weight.detach()


@pytest.mark.skipif(not REFERENCE.is_file(), reason=f"{REFERENCE} not found")
def test_adamw_matches_course_reference_vector():
    ref = torch.from_numpy(np.load(REFERENCE))
    w = course_procedure()
    assert torch.allclose(ref, w, atol=1e-6, rtol=1e-4), f"expected\n{ref}\ngot\n{w}"


def run(opt, params, steps=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        opt.zero_grad()
        loss = sum(((p - torch.randn(p.shape, generator=g)) ** 2).sum() for p in params)
        loss.backward()
        opt.step()


def test_adamw_without_decay_equals_torch_adam():
    # With weight_decay=0 the decay order does not matter, and bias-corrected Adam is the same update
    # up to where eps enters: ours adds eps to sqrt(v) before correcting (as the course does), torch
    # after. With eps tiny relative to sqrt(v) the two agree to float rounding.
    torch.manual_seed(0)
    a = [torch.randn(4, 3, requires_grad=True), torch.randn(5, requires_grad=True)]
    b = [p.detach().clone().requires_grad_() for p in a]
    run(AdamW(a, lr=1e-2, eps=1e-12), a)
    run(torch.optim.AdamW(b, lr=1e-2, eps=1e-12, weight_decay=0.0), b)
    for pa, pb in zip(a, b):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-5)


def test_adamw_decay_tracks_torch_adamw_closely():
    # torch decays before the Adam update (p *= 1 - lr*wd), the course after; with small lr*wd the
    # trajectories stay within a few lr*wd-sized steps.
    torch.manual_seed(0)
    a = [torch.randn(6, 2, requires_grad=True)]
    b = [a[0].detach().clone().requires_grad_()]
    run(AdamW(a, lr=1e-3, weight_decay=0.01, eps=1e-8), a, steps=100)
    run(torch.optim.AdamW(b, lr=1e-3, weight_decay=0.01, eps=1e-8), b, steps=100)
    torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=1e-4)


def test_param_groups_use_their_own_lr_and_weight_decay():
    torch.manual_seed(0)
    p1 = torch.randn(3, requires_grad=True)
    p2 = p1.detach().clone().requires_grad_()
    p3 = p1.detach().clone().requires_grad_()
    opt = AdamW([{"params": [p1], "lr": 0.0}, {"params": [p2]}, {"params": [p3], "weight_decay": 0.5}], lr=1e-2)
    start = p1.detach().clone()
    (p1.sum() + p2.sum() + p3.sum()).backward()
    opt.step()
    assert torch.equal(p1, start), "a group with lr=0 must not move"
    assert not torch.equal(p2, start)
    # Same gradient, same Adam step: p3 differs from p2 exactly by the decoupled decay term.
    torch.testing.assert_close(p3, p2 - 1e-2 * 0.5 * p2)


def test_adamw_without_bias_correction_takes_smaller_first_steps():
    p = torch.zeros(1, requires_grad=True)
    q = torch.zeros(1, requires_grad=True)
    p.grad, q.grad = torch.ones(1), torch.ones(1)
    AdamW([p], lr=1.0, correct_bias=True).step()
    AdamW([q], lr=1.0, correct_bias=False).step()
    # After one step m = 0.1, v = 0.001. Corrected: step size lr * sqrt(1 - b2) / (1 - b1), and eps
    # is added to the *uncorrected* sqrt(v) (the course's order).
    corrected = -(0.001 ** 0.5 / 0.1) * 0.1 / (0.001 ** 0.5 + 1e-6)
    torch.testing.assert_close(p, torch.tensor([corrected]), atol=1e-6, rtol=0)
    torch.testing.assert_close(q, torch.tensor([-0.1 / (0.001 ** 0.5 + 1e-6)]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kwargs", [dict(lr=-1.0), dict(betas=(1.0, 0.9)), dict(eps=-1e-8), dict(weight_decay=-0.1)])
def test_adamw_rejects_invalid_hyperparameters(kwargs):
    with pytest.raises(ValueError):
        AdamW([torch.zeros(1, requires_grad=True)], **kwargs)


def test_adamw_state_dict_round_trip_resumes_identically():
    torch.manual_seed(0)
    a = [torch.randn(3, requires_grad=True)]
    opt = AdamW(a, lr=1e-2)
    run(opt, a, steps=5)
    b = [a[0].detach().clone().requires_grad_()]
    opt_b = AdamW(b, lr=1e-2)
    opt_b.load_state_dict(copy.deepcopy(opt.state_dict()))  # as if read back from disk
    run(opt, a, steps=5, seed=1)
    run(opt_b, b, steps=5, seed=1)
    assert torch.equal(a[0], b[0])
