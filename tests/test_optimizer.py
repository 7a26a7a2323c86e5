"""minbert.AdamW against the course's stored test vector and against torch.optim.AdamW."""
import copy
import json
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


# ---- the fast path: AdamW(fused=True) against the graded per-parameter update ----

def make_params(seed: int, dtype=torch.float32) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (3, 4, 2), (11,), (6, 6), (4,), (9, 3)]
    return [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).requires_grad_() for s in shapes]


def groups_of(params: list[torch.Tensor]) -> list[dict]:
    # Several groups as the trainers build them (training/engine/optim.py): different lr, decay on/off, and
    # one without bias correction.
    return [{"params": params[0:2], "lr": 3e-3, "weight_decay": 0.01},
            {"params": params[2:4], "lr": 1e-3, "weight_decay": 0.0},
            {"params": params[4:6], "lr": 2e-2, "weight_decay": 0.3},
            {"params": params[6:], "lr": 5e-3, "weight_decay": 0.1, "correct_bias": False}]


def set_grads(params, step: int, seed: int = 0, dtype=None) -> None:
    """Seeded gradients; about a third of them None on any step (a parameter that took no part in the
    loss), so parameters reach different step counts."""
    g = torch.Generator().manual_seed(seed * 100_003 + step)
    for p in params:
        skip = torch.rand((), generator=g).item() < 0.35
        grad = torch.randn(p.shape, generator=g, dtype=torch.float64) * (0.1 + step % 7)
        p.grad = None if skip else grad.to(dtype or p.dtype)


def assert_same_state(opt_a, pa, opt_b, pb, atol=1e-6, rtol=1e-5, where=""):
    for k, (a, b) in enumerate(zip(pa, pb)):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol, msg=lambda m: f"{where} parameter {k}: {m}")
        sa, sb = opt_a.state[a], opt_b.state[b]
        assert sa.keys() == sb.keys(), f"{where} parameter {k}: state keys {sa.keys()} vs {sb.keys()}"
        if sa:
            assert sa["step"] == sb["step"] and type(sa["step"]) is type(sb["step"]) is int
            for key in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(sa[key], sb[key], atol=atol, rtol=rtol,
                                           msg=lambda m: f"{where} parameter {k} {key}: {m}")


def test_fused_path_equals_graded_update_step_by_step():
    graded, fused = make_params(0), make_params(0)
    opt_g = AdamW(groups_of(graded), eps=1e-6)
    opt_f = AdamW(groups_of(fused), eps=1e-6, fused=True)
    for step in range(300):
        set_grads(graded, step)
        set_grads(fused, step)
        opt_g.step()
        opt_f.step()
        # Float rounding differs (the kernel rounds once where the graded ops round eight times), so the
        # parameters drift apart by a few float32 ulps per step, never more.
        assert_same_state(opt_g, graded, opt_f, fused, atol=2e-6, rtol=1e-5, where=f"step {step}:")
    steps = {opt_g.state[p]["step"] for p in graded}
    assert len(steps) > 1, "the test meant parameters to reach different step counts"


def test_fused_path_is_the_graded_math_not_torchs():
    # A float64 run has no rounding to hide behind: torch.optim.AdamW's own math (decay before the
    # update, eps after the bias correction) differs from the graded update by far more than this.
    graded, fused, theirs = make_params(1, torch.float64), make_params(1, torch.float64), make_params(1, torch.float64)
    opt_g = AdamW(groups_of(graded), eps=1e-3)
    opt_f = AdamW(groups_of(fused), eps=1e-3, fused=True)
    opt_t = torch.optim.AdamW([{k: v for k, v in g.items() if k != "correct_bias"} for g in groups_of(theirs)],
                              eps=1e-3)
    for step in range(100):
        for ps in (graded, fused, theirs):
            set_grads(ps, step, seed=1)
        opt_g.step(), opt_f.step(), opt_t.step()
    assert_same_state(opt_g, graded, opt_f, fused, atol=1e-12, rtol=1e-12)
    gap = max((a - b).abs().max().item() for a, b in zip(graded, theirs))
    assert gap > 1e-6, f"torch.optim.AdamW should differ from the course math here, gap {gap}"


@pytest.mark.parametrize("fused", [False, True])
def test_without_decay_both_paths_equal_torch_adamw(fused):
    # Where the math coincides (no weight decay, eps tiny against sqrt(v)), an independent reference.
    ours, theirs = make_params(2), make_params(2)
    opt = AdamW(ours, lr=1e-2, eps=1e-12, fused=fused)
    ref = torch.optim.AdamW(theirs, lr=1e-2, eps=1e-12, weight_decay=0.0)
    for step in range(100):
        set_grads(ours, step, seed=2)
        set_grads(theirs, step, seed=2)
        opt.step(), ref.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(opt.state[a]["exp_avg_sq"], ref.state[b]["exp_avg_sq"], atol=1e-7, rtol=1e-5)


@pytest.mark.skipif(not REFERENCE.is_file(), reason=f"{REFERENCE} not found")
def test_fused_path_matches_course_reference_vector():
    ref = torch.from_numpy(np.load(REFERENCE))
    w = course_procedure(lambda ps, **kw: AdamW(ps, fused=True, **kw))
    assert torch.allclose(ref, w, atol=1e-6, rtol=1e-4), f"expected\n{ref}\ngot\n{w}"


