"""course/guard.py: each refused route raises inside its step's guard and works everywhere else;
the allowed ops give the same numbers inside and outside; transformers cannot be imported; a guard
that the test's code switched off is reported."""
import importlib
import importlib.util
import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F
import torch.optim.adam as adam_module
import torch.optim.adamw as adamw_module

from course.guard import (FORBIDDEN_MODULES, ShortcutRefused, _IMPORT_GUARD, guard_intact, install_import_guard,
                          refuse_shortcuts, remove_import_guard)

# References saved before any guard goes up, as a student's module might.
SAVED_SDPA = F.scaled_dot_product_attention
SAVED_FUSED_ADAMW = torch._fused_adamw_
SAVED_ADAM = torch.optim.Adam


@pytest.fixture(autouse=True)
def no_forbidden_loaded(monkeypatch):
    """Other tests in the same process may have imported transformers: hide it for these tests."""
    for name in [k for k in sys.modules if k.partition(".")[0] in FORBIDDEN_MODULES]:
        monkeypatch.delitem(sys.modules, name)


def qkv(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 2, 5, 4, generator=g) for _ in range(3)]  # (B, H, T, head_size)


def mha_module():
    torch.manual_seed(0)
    return torch.nn.MultiheadAttention(8, 2, batch_first=True).eval()


def x_bt8():
    return torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1))  # (B, T, C)


def mha_functional(m):
    x = x_bt8().transpose(0, 1)  # (T, B, C): the functional form is sequence-first
    return F.multi_head_attention_forward(x, x, x, 8, 2, m.in_proj_weight, m.in_proj_bias, None, None, False, 0.0,
                                          m.out_proj.weight, m.out_proj.bias, training=False)[0]


def native_mha(m):
    x = x_bt8()
    return torch._native_multi_head_attention(x, x, x, 8, 2, m.in_proj_weight, m.in_proj_bias, m.out_proj.weight,
                                              m.out_proj.bias, None, False)[0]


def mha_no_grad(m):
    with torch.no_grad():  # eval + no_grad: the route through MultiheadAttention's fast path
        return m(x_bt8(), x_bt8(), x_bt8(), need_weights=False)[0]


# name -> (call, runs on CPU outside the guard)
STEP1_ROUTES = {
    "torch.nn.functional.scaled_dot_product_attention": (lambda: F.scaled_dot_product_attention(*qkv()), True),
    "saved before the guard": (lambda: SAVED_SDPA(*qkv()), True),
    "torch._C._nn.scaled_dot_product_attention": (lambda: torch._C._nn.scaled_dot_product_attention(*qkv()), True),
    "torch.ops.aten.scaled_dot_product_attention": (lambda: torch.ops.aten.scaled_dot_product_attention(*qkv()), True),
    "torch.ops.aten.scaled_dot_product_attention.default":
        (lambda: torch.ops.aten.scaled_dot_product_attention.default(*qkv()), True),
    "torch._scaled_dot_product_flash_attention_for_cpu":
        (lambda: torch._scaled_dot_product_flash_attention_for_cpu(*qkv())[0], True),
    "torch.ops.aten._scaled_dot_product_flash_attention_for_cpu":
        (lambda: torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(*qkv())[0], True),
    "torch._scaled_dot_product_attention_math": (lambda: torch._scaled_dot_product_attention_math(*qkv())[0], True),
    # CUDA kernels: refused by name before dispatch (on CPU they have no kernel to run outside)
    "_scaled_dot_product_efficient_attention":
        (lambda: torch.ops.aten._scaled_dot_product_efficient_attention.default(*qkv(), None, False), False),
    "_scaled_dot_product_flash_attention":
        (lambda: torch.ops.aten._scaled_dot_product_flash_attention.default(*qkv()), False),
    "_scaled_dot_product_cudnn_attention":
        (lambda: torch.ops.aten._scaled_dot_product_cudnn_attention.default(*qkv(), None, False), False),
    "nn.MultiheadAttention": (lambda: mha_module()(x_bt8(), x_bt8(), x_bt8())[0], True),
    "nn.MultiheadAttention fast path": (lambda: mha_no_grad(mha_module()), True),
    "F.multi_head_attention_forward": (lambda: mha_functional(mha_module()), True),
    "torch._native_multi_head_attention": (lambda: native_mha(mha_module()), True),
}


def adam_state(seed: int = 0) -> dict:
    """Fresh parameters with gradients, optimizers built outside any guard, and functional-form lists."""
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(6, generator=g).requires_grad_()
    p.grad = torch.randn(6, generator=g)
    ps, gs = [torch.randn(6, generator=g)], [torch.randn(6, generator=g)]
    return {"p": p, "adam": torch.optim.Adam([p], lr=0.1), "adamw": torch.optim.AdamW([p], lr=0.1),
            "foreach": torch.optim.Adam([p], lr=0.1, foreach=True), "fused": torch.optim.AdamW([p], lr=0.1, fused=True),
            "lists": (ps, gs, [torch.zeros(6)], [torch.zeros(6)], [], [torch.tensor(1.0)]), "ps": ps}


