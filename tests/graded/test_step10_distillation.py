"""Step 10: Born-Again teacher annealing (annealed_lambda, mixed_targets and distill_loss in
training/distill_targets.py; Clark et al. 2019). References are written out here with plain tensor
arithmetic, independently of your code."""
import torch

from checks import assert_close, likely_mistake
from training.distill_targets import annealed_lambda, distill_loss, mixed_targets

LAMBDAS = (0.0, 0.5, 1.0)


def soft_cross_entropy(logits, target):
    """-sum_c target_c * log softmax(logits)_c, averaged over the rows; log-softmax written out."""
    log_p = logits - logits.exp().sum(-1, keepdim=True).log()  # (B, 5)
    return -(target * log_p).sum(-1).mean()


def soft_bce(logits, target):
    p = 1 / (1 + torch.exp(-logits))
    return -(target * p.log() + (1 - target) * (1 - p).log()).mean()


def test_lambda_is_zero_at_the_start_and_one_at_the_end():
    for step, total, expected in [(0, 40, 0.0), (40, 40, 1.0), (0, 1, 0.0), (1, 1, 1.0), (45, 40, 1.0), (-3, 40, 0.0)]:
        got = annealed_lambda(step, total)
        assert isinstance(got, (float, int)) and abs(got - expected) < 1e-12, (
            f"annealed_lambda({step}, {total}) is {got!r} but expected {expected}: lambda is the weight of the gold "
            "label, 0.0 at step 0 (pure teacher) and 1.0 from step == total_steps on (clamped to [0, 1]).")


def test_lambda_rises_linearly_with_the_step():
    total = 8
    got = [annealed_lambda(step, total) for step in range(total + 1)]
    expected = [step / total for step in range(total + 1)]
    bad = [(s, g, e) for s, (g, e) in enumerate(zip(got, expected)) if abs(g - e) > 1e-9]
    assert not bad, (f"annealed_lambda(step, {total}) for step 0..{total} is {got}, expected step / total_steps = "
                     f"{expected}; the first difference is at step {bad[0][0]}. The schedule is linear: the same "
                     f"increment 1 / total_steps every step.")


def test_sst_targets_mix_the_one_hot_gold_label_with_the_teacher_distribution():
    gold = torch.tensor([0, 3, 4])
    teacher = torch.tensor([[0.1, 0.2, 0.3, 0.2, 0.2], [0.5, 0.1, 0.1, 0.1, 0.2], [0.05, 0.05, 0.6, 0.2, 0.1]])
    one_hot = torch.zeros(3, 5)
    one_hot[torch.arange(3), gold] = 1.0  # (B, 5)
    for lam in LAMBDAS:
        got = mixed_targets("sst", gold, teacher, lam)
        hint = likely_mistake(got, {
            "the weights swapped, lam * teacher + (1 - lam) * gold": lambda: lam * teacher + (1 - lam) * one_hot,
        }, "An sst target is a (B, 5) distribution: lam * one_hot(gold, 5) + (1 - lam) * teacher, each row "
           "summing to 1 (lam = 1: the gold one-hot vector, lam = 0: the teacher's probabilities).")
        assert_close(f"mixed_targets('sst', gold, teacher, lam={lam})", got, lam * one_hot + (1 - lam) * teacher, hint)


def test_quora_targets_mix_the_gold_label_with_the_teacher_probability():
    gold = torch.tensor([1, 0, 1, 0])  # 0/1 labels come as integers from the data loader
    teacher = torch.tensor([0.8, 0.3, 0.45, 0.05])
    for lam in LAMBDAS:
        got = mixed_targets("quora", gold, teacher, lam)
        assert_close(f"mixed_targets('quora', gold, teacher, lam={lam})", got,
                     lam * gold.float() + (1 - lam) * teacher,
                     "A quora target is a (B,) float probability lam * gold + (1 - lam) * teacher_probability "
                     "(the integer 0/1 gold label converted to float).")