@pytest.mark.parametrize("first,second", [(False, True), (True, False)])
def test_switching_paths_mid_run_through_a_checkpoint(first, second):
    # The trainers' crash-safe checkpoints write opt.state_dict() as safetensors + JSON
    # (training/engine/checkpointing.py); a run may resume on the other path.
    from training.engine.checkpointing import load_optimizer_state, optimizer_state
    straight, switched = make_params(3), make_params(3)
    opt_s = AdamW(groups_of(straight))
    opt_a = AdamW(groups_of(switched), fused=first)
    for step in range(40):
        set_grads(straight, step, seed=3)
        set_grads(switched, step, seed=3)
        opt_s.step(), opt_a.step()
    tensors, meta = optimizer_state(opt_a)
    tensors = {k: v.clone() for k, v in tensors.items()}
    meta = json.loads(json.dumps(meta))  # as read back from state.json
    resumed = [p.detach().clone().requires_grad_() for p in switched]
    opt_b = AdamW(groups_of(resumed), fused=second)
    load_optimizer_state(opt_b, tensors, meta)
    assert opt_b.fused is second, "loading a checkpoint must not switch the path"
    for step in range(40, 80):
        set_grads(straight, step, seed=3)
        set_grads(resumed, step, seed=3)
        opt_s.step(), opt_b.step()
    assert_same_state(opt_s, straight, opt_b, resumed, atol=2e-6, rtol=1e-5)


def test_both_paths_write_the_same_state_dict_format():
    a, b = make_params(4), make_params(4)
    opt_a, opt_b = AdamW(groups_of(a)), AdamW(groups_of(b), fused=True)
    set_grads(a, 0, seed=4), set_grads(b, 0, seed=4)
    opt_a.step(), opt_b.step()
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for i in sa["state"]:
        assert {k: (type(v), getattr(v, "dtype", None), getattr(v, "shape", None)) for k, v in sa["state"][i].items()} \
            == {k: (type(v), getattr(v, "dtype", None), getattr(v, "shape", None)) for k, v in sb["state"][i].items()}


def test_fused_bf16_params_are_as_close_to_exact_as_the_graded_path():
    # bf16 weights and moments: each path rounds to bf16 (8 bits of mantissa) differently, so compare
    # both with the same update run in float64 from the same bf16 start and gradients.
    exact = make_params(5, torch.bfloat16)
    exact = [p.detach().double().requires_grad_() for p in exact]
    graded, fused = make_params(5, torch.bfloat16), make_params(5, torch.bfloat16)
    opts = [AdamW(groups_of(ps), fused=f) for ps, f in ((exact, False), (graded, False), (fused, True))]
    for step in range(30):
        set_grads(graded, step, seed=5, dtype=torch.bfloat16)
        set_grads(fused, step, seed=5, dtype=torch.bfloat16)
        for e, g in zip(exact, graded):
            e.grad = None if g.grad is None else g.grad.double()
        for opt in opts:
            opt.step()
    assert all(p.dtype == torch.bfloat16 for p in fused)
    assert all(s["exp_avg"].dtype == torch.bfloat16 for s in opts[2].state.values())
    for e, g, f in zip(exact, graded, fused):
        err_graded = (g.double() - e).abs().max().item()
        err_fused = (f.double() - e).abs().max().item()
        # 30 steps of bf16 rounding: a few bf16 ulps of |p| (<= 4: ulp 2^-5) at most
        assert err_fused <= max(2 * err_graded, 4 * 2 ** -5), (err_fused, err_graded)


def test_fused_path_skips_params_without_grad_and_handles_edge_groups():
    p = [torch.randn(4, requires_grad=True) for _ in range(4)]
    q = [x.detach().clone().requires_grad_() for x in p]
    groups = lambda ps: [{"params": ps[:1], "lr": 0.0, "weight_decay": 0.1},   # lr 0: the weights stay
                         {"params": ps[1:2], "lr": 1.0, "weight_decay": 1.0},  # lr * wd = 1: decay to 0
                         {"params": ps[2:]}]
    opt_g, opt_f = AdamW(groups(p), lr=1e-2), AdamW(groups(q), lr=1e-2, fused=True)
    for ps in (p, q):
        for x in ps[:3]:
            x.grad = torch.ones(4)
    opt_g.step(), opt_f.step()
    assert len(opt_f.state) == 3 and q[3] not in opt_f.state, "a parameter without gradient gets no state"
    assert_same_state(opt_g, p, opt_f, q)
    assert torch.equal(q[1], torch.zeros(4))


def test_fused_path_rejects_sparse_gradients():
    p = torch.zeros(3, requires_grad=True)
    p.grad = torch.zeros(3).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        AdamW([p], fused=True).step()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_path_equals_graded_update_on_cuda():
    graded = [p.detach().cuda().requires_grad_() for p in make_params(6)]
    fused = [p.detach().cuda().requires_grad_() for p in make_params(6)]
    opt_g, opt_f = AdamW(groups_of(graded)), AdamW(groups_of(fused), fused=True)
    for step in range(100):
        for ps in (graded, fused):
            set_grads(ps, step, seed=6)
            for x in ps:
                x.grad = None if x.grad is None else x.grad.cuda()
        opt_g.step(), opt_f.step()
    assert_same_state(opt_g, graded, opt_f, fused, atol=2e-6, rtol=1e-5)


def test_optimizer_benchmark_runs_every_contender_and_checks_the_fast_path():
    from bench.bench_optim import CONTENDERS, format_report, optimizer_benchmark
    r = optimizer_benchmark("tiny", steps=2, reps=2, warmup=1, threads=1)
    assert set(r["per_step"]) == set(CONTENDERS)
    assert all(s["reps"] == 2 and s["min_s"] <= s["median_s"] <= s["max_s"] for s in r["per_step"].values())
    assert r["optimizer_steps_taken"] == 6
    assert 0 < r["max_abs_weight_diff_graded_vs_fused"] < 1e-5  # they stepped, and agree
    assert "minbert-fused" in format_report(r)
