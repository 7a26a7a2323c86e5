"""Param groups with layer-wise lr decay and no-decay params; the warmup + linear decay schedule."""
import pytest
import torch
import torch.nn as nn

import minbert
from minbert import BertConfig, BertModel
from training.engine.optim import param_groups, warmup_linear

TINY = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)


def make(seed=0):
    torch.manual_seed(seed)
    enc = BertModel(BertConfig(**TINY))
    heads = {"sst": nn.Sequential(nn.Dropout(0.1), nn.Linear(32, 5)),
             "sts": nn.Linear(32, 1), "para": nn.Linear(64, 1)}
    return enc, heads


def expected_lr(name: str, L: int, lr: float, decay: float, head_lr: float | None) -> float:
    if name.startswith("head."):
        return lr if head_lr is None else head_lr
    if name.startswith("embeddings."):
        return lr * decay ** (L + 1)
    if name.startswith("layers."):
        return lr * decay ** (L - int(name.split(".")[1]))
    assert name.startswith("pooler.")
    return lr


def named(enc, heads):
    out = dict(enc.named_parameters())
    for task, h in heads.items():
        out.update({f"head.{task}.{n}": p for n, p in h.named_parameters()})
    return out


def group_of(groups):
    return {id(p): g for g in groups for p in g["params"]}


def test_every_trainable_param_exactly_once():
    enc, heads = make()
    groups = param_groups(enc, heads, lr=1e-3, layer_decay=0.8)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)), "a parameter appears in two groups"
    assert set(ids) == {id(p) for p in named(enc, heads).values()}
    assert len({g["name"] for g in groups}) == len(groups)
    assert all(g["params"] for g in groups)


def test_frozen_params_left_out():
    enc, heads = make()
    for p in enc.embeddings.parameters():
        p.requires_grad_(False)
    ids = {id(p) for g in param_groups(enc, heads, lr=1e-3) for p in g["params"]}
    assert ids == {id(p) for p in named(enc, heads).values() if p.requires_grad}
    assert not any(id(p) in ids for p in enc.embeddings.parameters())


@pytest.mark.parametrize("decay,head_lr", [(0.8, None), (0.9, 5e-3), (1.0, None)])
def test_layerwise_lr_follows_formula(decay, head_lr):
    enc, heads = make()
    lr, L = 1e-3, len(enc.layers)
    where = group_of(param_groups(enc, heads, lr=lr, layer_decay=decay, head_lr=head_lr))
    for name, p in named(enc, heads).items():
        assert where[id(p)]["lr"] == pytest.approx(expected_lr(name, L, lr, decay, head_lr)), name
    # embeddings lowest, then layer 0 < layer 1 < pooler
    if decay < 1:
        lrs = [where[id(enc.embeddings.word_embeddings.weight)]["lr"]]
        lrs += [where[id(layer.ffn_in.weight)]["lr"] for layer in enc.layers]
        lrs += [where[id(enc.pooler.weight)]["lr"]]
        assert lrs == sorted(lrs) and len(set(lrs)) == len(lrs)


def test_no_weight_decay_on_biases_and_layernorm():
    enc, heads = make()
    where = group_of(param_groups(enc, heads, lr=1e-3, weight_decay=0.05))
    for name, p in named(enc, heads).items():
        excluded = p.ndim == 1 or name.endswith(".bias") or ".ln" in name
        assert where[id(p)]["weight_decay"] == (0.0 if excluded else 0.05), name
    assert where[id(enc.layers[0].ln1.weight)]["weight_decay"] == 0.0
    assert where[id(enc.layers[0].attn.qkv.weight)]["weight_decay"] == 0.05
    assert where[id(enc.embeddings.word_embeddings.weight)]["weight_decay"] == 0.05


def test_tied_parameter_kept_once():
    enc, heads = make()
    tied = nn.Linear(32, 100, bias=False)
    tied.weight = enc.embeddings.word_embeddings.weight  # MLM decoder tied to the input embeddings
    groups = param_groups(enc, {"mlm": tied}, lr=1e-3)
    ids = [id(p) for g in groups for p in g["params"]]
    assert ids.count(id(tied.weight)) == 1
    assert group_of(groups)[id(tied.weight)]["name"] == "embeddings"


@pytest.mark.parametrize("opt_cls", [minbert.AdamW, torch.optim.AdamW])
def test_groups_work_with_optimizers(opt_cls):
    enc, heads = make()
    groups = param_groups(enc, heads, lr=1e-3, layer_decay=0.5)
    opt = opt_cls(groups, lr=1e-3)
    x = torch.randint(1, 100, (2, 5))
    h = enc(x, torch.ones_like(x))["pooler_output"]
    loss = heads["sst"](h).sum() + heads["sts"](h).sum() + heads["para"](torch.cat([h, h], -1)).sum()
    before = enc.layers[0].ffn_in.weight.detach().clone()
    loss.backward()
    opt.step()
    assert not torch.equal(before, enc.layers[0].ffn_in.weight)
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in groups]


def test_bad_arguments_raise():
    enc, heads = make()
    with pytest.raises(ValueError, match="layers"):
        param_groups(nn.Linear(2, 2), heads, lr=1e-3)
    with pytest.raises(ValueError, match="layer_decay"):
        param_groups(enc, heads, lr=1e-3, layer_decay=0.0)
    with pytest.raises(ValueError, match="lr"):
        param_groups(enc, heads, lr=-1.0)


# ---- warmup_linear ----

def schedule_lrs(base_lrs, warmup, total, steps):
    params = [nn.Parameter(torch.zeros(1)) for _ in base_lrs]
    opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, base_lrs)], lr=1.0)
    sched = warmup_linear(opt, warmup, total)
    out = []
    for _ in range(steps):
        out.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return out


def test_warmup_linear_formula_per_group():
    base, warmup, total = [1e-3, 2e-4], 4, 10
    lrs = schedule_lrs(base, warmup, total, total + 3)
    for step, row in enumerate(lrs):
        f = step / warmup if step < warmup else max(0.0, (total - step) / (total - warmup))
        assert row == pytest.approx([b * f for b in base]), step
    assert lrs[0] == [0.0, 0.0]
    assert lrs[warmup] == pytest.approx(base)
    assert lrs[total] == [0.0, 0.0] and lrs[-1] == [0.0, 0.0]


def test_warmup_linear_matches_transformers():
    transformers = pytest.importorskip("transformers")
    base, warmup, total = [3e-4, 1e-4, 5e-5], 7, 50
    ours = schedule_lrs(base, warmup, total, total + 2)
    params = [nn.Parameter(torch.zeros(1)) for _ in base]
    opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, base)], lr=1.0)
    ref = transformers.get_linear_schedule_with_warmup(opt, warmup, total)
    for row in ours:
        assert row == pytest.approx([g["lr"] for g in opt.param_groups])
        opt.step()
        ref.step()


def test_no_warmup_starts_at_base_lr():
    assert [row[0] for row in schedule_lrs([1.0], 0, 4, 5)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])


def test_warmup_linear_rejects_bad_steps():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_linear(opt, 20, 10)
    with pytest.raises(ValueError, match="total_steps"):
        warmup_linear(opt, 0, 0)