def test_sts_targets_mix_the_gold_score_with_the_teacher_score():
    gold = torch.tensor([4.0, 1.0, 0.0, 5.0])
    teacher = torch.tensor([3.0, 2.5, 0.4, 4.2])
    for lam in LAMBDAS:
        got = mixed_targets("sts", gold, teacher, lam)
        assert_close(f"mixed_targets('sts', gold, teacher, lam={lam})", got, lam * gold + (1 - lam) * teacher,
                     "An sts target is a (B,) score lam * gold_score + (1 - lam) * teacher_score.")


def test_sst_loss_is_cross_entropy_against_the_target_distribution():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 5, generator=g)
    target = torch.rand(4, 5, generator=g).softmax(-1)
    got = distill_loss("sst", logits, target)
    hint = likely_mistake(got, {
        "the mean over the 5 classes instead of the sum": lambda: -(target * torch.log_softmax(logits, -1)).mean(),
        "cross-entropy with the target's argmax (hard labels)": lambda: torch.nn.functional.cross_entropy(
            logits, target.argmax(-1)),
        "the sum over the batch instead of the mean": lambda: -(target * torch.log_softmax(logits, -1)).sum(),
        "probabilities instead of log-probabilities": lambda: -(target * torch.softmax(logits, -1)).sum(-1).mean(),
    }, "Soft cross-entropy: -sum_c target_c * log_softmax(logits)_c per row (sum over the classes), then the "
       "mean over the rows; a scalar.")
    assert_close("distill_loss('sst', logits (4, 5), target (4, 5))", got, soft_cross_entropy(logits, target), hint)


def test_quora_loss_is_binary_cross_entropy_with_a_soft_target():
    logits = torch.tensor([0.3, -1.2, 2.0, 0.0])
    target = torch.tensor([0.9, 0.25, 0.5, 0.0])
    got = distill_loss("quora", logits, target)
    hint = likely_mistake(got, {
        "the target rounded to 0/1": lambda: soft_bce(logits, target.round()),
        "the squared error between sigmoid(logit) and the target": lambda: (torch.sigmoid(logits) - target).pow(2).mean(),
    }, "Binary cross-entropy with logits against a probability target t: -mean(t log sigmoid(z) + (1 - t) "
       "log(1 - sigmoid(z))) (F.binary_cross_entropy_with_logits accepts soft targets).")
    assert_close("distill_loss('quora', logits (4,), target (4,))", got, soft_bce(logits, target), hint)


def test_sts_loss_is_the_mean_squared_error_to_the_target_score():
    scores = torch.tensor([1.0, 3.0, 4.5, 0.2])
    target = torch.tensor([2.0, 3.5, 4.5, 1.0])
    got = distill_loss("sts", scores, target)
    hint = likely_mistake(got, {
        "the sum of squared errors instead of the mean": lambda: (scores - target).pow(2).sum(),
        "the mean absolute error": lambda: (scores - target).abs().mean(),
    }, "Mean squared error between the predicted scores and the mixed target scores; a scalar.")
    assert_close("distill_loss('sts', scores (4,), target (4,))", got, (scores - target).pow(2).mean(), hint)


def test_with_lambda_one_every_loss_is_the_plain_gold_label_loss():
    g = torch.Generator().manual_seed(1)
    cases = {
        "sst": (torch.randn(4, 5, generator=g), torch.tensor([0, 4, 2, 2]), torch.rand(4, 5, generator=g).softmax(-1)),
        "quora": (torch.randn(4, generator=g), torch.tensor([1, 0, 0, 1]), torch.rand(4, generator=g)),
        "sts": (5 * torch.rand(4, generator=g), torch.tensor([0.5, 4.0, 2.2, 3.0]), 5 * torch.rand(4, generator=g)),
    }
    for task, (out, gold, teacher) in cases.items():
        if task == "sst":
            expected = -torch.log_softmax(out, -1)[torch.arange(4), gold].mean()  # ordinary cross-entropy
        elif task == "quora":
            expected = soft_bce(out, gold.float())
        else:
            expected = (out - gold).pow(2).mean()
        got = distill_loss(task, out, mixed_targets(task, gold, teacher, 1.0))
        assert_close(f"distill_loss({task!r}, output, mixed_targets({task!r}, gold, teacher, 1.0))", got, expected,
                     "With lam = 1 the target is the gold label alone, so the loss must equal the task's ordinary "
                     "loss (cross-entropy, BCE with logits, MSE): the teacher must drop out completely.")
