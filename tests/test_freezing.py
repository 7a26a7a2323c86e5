"""Freezing: frozen weights stay bit-identical through an optimizer step, the others move."""
import pytest
import torch
import torch.nn as nn

import minbert
from minbert import BertConfig, BertModel
from training.engine.freezing import (count_trainable, freeze_embeddings, freeze_encoder, freeze_lower_layers,
                               freeze_module)

TINY = dict(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def make(seed=0):
    torch.manual_seed(seed)
    enc = BertModel(BertConfig(**TINY))
    head = nn.Linear(32, 3)
    return enc, head


def train_step(enc, head, opt_cls=torch.optim.AdamW):
    """One step with weight decay; returns {param id: (before, after)} for every parameter."""
    params = list(enc.parameters()) + list(head.parameters())
    before = {id(p): p.detach().clone() for p in params}
    opt = opt_cls([p for p in params if p.requires_grad], lr=1e-2, weight_decay=0.1)
    torch.manual_seed(1)
    x = torch.randint(1, 100, (4, 6))
    out = enc(x, torch.ones_like(x))
    loss = nn.functional.cross_entropy(head(out["pooler_output"]), torch.tensor([0, 1, 2, 1]))
    loss = loss + out["last_hidden_state"].pow(2).mean()  # gradient on the pooler and the layers
    loss.backward()
    opt.step()
    return {id(p): (before[id(p)], p.detach()) for p in params}


def assert_frozen_exactly(enc, head, frozen: set[int], opt_cls=torch.optim.AdamW):
    changes = train_step(enc, head, opt_cls)
    named = list(enc.named_parameters()) + [(f"head.{n}", p) for n, p in head.named_parameters()]
    for name, p in named:
        b, a = changes[id(p)]
        if id(p) in frozen:
            assert not p.requires_grad and torch.equal(a, b), f"{name} is frozen but changed"
        else:
            assert p.requires_grad and not torch.equal(a, b), f"{name} is trainable but did not change"


@pytest.mark.parametrize("opt_cls", [torch.optim.AdamW, minbert.AdamW])
def test_freeze_encoder_trains_only_head(opt_cls):
    enc, head = make()
    n = freeze_encoder(enc)
    assert n == sum(p.numel() for p in enc.parameters())
    assert count_trainable(enc) == 0
    assert count_trainable(head) == sum(p.numel() for p in head.parameters())
    assert_frozen_exactly(enc, head, {id(p) for p in enc.parameters()}, opt_cls)


def test_freeze_embeddings():
    enc, head = make()
    freeze_embeddings(enc)
    assert_frozen_exactly(enc, head, {id(p) for p in enc.embeddings.parameters()})


@pytest.mark.parametrize("n", [1, 2, 3])
def test_freeze_lower_layers_freezes_embeddings_and_layers_below_n(n):
    enc, head = make()
    freeze_lower_layers(enc, n)
    frozen = {id(p) for p in enc.embeddings.parameters()}
    frozen |= {id(p) for layer in enc.layers[:n] for p in layer.parameters()}
    for layer in enc.layers[n:]:
        assert all(p.requires_grad for p in layer.parameters())
    assert count_trainable(enc) == sum(p.numel() for p in enc.parameters() if id(p) not in frozen)
    assert_frozen_exactly(enc, head, frozen)


def test_freeze_lower_layers_zero_is_noop():
    enc, _ = make()
    assert freeze_lower_layers(enc, 0) == 0
    assert count_trainable(enc) == sum(p.numel() for p in enc.parameters())


def test_freeze_module_head_and_stale_grad():
    enc, head = make()
    head.weight.grad = torch.ones_like(head.weight)  # left over from an earlier step
    assert freeze_module(head) == sum(p.numel() for p in head.parameters())
    assert head.weight.grad is None
    assert_frozen_exactly(enc, head, {id(p) for p in head.parameters()})


def test_bad_arguments_raise():
    enc, _ = make()
    with pytest.raises(ValueError, match="layers"):
        freeze_lower_layers(enc, 4)
    with pytest.raises(ValueError, match="layers"):
        freeze_lower_layers(enc, -1)
    with pytest.raises(ValueError, match="BertModel"):
        freeze_encoder(nn.Linear(2, 2))
