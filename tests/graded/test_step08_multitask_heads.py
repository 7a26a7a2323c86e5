"""Step 8: the multitask heads' pieces: pair_features (heads/paraphrase.py), cosine_score
(heads/similarity.py) and the three task losses (loss_from_output in training/tasks.py)."""
import torch
import torch.nn.functional as F

from checks import assert_close
from heads.paraphrase import pair_features
from heads.similarity import cosine_score
from training.tasks import loss_from_output


def vectors(seed=0, B=5, C=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, C, generator=g), torch.randn(B, C, generator=g)


def test_pair_features_are_u_v_absdiff_product():
    u, v = vectors()
    got = pair_features(u, v)
    C = u.shape[1]
    assert isinstance(got, torch.Tensor) and got.shape == (u.shape[0], 4 * C), (
        f"pair_features((5, {C}), (5, {C})) must have shape (5, {4 * C}), got "
        f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}")
    for k, (name, part) in enumerate([("u", u), ("v", v), ("|u - v|", (u - v).abs()), ("u * v", u * v)]):
        assert_close(f"pair_features block {k} (columns {k * C}..{(k + 1) * C - 1})", got[:, k * C:(k + 1) * C], part,
                     f"Block {k} should be {name}: the layout is [u, v, |u - v|, u * v] along the last dim.")


def test_cosine_score_is_five_times_the_clipped_cosine():
    u, v = vectors(1)
    cos = (u * v).sum(1) / (u.norm(dim=1) * v.norm(dim=1))  # (B,)
    assert_close("cosine_score(u, v)", cosine_score(u, v), 5 * cos.clamp(min=0),
                 "Expected 5 * relu(cos(u, v)) per row, shape (B,).")


def test_cosine_score_extremes():
    u = torch.tensor([[1.0, 2.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    v = torch.tensor([[2.0, 4.0, 0.0], [0.0, 3.0, 0.0], [-1.0, -1.0, 0.0]])
    assert_close("cosine_score of (parallel, orthogonal, opposite) pairs", cosine_score(u, v),
                 torch.tensor([5.0, 0.0, 0.0]), "Parallel vectors score 5; orthogonal and opposite ones 0.")


def test_task_losses_are_cross_entropy_bce_and_mse():
    g = torch.Generator().manual_seed(2)
    logits5, sst = torch.randn(6, 5, generator=g), torch.randint(0, 5, (6,), generator=g)
    logit, quora = torch.randn(6, generator=g), torch.randint(0, 2, (6,), generator=g)
    score, sts = 5 * torch.rand(6, generator=g), 5 * torch.rand(6, generator=g)
    for task, out, labels, expected, what in [
            ("sst", logits5, sst, F.cross_entropy(logits5, sst), "cross-entropy on the 5 logits"),
            ("quora", logit, quora, F.binary_cross_entropy_with_logits(logit, quora.float()),
             "binary cross-entropy on the logit (labels 0/1 as floats)"),
            ("sts", score, sts, F.mse_loss(score, sts), "mean squared error between score and label")]:
        assert_close(f"loss_from_output({task!r}, ...)", loss_from_output(task, out, labels), expected,
                     f"The {task} loss is the {what}, averaged over the batch.")