HYPER = dict(amsgrad=False, beta1=0.9, beta2=0.999, lr=0.1, weight_decay=0.01, eps=1e-8, maximize=False)
SINGLE = dict(HYPER, has_complex=False, capturable=False, differentiable=False, decoupled_weight_decay=True)
FUSED = dict(HYPER)


def stepped(s, key):
    s[key].step()
    return s["p"]


def functional(fn, **kw):
    def call(s):
        fn(*s["lists"], **kw)
        return s["ps"][0]
    return call


STEP6_ROUTES = {
    "torch.optim.Adam()": lambda s: torch.optim.Adam([s["p"]]).defaults["lr"],
    "saved torch.optim.Adam()": lambda s: SAVED_ADAM([s["p"]]).defaults["lr"],
    "torch.optim.AdamW()": lambda s: torch.optim.AdamW([s["p"]]).defaults["lr"],
    "Adam.step, built before the guard": lambda s: stepped(s, "adam"),
    "AdamW.step, built before the guard": lambda s: stepped(s, "adamw"),
    "Adam(foreach=True).step": lambda s: stepped(s, "foreach"),
    "AdamW(fused=True).step": lambda s: stepped(s, "fused"),
    "torch.optim.adam.adam": functional(adam_module.adam, **HYPER),
    "torch.optim.adamw.adamw": functional(adamw_module.adamw, **HYPER),
    "_single_tensor_adam": functional(lambda *a, **k: adam_module._single_tensor_adam(*a, None, None, **k), **SINGLE),
    "_multi_tensor_adam": functional(lambda *a, **k: adam_module._multi_tensor_adam(*a, None, None, **k), **SINGLE),
    "torch._fused_adam_": functional(torch._fused_adam_, **FUSED),
    "torch._fused_adamw_": functional(torch._fused_adamw_, **FUSED),
    "saved torch._fused_adamw_": functional(SAVED_FUSED_ADAMW, **FUSED),
    "torch.ops.aten._fused_adamw_": functional(torch.ops.aten._fused_adamw_, **FUSED),
    "torch.ops.aten._fused_adam_.default": functional(torch.ops.aten._fused_adam_.default, **FUSED),
}


@pytest.mark.parametrize("route", STEP1_ROUTES)
def test_step1_refuses_attention_routes(route):
    call, _ = STEP1_ROUTES[route]
    with pytest.raises(ShortcutRefused, match=r"step 1 refuses .*rule: write the step yourself"):
        with refuse_shortcuts(1):
            call()


@pytest.mark.parametrize("route", [r for r, (_, on_cpu) in STEP1_ROUTES.items() if on_cpu])
def test_attention_routes_work_outside_and_in_other_steps(route):
    call, _ = STEP1_ROUTES[route]
    outside = call()
    for step in (2, 6):
        with refuse_shortcuts(step):
            inside = call()
        torch.testing.assert_close(inside, outside)


@pytest.mark.parametrize("route", STEP6_ROUTES)
def test_step6_refuses_adam_routes(route):
    s = adam_state()
    with pytest.raises(ShortcutRefused, match=r"step 6 refuses .*rule: write the step yourself"):
        with refuse_shortcuts(6):
            STEP6_ROUTES[route](s)


@pytest.mark.parametrize("route", STEP6_ROUTES)
def test_adam_routes_work_outside_and_in_other_steps(route):
    s = adam_state()
    before = [s["p"].detach().clone(), s["ps"][0].clone()]
    outside = STEP6_ROUTES[route](s)
    with refuse_shortcuts(1):
        inside = STEP6_ROUTES[route](adam_state())
    if isinstance(outside, torch.Tensor):  # a step: it changed the parameter
        outside, inside = outside.detach(), inside.detach()
        assert not any(torch.equal(outside, b) for b in before)
    torch.testing.assert_close(inside, outside)


def allowed_ops() -> dict:
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(4, 6, generator=g), torch.randn(6, 5, generator=g)
    w, bias = torch.randn(3, 6, generator=g), torch.randn(3, generator=g)
    torch.manual_seed(0)  # F.dropout draws from the global generator
    m, v = torch.zeros_like(a), torch.ones_like(a)
    ts = [a.clone(), b.clone()]
    torch._foreach_mul_(ts, 0.5)
    return {"softmax": torch.softmax(a, dim=-1), "matmul": torch.matmul(a, b), "at": a @ b,
            "einsum": torch.einsum("ij,jk->ik", a, b), "dropout": F.dropout(a, 0.5, training=True),
            "layer_norm": F.layer_norm(a, (6,)), "linear": F.linear(a, w, bias),
            "addcdiv_": m.addcdiv_(a, v.add_(1.0), value=-0.1), "foreach": ts[0], "zeros_like": torch.zeros_like(b)}


