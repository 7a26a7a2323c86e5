"""PCGrad (Yu et al. 2020): hand-computed projections, properties, and the backward pass on a model."""
import itertools

import pytest
import torch
import torch.nn as nn

from training.engine.pcgrad import pcgrad_backward, pcgrad_project, project_conflicting


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def reference_pcgrad(grads, orders):
    """Algorithm 1 written out: orders[i] is the sequence of j that task i visits."""
    out = []
    for i, g in enumerate(grads):
        g = g.clone()
        for j in orders[i]:
            if torch.dot(g, grads[j]) < 0:
                g = g - torch.dot(g, grads[j]) / torch.dot(grads[j], grads[j]) * grads[j]
        out.append(g)
    return torch.stack(out).sum(0)


def test_2d_hand_computed_conflict():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    # g1.g2 = -1 < 0, ||g2||^2 = 2, ||g1||^2 = 1
    g1_pc = g1 - (-1.0 / 2.0) * g2  # = [0.5, 0.5]
    g2_pc = g2 - (-1.0 / 1.0) * g1  # = [0.0, 1.0]
    expected = g1_pc + g2_pc        # = [0.5, 1.5]
    torch.testing.assert_close(expected, torch.tensor([0.5, 1.5]))
    for order in ([g1, g2], [g2, g1]):
        torch.testing.assert_close(pcgrad_project(order, gen()), expected)


def test_3d_hand_computed_with_an_orthogonal_third_task():
    g1, g2, g3 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([-1.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 2.0])
    # g3 is orthogonal to g1 and g2 (and to their projections), so only the g1/g2 conflict counts
    # and the visiting order cannot matter: g1.g2 = -1, ||g1||^2 = 1, ||g2||^2 = 2
    expected = (g1 - (-1.0 / 2.0) * g2) + (g2 - (-1.0 / 1.0) * g1) + g3  # = [0.5, 1.5, 2.0]
    torch.testing.assert_close(expected, torch.tensor([0.5, 1.5, 2.0]))
    for seed in range(5):
        for order in itertools.permutations([g1, g2, g3]):
            torch.testing.assert_close(pcgrad_project(list(order), gen(seed)), expected)


def test_3d_result_is_algorithm_1_for_some_visiting_order():
    g = [torch.tensor([1.0, 0.0, 0.0]), torch.tensor([-1.0, 1.0, 0.0]), torch.tensor([-0.5, -1.0, 1.0])]
    # with three tasks the order matters: enumerate every choice of orders
    perms = [[list(p) for p in itertools.permutations([j for j in range(3) if j != i])] for i in range(3)]
    candidates = [reference_pcgrad(g, orders) for orders in itertools.product(*perms)]
    seen = set()
    for seed in range(20):
        out = pcgrad_project(g, gen(seed))
        match = [k for k, c in enumerate(candidates) if torch.allclose(out, c, atol=1e-6)]
        assert match, f"seed {seed}: {out} is not Algorithm 1 for any order"
        seen.add(tuple(out.tolist()))
    assert len(seen) > 1, "the visiting order should be random, but every seed gave the same result"


def test_same_seed_same_result():
    torch.manual_seed(0)
    g = [torch.randn(10) for _ in range(4)]
    torch.testing.assert_close(pcgrad_project(g, gen(3)), pcgrad_project(g, gen(3)), rtol=0, atol=0)


def test_no_conflict_is_plain_sum():
    g = [torch.tensor([1.0, 2.0, 0.0]), torch.tensor([0.5, 0.0, 3.0]), torch.tensor([0.0, 1.0, 1.0])]
    assert all(torch.dot(a, b) >= 0 for a, b in itertools.combinations(g, 2))
    torch.testing.assert_close(pcgrad_project(g, gen()), g[0] + g[1] + g[2])


def test_identical_grads_unchanged_sum():
    g = torch.tensor([0.3, -1.2, 2.0, 0.1])
    torch.testing.assert_close(pcgrad_project([g, g.clone(), g.clone()], gen()), 3 * g)


def test_inputs_not_modified():
    g = [torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])]
    before = [x.clone() for x in g]
    project_conflicting(g, gen())
    for a, b in zip(g, before):
        assert torch.equal(a, b)


@pytest.mark.parametrize("seed", range(20))
def test_projected_grad_does_not_conflict_with_other_original(seed):
    # exact for two tasks; with more tasks a later projection can reintroduce a conflict
    torch.manual_seed(seed)
    g = [torch.randn(6), torch.randn(6)]
    p = project_conflicting(g, gen(seed))
    assert torch.dot(p[0], g[1]) >= -1e-5
    assert torch.dot(p[1], g[0]) >= -1e-5
    if torch.dot(g[0], g[1]) >= 0:
        torch.testing.assert_close(p[0], g[0])


