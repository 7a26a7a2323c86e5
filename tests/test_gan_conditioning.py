"""The conditioning score of training/methods/gan.py and run_gan.py: is a generator class-conditioned?

Synthetic classes with known means stand in for real embeddings. The binomial intervals the score
reports are checked against an independent computation here (log-space binomial sums and
bisection), not against scipy, which the code under test uses."""
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from training import run_gan
from training.methods.gan import Discriminator, Generator, conditioning_score, fit_probe, probe_predict

C, K = 16, 4
FIXTURE_DATA = Path(__file__).parent / "fixtures" / "data" / "course"


def log_pmf(x: int, n: int, p: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(x + 1) - math.lgamma(n - x + 1) + x * math.log(p) + (n - x) * math.log1p(-p)


def cdf(x: int, n: int, p: float) -> float:
    return sum(math.exp(log_pmf(i, n, p)) for i in range(x + 1))


def chance_range(n: int, k: int) -> tuple[float, float]:
    """Central 95% range of the hit rate of a label-blind guesser: the smallest counts whose
    Binomial(n, 1/k) CDF reaches 2.5% and 97.5%, over n."""
    lo = next(x for x in range(n + 1) if cdf(x, n, 1 / k) >= 0.025)
    hi = next(x for x in range(n + 1) if cdf(x, n, 1 / k) >= 0.975)
    return lo / n, hi / n


def exact_lower_bound(hits: int, n: int) -> float:
    """Clopper-Pearson 95% lower bound by bisection: the p at which P(X >= hits | p) = 2.5%."""
    if hits == 0:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 1 - cdf(hits - 1, n, mid) < 0.025 else (lo, mid)
    return (lo + hi) / 2


def class_means(seed: int, separation: float) -> torch.Tensor:
    return torch.randn(K, C, generator=torch.Generator().manual_seed(seed)) * separation  # (K, C)


def sample(means: torch.Tensor, n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n_per_class rows (N, C) around each class mean with unit Gaussian noise, and their labels (N,)."""
    y = torch.arange(K).repeat_interleave(n_per_class)
    return means[y] + torch.randn(len(y), C, generator=torch.Generator().manual_seed(seed)), y


def test_probe_reaches_the_bayes_accuracy_on_separable_data():
    means = class_means(0, separation=0.6)
    (x, y), (x_dev, y_dev) = sample(means, 300, seed=1), sample(means, 300, seed=2)
    probe = fit_probe(x, y, K)
    acc = (probe_predict(probe, x_dev) == y_dev).float().mean().item()
    # Independent judge: equal isotropic classes, so the Bayes rule is the nearest true mean.
    bayes = (torch.cdist(x_dev, means).argmin(-1) == y_dev).float().mean().item()
    assert 0.6 < bayes < 0.99, "the classes should overlap a little, so the comparison means something"
    assert acc >= bayes - 0.03, f"probe dev accuracy {acc:.3f} vs Bayes {bayes:.3f}"


def test_probe_rejects_labels_outside_the_classes():
    with pytest.raises(ValueError, match="0..3"):
        fit_probe(torch.randn(5, C), torch.tensor([0, 1, 2, 3, 4]), K)


def test_score_intervals_match_an_independent_binomial_computation():
    n = 400
    target = torch.arange(n) % K
    predicted = torch.where(torch.arange(n) < 130, target, (target + 1) % K)  # 130 hits
    s = conditioning_score(predicted, target, K)
    assert (s["hits"], s["n"], s["accuracy"], s["chance"]) == (130, n, 130 / n, 1 / K)
    assert s["ci_low"] == pytest.approx(exact_lower_bound(130, n), abs=1e-6)
    assert (s["chance_low"], s["chance_high"]) == pytest.approx(chance_range(n, K))
    assert s["above_chance"] == (exact_lower_bound(130, n) > 1 / K)
    assert s["predicted_share"]["class_0"] == pytest.approx(((predicted == 0).sum() / n).item())


class MeansGenerator(Generator):
    """A stand-in generator: the real class means plus small noise. Conditional: the mean of the
    label asked for. Label-blind (honour=False): the mean of a class drawn from its own noise."""

    def __init__(self, means: torch.Tensor, honour: bool):
        super().__init__(noise_dim=8, hidden_size=C, num_classes=K if honour else 0)
        self.means, self.honour = means, honour

    def forward(self, z, labels=None):
        if self.honour:
            return self.means[labels] + 0.1 * z[:, :1]  # (B, C)
        own = (z[:, 0] * K).long().clamp(max=K - 1)  # a class of its own choosing
        return self.means[own] + 0.1 * z[:, 1:2]  # (B, C)


def conditioning(method: str, honour: bool, probe_fakes: int = 200) -> dict:
    means = class_means(3, separation=1.5)
    (x, y), (x_dev, y_dev) = sample(means, 200, seed=4), sample(means, 100, seed=5)
    args = SimpleNamespace(probe_steps=300, probe_fakes=probe_fakes, device="cpu")
    D = Discriminator(C, K, 8).eval()
    return run_gan.probe_conditioning(args, K, MeansGenerator(means, honour).eval(), D, x, y, (x_dev, y_dev), method,
                                      torch.Generator().manual_seed(3))


def test_a_generator_that_emits_its_class_mean_scores_near_one():
    s = conditioning("acgan", honour=True)
    n = K * 200
    assert s["n"] == n and s["target"] == "conditioning class"
    _, chance_high = chance_range(n, K)
    assert s["accuracy"] >= 0.98 and exact_lower_bound(s["hits"], n) > chance_high
    assert s["above_chance"] and s["probe_dev_acc"] > 0.8


@pytest.mark.parametrize("method", ["acgan", "gan"])
def test_a_generator_that_ignores_the_label_scores_at_chance(method):
    """acgan: asked for a class, it emits another; gan: G has no label, the targets are random."""
    s = conditioning(method, honour=False)
    lo, hi = chance_range(s["n"], K)
    assert lo <= s["accuracy"] <= hi, f"{s['accuracy']:.3f} outside chance's range [{lo:.3f}, {hi:.3f}]"
    assert not s["above_chance"]
    assert s["target"] == ("random class" if method == "gan" else "conditioning class")


@pytest.mark.parametrize("method", ["gan", "acgan"])
def test_the_run_record_carries_the_conditioning_score(tmp_path, tiny_checkpoint, method):
    result = run_gan.main(["--model", str(tiny_checkpoint), "--data-dir", str(FIXTURE_DATA), "--device", "cpu",
                           "--steps", "2", "--batch-size", "2", "--threads", "1", "--out-dir", str(tmp_path),
                           "--method", method, "--labelled", "0.5", "--freeze-encoder", "--probe-fakes", "7",
                           "--probe-steps", "5"])
    s = result["conditioning"]
    k = 5  # sst
    assert s["n"] == 7 * k and s["chance"] == 1 / k and 0 <= s["accuracy"] <= 1
    for key in ("ci_low", "ci_high", "chance_low", "chance_high", "probe_dev_acc", "discriminator_accuracy",
                "probe_train_rows", "per_class", "predicted_share", "above_chance", "target"):
        assert key in s, key
    assert s["ci_low"] <= s["accuracy"] <= s["ci_high"]



def test_embeddings_plot_colours_real_and_generated_by_class_and_marks_which_is_which(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")  # the optional [plots] extra
    from training.methods import gan_plots
    figures = []
    monkeypatch.setattr(gan_plots, "save_figure", lambda plt, fig, path: figures.append(fig) or path)
    real, fake = torch.randn(12, 2).numpy(), torch.randn(9, 2).numpy()
    real_y, fake_y = (torch.arange(12) % 3).numpy(), (torch.arange(9) % 3).numpy()
    assert gan_plots.plot_embeddings(real, real_y, fake, fake_y, tmp_path / "e.png", "t", 3) == tmp_path / "e.png"
    by_label = {s.get_label(): s for s in figures[0].axes[0].collections}
    for c in range(3):
        r, f = by_label[f"real {c}"], by_label[f"generated {c}"]
        assert (r.get_offsets() == real[real_y == c]).all() and (f.get_offsets() == fake[fake_y == c]).all()
        assert (r.get_facecolor()[0][:3] == f.get_facecolor()[0][:3]).all(), "one colour per class"
        assert not np.array_equal(r.get_paths()[0].vertices, f.get_paths()[0].vertices), "dots vs crosses"
    colours = {tuple(by_label[f"real {c}"].get_facecolor()[0][:3]) for c in range(3)}
    assert len(colours) == 3, "each class its own colour"
