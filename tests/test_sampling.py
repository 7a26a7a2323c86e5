"""Task schedules: proportions match the formula, exact cycles, determinism, resume mid-way."""
import io
import math
from collections import Counter

import pytest
import torch

from training.engine.sampling import TaskScheduler, task_probabilities

SIZES = {"sst": 100, "para": 2000, "sts": 30}


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.75, 1.0])
def test_task_probabilities_formula(alpha):
    probs = task_probabilities(SIZES, alpha)
    z = sum(n ** alpha for n in SIZES.values())
    for name, n in SIZES.items():
        assert probs[name] == pytest.approx(n ** alpha / z)
    assert sum(probs.values()) == pytest.approx(1.0)


def test_alpha_zero_uniform_alpha_one_proportional():
    assert all(p == pytest.approx(1 / 3) for p in task_probabilities(SIZES, 0.0).values())
    total = sum(SIZES.values())
    assert task_probabilities(SIZES, 1.0) == pytest.approx({k: n / total for k, n in SIZES.items()})


@pytest.mark.parametrize("alpha", [0.0, 0.75, 1.0])
def test_proportional_frequencies_match_probabilities(alpha):
    steps = 20_000
    counts = Counter(TaskScheduler(SIZES, "proportional", alpha=alpha, steps=steps, seed=1))
    assert sum(counts.values()) == steps
    for name, p in task_probabilities(SIZES, alpha).items():
        # binomial count: 5 standard deviations, so a correct sampler fails ~1e-6 of the time
        tol = 5 * math.sqrt(steps * p * (1 - p))
        assert abs(counts[name] - steps * p) <= tol, (name, counts[name], steps * p)


def test_round_robin_exact_cycle():
    out = list(TaskScheduler(SIZES, "round_robin", steps=8))
    assert out == ["sst", "para", "sts", "sst", "para", "sts", "sst", "para"]


def test_sequential_order_and_cycling():
    sizes = {"a": 3, "b": 1, "c": 2}
    assert list(TaskScheduler(sizes, "sequential")) == ["a", "a", "a", "b", "c", "c"]
    assert list(TaskScheduler(sizes, "sequential", steps=8)) == ["a", "a", "a", "b", "c", "c", "a", "a"]


def test_default_steps_is_one_pass():
    sched = TaskScheduler(SIZES, "proportional")
    assert len(sched) == sum(SIZES.values()) == len(list(sched))


def test_deterministic_given_seed():
    a = list(TaskScheduler(SIZES, "proportional", steps=500, seed=7))
    b = list(TaskScheduler(SIZES, "proportional", steps=500, seed=7))
    c = list(TaskScheduler(SIZES, "proportional", steps=500, seed=8))
    assert a == b
    assert a != c


@pytest.mark.parametrize("mode", ["proportional", "round_robin", "sequential"])
def test_resume_mid_way_gives_same_continuation(mode):
    full = list(TaskScheduler(SIZES, mode, steps=600, seed=3))
    first = TaskScheduler(SIZES, mode, steps=600, seed=3)
    head = [next(first) for _ in range(250)]
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)  # through a real checkpoint round trip
    buf.seek(0)
    resumed = TaskScheduler(SIZES, mode, steps=600, seed=999)  # seed comes from the checkpoint state
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert head + list(resumed) == full


def test_load_state_dict_rejects_different_settings():
    state = TaskScheduler(SIZES, "proportional", steps=10).state_dict()
    with pytest.raises(ValueError, match="sizes"):
        TaskScheduler({"sst": 100}, "proportional", steps=10).load_state_dict(state)
    with pytest.raises(ValueError, match="mode"):
        TaskScheduler(SIZES, "round_robin", steps=10).load_state_dict(state)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="mode"):
        TaskScheduler(SIZES, "random")
    with pytest.raises(ValueError, match="positive"):
        TaskScheduler({"a": 0, "b": 3}, "round_robin")
    with pytest.raises(ValueError, match="non-empty"):
        TaskScheduler({}, "round_robin")
    with pytest.raises(ValueError, match="alpha"):
        task_probabilities(SIZES, -1.0)
    with pytest.raises(ValueError, match="steps"):
        TaskScheduler(SIZES, "round_robin", steps=-1)
