"""run_multitask.py on bad input and numerical faults: one clear paragraph, a non-zero exit, nothing
written half-way; NaN/Inf steps stopped (fp32) or skipped and counted, the last checkpoint intact.

The bad-input cases live in reliability_cases.py, which also prints docs/RELIABILITY.md's table."""
import itertools
import json
import math
import subprocess
import sys

import pytest
import torch

from reliability_cases import CASES, FIXTURE_DATA, SCRIPT, Env, base_argv, run_case, snapshot
from training.engine import checkpointing
from training import run_multitask
from training.multitask import splits, tasks


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    return Env(tmp_path_factory.mktemp("reliability"))


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.area}: {c.what}")
def test_bad_input_gets_one_clear_paragraph_and_nothing_is_written(env, case):
    o = run_case(case, env)
    if not case.expect:  # inputs that must work
        assert o.status == 0, o.message
        return
    assert o.status not in (0, None), "bad input must exit non-zero"
    assert o.message.startswith("error: ") or "error: " in o.message, o.message
    for part in case.expect:
        assert part in o.message, f"{part!r} not in {o.message!r}"
    assert "Traceback" not in o.message and "\n\n" not in o.message.strip(), "one paragraph, no traceback"
    assert not o.changed, "a failed run must leave the output folder as it was"


def test_pickle_checkpoint_is_refused_without_running_its_code(env):
    case = next(c for c in CASES if "pickle" in c.what)
    o = run_case(case, env)
    assert o.status != 0
    assert not list(env.root.rglob("PWNED")), "the pickle's payload ran"


def test_long_sentence_is_truncated_to_max_length(env):
    from data.batching import example_lengths
    from minbert import Tokenizer
    case = next(c for c in CASES if "10,000-word" in c.what)
    argv = base_argv(env.ckpt, FIXTURE_DATA, env.root / "long") + case.setup(env, env.root / "long")
    args = run_multitask.parse_args(argv)
    encoded = splits.load_split(args, Tokenizer.from_pretrained(env.ckpt), "sst", "train")
    assert max(example_lengths(encoded)) == args.max_length


def test_command_line_prints_only_the_message(env):
    """The real CLI: exit status 1, stderr is the message alone (no traceback)."""
    case = next(c for c in CASES if c.what == "config says 3 layers, weights have 2")
    out = env.root / "cli"
    argv = base_argv(env.ckpt, FIXTURE_DATA, out) + case.setup(env, out)
    p = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    err = p.stderr.strip()
    assert err.startswith("error: ") and "Traceback" not in err and case.expect[0] in err, err
    assert not out.exists()


# ----------------------------------------------------------------------------- numerical faults


def inject(monkeypatch, calls: set[int], gradient_only: bool = False) -> None:
    """Make the task loss non-finite at the given loss computations (1-based; one per step here)."""
    real, count = tasks.loss_from_output, itertools.count(1)

    def loss_from_output(task, out, labels):
        loss = real(task, out, labels)
        if next(count) not in calls:
            return loss
        if not gradient_only:
            return loss * float("nan")
        # A finite loss with a NaN gradient: where() passes 0 back to the unused branch, and sqrt's
        # backward turns 0 / sqrt(negative) into NaN.
        bad = torch.sqrt(-(out.float().sum() ** 2) - 1.0)
        return loss + torch.where(torch.tensor(False), bad, torch.zeros(()))

    monkeypatch.setattr(tasks, "loss_from_output", loss_from_output)


def record_saves(monkeypatch) -> list:
    """Snapshots of out/last right after every checkpoint save."""
    real, saved = checkpointing.save, []

    def save(directory, tensors, state):
        real(directory, tensors, state)
        saved.append(snapshot(directory))

    monkeypatch.setattr(checkpointing, "save", save)
    return saved


def train(env, out, *extra):
    return run_multitask.main(base_argv(env.ckpt, FIXTURE_DATA, out) + ["--epochs", "2", *extra])


def test_nan_loss_in_fp32_stops_with_a_message_and_keeps_the_last_checkpoint(env, tmp_path, monkeypatch):
    inject(monkeypatch, {5})
    saves = record_saves(monkeypatch)
    with pytest.raises(SystemExit) as e:
        train(env, tmp_path / "run", "--save-every", "3")
    msg = str(e.value.code)
    assert msg.startswith("error: step 5: the loss or the gradient is not finite") and "loss nan" in msg
    assert "(step 3) is intact" in msg and "--resume" in msg
    last = tmp_path / "run" / "last"
    assert snapshot(last) == saves[-1], "the checkpoint must be exactly the one saved before the fault"
    state, tensors = checkpointing.load(last)
    assert state["step"] == 3 and all(torch.isfinite(t).all() for t in tensors["model"].values())
    assert not (tmp_path / "run" / "predictions").exists()


def test_nan_gradient_with_a_finite_loss_is_caught(env, tmp_path, monkeypatch):
    inject(monkeypatch, {2}, gradient_only=True)
    with pytest.raises(SystemExit) as e:
        train(env, tmp_path / "run")
    assert "step 2: the loss or the gradient is not finite" in str(e.value.code)
    assert "gradient norm nan" in str(e.value.code)


def test_skipping_nonfinite_steps_counts_them_and_updates_nothing(env, tmp_path, monkeypatch):
    inject(monkeypatch, {2, 5})
    result = train(env, tmp_path / "run", "--on-nonfinite", "skip")
    assert result["history"] and all(math.isfinite(v) for v in result["dev"].values())
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("skipped")] == [2, 5]
    state, tensors = checkpointing.load(tmp_path / "run" / "last")
    assert state["skipped"] == 2 and all(torch.isfinite(t).all() for t in tensors["model"].values())
    # AdamW counts the updates it applied: the encoder is updated at every step but the two skipped.
    word_embeddings = 0  # the first parameter of the first group
    assert state["optimizer"]["state"][str(word_embeddings)]["step"] == state["step"] - 2


def test_too_many_skipped_steps_stop_the_run(env, tmp_path, monkeypatch):
    inject(monkeypatch, {2, 3})
    with pytest.raises(SystemExit) as e:
        train(env, tmp_path / "run", "--on-nonfinite", "skip", "--max-skips", "1")
    assert "step 3:" in str(e.value.code) and "2 steps skipped, more than --max-skips 1" in str(e.value.code)