@pytest.mark.parametrize("step", [1, 6])
def test_allowed_ops_work_inside_with_the_same_numbers(step):
    outside = allowed_ops()
    with refuse_shortcuts(step):
        inside = allowed_ops()
    assert inside.keys() == outside.keys()
    for key in outside:
        torch.testing.assert_close(inside[key], outside[key], rtol=0, atol=0, msg=key)


def honest_attention(q, k, v, mask, keep):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)) + mask  # (B, H, T, T)
    return (torch.softmax(scores, dim=-1) * keep) @ v


def test_honest_attention_same_inside_and_outside_and_matches_torch():
    q, k, v = qkv(4)
    mask = torch.zeros(2, 1, 1, 5)
    mask[1, ..., 3:] = torch.finfo(torch.float32).min  # the second sequence has 2 padding tokens
    keep = (torch.rand(2, 2, 5, 5, generator=torch.Generator().manual_seed(5)) > 0.2) / 0.8
    outside = honest_attention(q, k, v, mask, keep)
    with refuse_shortcuts(1):
        inside = honest_attention(q, k, v, mask, keep)
    assert torch.equal(inside, outside)
    # independent: PyTorch's kernel without dropout, against the honest one with keep = 1
    torch.testing.assert_close(honest_attention(q, k, v, mask, 1.0), F.scaled_dot_product_attention(q, k, v, mask))


def test_course_adamw_runs_inside_step6_with_the_same_numbers():
    from minbert import AdamW  # subclasses torch.optim.Optimizer, writes the update by hand: allowed

    def train() -> torch.Tensor:
        g = torch.Generator().manual_seed(7)
        p = torch.randn(6, generator=g).requires_grad_()
        opt = AdamW([p], lr=0.1, weight_decay=0.01)
        for _ in range(3):
            p.grad = torch.randn(6, generator=g)
            opt.step()
        return p.detach()
    outside = train()
    with refuse_shortcuts(6):
        inside = train()
    start = torch.randn(6, generator=torch.Generator().manual_seed(7))
    assert torch.equal(inside, outside) and not torch.equal(outside, start)


@pytest.mark.parametrize("step", [1, 3, 6])
@pytest.mark.parametrize("name", ["transformers", "sentence_transformers", "transformers.models.bert"])
def test_forbidden_imports_refused_in_every_step(step, name):
    with pytest.raises(ShortcutRefused, match="importing"):
        with refuse_shortcuts(step):
            importlib.import_module(name)
    assert _IMPORT_GUARD not in sys.meta_path  # it installed the finder, so it removed it
    importlib.util.find_spec("transformers")  # outside, the finder is gone: no refusal (None where not installed)


def test_import_refusal_is_an_import_error_and_keeps_an_installed_finder():
    assert install_import_guard()
    try:
        with refuse_shortcuts(3):
            with pytest.raises(ImportError):
                import transformers  # noqa: F401
            sys.modules.pop("transformers", None)
        assert _IMPORT_GUARD in sys.meta_path  # the caller's finder stays
    finally:
        remove_import_guard()


def test_forbidden_module_in_sys_modules_fails_the_test(monkeypatch):
    with pytest.raises(ShortcutRefused, match="sentence_transformers was imported"):
        with refuse_shortcuts(3):
            monkeypatch.setitem(sys.modules, "sentence_transformers", types.ModuleType("sentence_transformers"))


def test_caught_refusal_still_fails_the_test():
    def sneaky():
        try:
            F.scaled_dot_product_attention(*qkv())
        except ShortcutRefused:
            pass
    with pytest.raises(ShortcutRefused, match="caught by the test's code"):
        with refuse_shortcuts(1):
            sneaky()


def test_guard_intact_false_when_mode_popped():
    assert not guard_intact()
    with pytest.raises(ShortcutRefused, match="switched off"):
        with refuse_shortcuts(1):
            assert guard_intact()
            torch.overrides._pop_mode()
            assert not guard_intact()
            F.scaled_dot_product_attention(*qkv())  # gets through once the mode is gone ...
    assert not guard_intact()  # ... and the exit reported it


def test_guard_intact_false_when_finder_removed_or_torch_function_disabled():
    with pytest.raises(ShortcutRefused, match="switched off"):
        with refuse_shortcuts(6):
            with torch._C.DisableTorchFunction():
                assert not guard_intact()
            assert guard_intact()
            sys.meta_path.remove(_IMPORT_GUARD)
            assert not guard_intact()


def test_exit_restores_the_mode_stack():
    before = torch.overrides._len_torch_function_stack()
    with refuse_shortcuts(1):
        assert torch.overrides._len_torch_function_stack() == before + 1
        torch.overrides.BaseTorchFunctionMode().__enter__()  # left on top of the guard's mode
    assert torch.overrides._len_torch_function_stack() == before
    with refuse_shortcuts(3):  # a step without call rules pushes no mode
        assert torch.overrides._len_torch_function_stack() == before and guard_intact()
