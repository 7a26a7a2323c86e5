"""--ema: the average of the weights (training/engine/ema.py), its wiring into the loop (training/engine/loop.py)
and into run_multitask: scored, kept in best/, carried by last/ across --resume; the raw training
trajectory unchanged."""
import json

import pytest
import torch
from torch import nn

from reliability_cases import FIXTURE_DATA, base_argv, make_tiny_checkpoint
from minbert.safetensors import load_safetensors
from training.engine import checkpointing
from training import run_multitask
from training.engine.ema import EMA
from training.engine.loop import Loop, Phase, Player, Report, fit


def toy_loop(decay: float, steps: int, recorded: list) -> Loop:
    """A small regression net trained by AdamW for `steps` steps; `recorded` gets its weights after each."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 1))
    x, y = torch.randn(64, 6), torch.randn(64)
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    player = Player(opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), list(model.parameters()))

    def losses(step_tasks):
        i = torch.randint(0, 64, (8,))
        return {"a": nn.functional.mse_loss(model(x[i]).squeeze(-1), y[i])}

    def on_step(step, values):
        recorded.append([p.detach().double().clone() for p in model.parameters()])

    recorded.append([p.detach().double().clone() for p in model.parameters()])  # the initial weights
    return Loop(model, [player], [Phase("toy", {"a": steps}, steps)], losses, on_step=on_step,
                ema=EMA(model, decay), report=Report(say=lambda *a: None))


def test_ema_after_k_steps_equals_a_plain_recomputation_over_the_recorded_weights():
    decay, steps, recorded = 0.8, 50, []  # the warm-up reaches the cap 0.8 at step 35: both regimes run
    loop = toy_loop(decay, steps, recorded)
    fit(loop)
    shadow = [w.clone() for w in recorded[0]]
    for n, weights in enumerate(recorded[1:]):  # float64, one parameter at a time
        d = min(decay, (1 + n) / (10 + n))
        shadow = [d * s + (1 - d) * w for s, w in zip(shadow, weights)]
    assert loop.ema.updates == steps
    for got, want in zip(loop.ema.shadow, shadow):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    # without dev scores nothing was kept: the loop ends with the average in the model
    for p, want in zip(loop.model.parameters(), shadow):
        torch.testing.assert_close(p.detach().double(), want, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(shadow[0], recorded[-1][0].double(), atol=1e-3), "the average equals the last weights"


def test_swapping_the_ema_weights_in_restores_the_raw_weights_bit_for_bit():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(7, 3), nn.LayerNorm(3))
    ema = EMA(model, 0.99)
    for _ in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        ema.update(model)
    raw = [p.detach().clone() for p in model.parameters()]
    with ema.applied(model):
        for p, s in zip(model.parameters(), ema.shadow):
            assert torch.equal(p, s)
        assert not torch.equal(next(model.parameters()), raw[0])
    assert all(torch.equal(p, r) for p, r in zip(model.parameters(), raw))
    with pytest.raises(RuntimeError, match="inside"), ema.applied(model):
        raise RuntimeError("inside")
    assert all(torch.equal(p, r) for p, r in zip(model.parameters(), raw))


def test_bad_decay_is_refused_with_the_option_named(capsys):
    with pytest.raises(SystemExit):
        run_multitask.parse_args(["--device", "cpu", "--ema", "1.0"])
    assert "--ema 1.0: must be 0 (off) or a decay in (0, 1)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="decay"):
        EMA(nn.Linear(2, 2), 1.0)


# ----------------------------------------------------------------------------- run_multitask --ema


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), dropout=0.1)  # dropout: the RNG stream matters


def argv(ckpt, out, *extra):
    return base_argv(ckpt, FIXTURE_DATA, out) + ["--save-every", "3", *extra]


def test_a_run_with_ema_keeps_the_ema_weights_in_best_and_predicts_with_them(tmp_path, ckpt):
    out = tmp_path / "ema"
    result = run_multitask.main(argv(ckpt, out, "--ema", "0.9"))  # one epoch: best/ is the last step's average
    state, tensors = checkpointing.load(out / "last")
    best = load_safetensors(out / "best" / "model.safetensors")
    assert state["ema_updates"] == state["step"] > 0
    assert tensors["ema"].keys() <= best.keys()
    for name, shadow in tensors["ema"].items():
        assert torch.equal(best[name], shadow), name
    assert any(not torch.equal(tensors["model"][n], s) for n, s in tensors["ema"].items()), "raw == average"
    row = result["history"][-1]
    assert {"raw_sst", "raw_quora", "raw_sts", "raw_overall"} <= row.keys()
    assert result["dev"] == {k: row[k] for k in result["dev"]}  # the prediction files' scores: the EMA weights'
    assert json.loads((out / "best" / "options.json").read_text())["dev"]["overall"] == row["overall"]


def test_the_raw_scores_and_trajectory_with_ema_equal_a_run_without_it(tmp_path, ckpt):
    plain = run_multitask.main(argv(ckpt, tmp_path / "plain", "--epochs", "2"))
    ema = run_multitask.main(argv(ckpt, tmp_path / "ema", "--epochs", "2", "--ema", "0.9"))
    assert len(ema["history"]) == len(plain["history"]) == 2
    for p, e in zip(plain["history"], ema["history"]):
        for k in ("sst", "quora", "sts", "overall"):
            assert e[f"raw_{k}"] == p[k], k
    a, b = checkpointing.load(tmp_path / "plain" / "last"), checkpointing.load(tmp_path / "ema" / "last")
    for group in ("model", "optimizer"):
        assert all(torch.equal(a[1][group][k], b[1][group][k]) for k in a[1][group]), group
    assert a[0]["rng"] == b[0]["rng"] and a[0]["running"] == b[0]["running"]


def test_ema_cannot_change_on_resume(tmp_path, ckpt):
    out = tmp_path / "run"
    run_multitask.main(argv(ckpt, out, "--ema", "0.9"))
    with pytest.raises(SystemExit, match="--ema 0.9 .now 0.5"):
        run_multitask.main(argv(ckpt, out, "--ema", "0.5", "--resume"))


def test_a_checkpoint_older_than_the_option_resumes_with_it_off_only(tmp_path, ckpt):
    """last/ of a run from before --ema existed (no "ema" among its options) resumes without --ema."""
    out = tmp_path / "run"
    first = run_multitask.main(argv(ckpt, out))
    path = out / "last" / "state.json"
    state = json.loads(path.read_text())
    del state["options"]["ema"], state["options"]["rdrop"]
    path.write_text(json.dumps(state))
    with pytest.raises(SystemExit, match="--ema 0.0 .now 0.9"):
        run_multitask.main(argv(ckpt, out, "--ema", "0.9", "--resume"))
    assert run_multitask.main(argv(ckpt, out, "--resume"))["dev"] == first["dev"]  # finished: predicts again