def test_bad_input_raises():
    with pytest.raises(ValueError, match="empty"):
        pcgrad_project([], gen())
    with pytest.raises(ValueError, match="shape"):
        pcgrad_project([torch.zeros(3), torch.zeros(4)], gen())


# ---- pcgrad_backward on a small model: shared trunk + one head per task ----

def make_model(seed=0, same_heads=False):
    torch.manual_seed(seed)
    trunk = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8))
    heads = [nn.Linear(8, 1), nn.Linear(8, 1)]
    if same_heads:
        heads[1].load_state_dict(heads[0].state_dict())
    return trunk, heads


def losses_for(trunk, heads, x, ys):
    h = trunk(x)
    return [((head(h).squeeze(-1) - y) ** 2).mean() for head, y in zip(heads, ys)]


def test_backward_without_conflict_equals_autograd_sum():
    trunk, heads = make_model(same_heads=True)
    x, y = torch.randn(5, 4), torch.randn(5)
    losses = losses_for(trunk, heads, x, [y, y])  # identical shared grads: cosine 1, no conflict
    shared, per_task = list(trunk.parameters()), [list(h.parameters()) for h in heads]
    pcgrad_backward(losses, shared, per_task, gen())
    got = [p.grad.clone() for p in shared + per_task[0] + per_task[1]]

    for p in shared + per_task[0] + per_task[1]:
        p.grad = None
    sum(losses_for(trunk, heads, x, [y, y])).backward()
    want = [p.grad for p in shared + per_task[0] + per_task[1]]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_backward_with_conflict_matches_flat_projection_and_heads_get_own_grad():
    trunk, heads = make_model(seed=1)
    x = torch.randn(5, 4)
    ys = [torch.randn(5), torch.randn(5)]
    shared, per_task = list(trunk.parameters()), [list(h.parameters()) for h in heads]
    # pick the sign of task 1's target so that the two tasks conflict on the trunk
    flat = []
    for k in range(2):
        loss = losses_for(trunk, heads, x, ys)[k]
        flat.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, shared)]))
    if torch.dot(flat[0], flat[1]) > 0:
        ys[1] = -ys[1] * 10
        loss = losses_for(trunk, heads, x, ys)[1]
        flat[1] = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, shared)])
    assert torch.dot(flat[0], flat[1]) < 0

    head_want = [torch.autograd.grad(losses_for(trunk, heads, x, ys)[k], per_task[k]) for k in range(2)]
    pcgrad_backward(losses_for(trunk, heads, x, ys), shared, per_task, gen(0))

    want = pcgrad_project(flat, gen(0))
    got = torch.cat([p.grad.reshape(-1) for p in shared])
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, flat[0] + flat[1])  # the surgery changed something
    for k in range(2):
        for p, g in zip(per_task[k], head_want[k]):
            torch.testing.assert_close(p.grad, g)


def test_backward_unused_shared_param_and_accumulation():
    trunk, heads = make_model()
    extra = nn.Parameter(torch.randn(3))  # shared, but reached by task 0 only
    unused = nn.Parameter(torch.randn(2))  # shared, reached by no task
    x, y = torch.randn(5, 4), torch.randn(5)
    shared = list(trunk.parameters()) + [extra, unused]

    def losses():
        ls = losses_for(trunk, heads, x, [y, y])
        return [ls[0] + (extra ** 2).sum(), ls[1]]

    pcgrad_backward(losses(), shared, [list(h.parameters()) for h in heads], gen())
    assert unused.grad is None
    first = extra.grad.clone()
    assert torch.count_nonzero(first) > 0
    pcgrad_backward(losses(), shared, [list(h.parameters()) for h in heads], gen())
    torch.testing.assert_close(extra.grad, 2 * first)  # added to .grad, like backward()


def test_backward_rejects_bad_arguments():
    trunk, heads = make_model()
    x, y = torch.randn(5, 4), torch.randn(5)
    shared = list(trunk.parameters())
    with pytest.raises(ValueError, match="both"):
        pcgrad_backward(losses_for(trunk, heads, x, [y, y]), shared, [shared[:1], []])
    with pytest.raises(ValueError, match="one list per task"):
        pcgrad_backward(losses_for(trunk, heads, x, [y, y]), shared, [[]])
    with pytest.raises(ValueError, match="scalar"):
        pcgrad_backward([trunk(x).sum(1)], shared)


def test_backward_frees_graph_like_backward():
    trunk, heads = make_model()
    x, y = torch.randn(5, 4), torch.randn(5)
    losses = losses_for(trunk, heads, x, [y, y])
    pcgrad_backward(losses, list(trunk.parameters()), [list(h.parameters()) for h in heads], gen())
    with pytest.raises(RuntimeError, match="second time"):
        sum(losses).backward()
