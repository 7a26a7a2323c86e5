"""Step 9: PCGrad's gradient surgery (project_conflicting in training/pcgrad.py; Yu et al. 2020).
Each case is built so the result does not depend on the random order in which tasks are visited."""
import torch

from checks import assert_close
from training.pcgrad import pcgrad_project, project_conflicting


def projected_off(g, h):
    """g minus its component along h."""
    return g - (g @ h) / (h @ h) * h


def test_gradients_that_do_not_conflict_are_unchanged():
    grads = [torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.5, 1.0, 0.0]), torch.tensor([0.0, 3.0, 1.0])]
    got = project_conflicting(grads, torch.Generator().manual_seed(0))
    for k, (a, b) in enumerate(zip(got, grads)):
        assert_close(f"projected gradient {k} (no pair conflicts)", a, b,
                     "Only a pair with a negative dot product is projected.")


def test_a_conflicting_pair_is_projected_onto_each_others_normal_plane():
    g1, g2 = torch.tensor([1.0, 1.0, 0.0]), torch.tensor([-1.0, 0.5, 2.0])  # g1 . g2 < 0
    got = project_conflicting([g1, g2], torch.Generator().manual_seed(0))
    hint = ("g_i := g_i - (g_i . g_j) / ||g_j||^2 * g_j when g_i . g_j < 0, always with the ORIGINAL g_j "
            "(not its projected version).")
    assert_close("projected gradient 0", got[0], projected_off(g1, g2), hint)
    assert_close("projected gradient 1", got[1], projected_off(g2, g1), hint)


def test_only_the_conflicting_pair_changes_among_three_tasks():
    g1, g2, g3 = torch.tensor([2.0, 1.0, 0.0]), torch.tensor([-1.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 1.5])
    expected = [projected_off(g1, g2), projected_off(g2, g1), g3]  # g3 is orthogonal to both
    total = pcgrad_project([g1, g2, g3], torch.Generator().manual_seed(1))
    assert_close("pcgrad_project of three gradients", total, sum(expected),
                 "Task 0 and 1 conflict, task 2 is orthogonal to both and must stay as it is.")


def test_inputs_are_not_modified():
    grads = [torch.tensor([1.0, 1.0]), torch.tensor([-2.0, 0.5])]
    before = [g.clone() for g in grads]
    project_conflicting(grads, torch.Generator().manual_seed(0))
    for k, (g, b) in enumerate(zip(grads, before)):
        assert_close(f"input gradient {k} after project_conflicting", g, b,
                     "Work on a copy (g.clone()): the caller's gradients must not change.")
