"""GAN-BERT / AC-GAN-BERT (training/methods/gan.py): shapes, the losses against hand computation, that each
player's loss moves only its own parameters, and run_gan.py end to end on the fixture files."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minbert import AdamW, BertConfig, BertModel
from training import run_gan
from training.engine import curves
from training.methods import gan_plots
from training.methods.gan import (Discriminator, Generator, collapse_ratios, discriminator_loss, gan_losses, generator_loss,
                          spread, supervised_loss)
from training.engine.loop import Player, backward

FIXTURE_DATA = Path(__file__).parent / "fixtures" / "data" / "course"
C, K, NOISE = 32, 3, 8


def logits_pair(seed=0, B=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, K + 1, generator=g), torch.randn(B + 1, K + 1, generator=g)


def test_generator_shapes_and_conditioning():
    torch.manual_seed(0)
    z = torch.rand(6, NOISE)
    assert Generator(NOISE, C).eval()(z).shape == (6, C)
    G = Generator(NOISE, C, num_classes=K).eval()
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    assert G(z, y).shape == (6, C)
    assert not torch.allclose(G(z, y), G(z, (y + 1) % K)), "the label must change what is generated"
    with pytest.raises(ValueError, match="labels"):
        G(z)
    with pytest.raises(ValueError, match="0..2"):
        G(z, torch.full((6,), K))
    with pytest.raises(ValueError, match="unconditional"):
        Generator(NOISE, C)(z, y)


def test_discriminator_returns_features_and_k_plus_one_logits():
    f, logits = Discriminator(C, K, mlp_hidden=16)(torch.randn(4, C))
    assert f.shape == (4, 16) and logits.shape == (4, K + 1)


def test_discriminator_loss_matches_hand_computation():
    real, fake = logits_pair()
    labels = torch.tensor([2, 0, 1, 1, 0])
    labelled = torch.tensor([True, False, True, False, False])
    p_real, p_fake = real.softmax(-1), fake.softmax(-1)
    sup = -torch.stack([torch.log_softmax(real[i, :K], -1)[labels[i]] for i in (0, 2)]).mean()
    expected = sup - torch.log(1 - p_real[:, -1]).mean() - torch.log(p_fake[:, -1]).mean()
    torch.testing.assert_close(discriminator_loss(real, fake, labels, labelled), expected)
    # no labelled rows: only the unsupervised terms
    torch.testing.assert_close(discriminator_loss(real, fake, labels, torch.zeros(5, dtype=torch.bool)),
                               expected - sup)
    assert supervised_loss(real, labels, torch.zeros(5, dtype=torch.bool)).item() == 0.0


def test_ac_discriminator_loss_adds_cross_entropy_against_the_conditioning_labels():
    real, fake = logits_pair(1)
    labels, labelled = torch.tensor([0, 1, 2, 0, 1]), torch.ones(5, dtype=torch.bool)
    cond = torch.tensor([2, 2, 0, 1, 0, 1])
    plain = discriminator_loss(real, fake, labels, labelled)
    aux = -torch.stack([torch.log_softmax(fake[i, :K], -1)[cond[i]] for i in range(6)]).mean()
    torch.testing.assert_close(discriminator_loss(real, fake, labels, labelled, cond), plain + aux)
    other = (cond + 1) % K
    assert not torch.isclose(discriminator_loss(real, fake, labels, labelled, other), plain + aux)


def test_generator_loss_matches_hand_computation_and_ignores_the_real_side():
    _, fake = logits_pair(2)
    real_f = torch.randn(5, 7, requires_grad=True)
    fake_f = torch.randn(6, 7, requires_grad=True)
    p_fake = fake.softmax(-1)[:, -1]
    matching = ((real_f.mean(0) - fake_f.mean(0)) ** 2).mean()
    expected = -torch.log(1 - p_fake).mean() + matching
    got = generator_loss(fake, real_f, fake_f)
    torch.testing.assert_close(got, expected)
    got.backward()
    assert real_f.grad is None and fake_f.grad is not None  # real features are a fixed target
    cond = torch.tensor([0, 1, 2, 0, 1, 2])
    torch.testing.assert_close(generator_loss(fake, real_f, fake_f, cond),
                               expected + F.cross_entropy(fake[:, :K], cond))


def players(seed=0, conditional=False):
    """A tiny BERT encoder, D, G, D's optimizer over D + encoder, G's optimizer, and a token batch."""
    torch.manual_seed(seed)
    enc = BertModel(BertConfig(vocab_size=100, hidden_size=C, num_hidden_layers=1, num_attention_heads=4,
                               intermediate_size=37))
    D, G = Discriminator(C, K, 16), Generator(NOISE, C, K if conditional else 0, 16)
    d_params = list(enc.parameters()) + list(D.parameters())
    d_opt, g_opt = AdamW(d_params, lr=1e-2), AdamW(G.parameters(), lr=1e-2)
    ids = torch.randint(1, 100, (4, 6), generator=torch.Generator().manual_seed(1))
    return enc, D, G, d_params, d_opt, g_opt, ids


def step(setup, update_d=True, update_g=True, fake_labels=None):
    enc, D, G, d_params, d_opt, g_opt, ids = setup
    torch.manual_seed(123)  # same dropout masks in every variant
    h = enc(ids, torch.ones_like(ids))["last_hidden_state"][:, 0]  # (B, C), attached to the encoder
    labels, labelled = torch.tensor([0, 1, 2, 0]), torch.tensor([True, True, False, False])
    noise = torch.rand(4, NOISE, generator=torch.Generator().manual_seed(2))
    d_loss, g_loss, stats = gan_losses(G, D, h, labels, labelled, fake_labels, noise)
    # as training/loop.fit steps the two players: each loss into its own player's parameters, then both steps
    on = [(d_loss, Player(d_opt, None, d_params))] if update_d else []
    on += [(g_loss, Player(g_opt, None, list(G.parameters())))] if update_g else []
    backward([loss for loss, _ in on], [player for _, player in on])
    for _, player in on:
        player.opt.step()
    return stats


def snapshot(*modules):
    return [p.detach().clone() for m in modules for p in m.parameters()]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_with_real_only_class_loss_d_ignores_the_fakes_classes_and_g_keeps_its_own():
    """--acgan-d-classes real: D's loss no longer depends on which class a fake was generated for
    (it does by default, Odena et al.'s AC-GAN), while G's loss is the same as by default."""
    torch.manual_seed(0)
    D, G = Discriminator(8, 3, 16).eval(), Generator(NOISE, 8, 3, 16).eval()  # eval: no dropout noise
    h, labels, labelled = torch.randn(4, 8), torch.tensor([0, 1, 2, 0]), torch.tensor([True, True, False, False])
    noise = torch.rand(4, NOISE, generator=torch.Generator().manual_seed(2))
    z = G(noise, torch.tensor([0, 1, 2, 1]))  # the fakes, one set for both class assignments below
    G.forward = lambda *_: z  # so only the labels D and G are told differ
    out = {(fakes, y): gan_losses(G, D, h, labels, labelled, torch.tensor(y), noise, d_classifies_fakes=fakes)[:2]
           for fakes in (True, False) for y in ((0, 1, 2, 1), (2, 2, 0, 0))}
    assert out[(False, (0, 1, 2, 1))][0] == out[(False, (2, 2, 0, 0))][0]
    assert out[(True, (0, 1, 2, 1))][0] != out[(True, (2, 2, 0, 0))][0]
    for y in ((0, 1, 2, 1), (2, 2, 0, 0)):
        assert out[(False, y)][1] == out[(True, y)][1]
    assert out[(True, (0, 1, 2, 1))][1] != out[(True, (2, 2, 0, 0))][1]  # G's class loss still reads its labels


@pytest.mark.parametrize("conditional", [False, True])
def test_generator_step_moves_only_the_generator(conditional):
    setup = players(conditional=conditional)
    enc, D, G = setup[:3]
    before_d, before_g = snapshot(enc, D), snapshot(G)
    step(setup, update_d=False, fake_labels=torch.tensor([0, 1, 2, 1]) if conditional else None)
    assert same(snapshot(enc, D), before_d), "the generator's loss must not move D or the encoder"
    assert not same(snapshot(G), before_g)


def test_discriminator_step_leaves_the_generator_alone():
    setup = players()
    enc, D, G = setup[:3]
    before_d, before_g = snapshot(enc, D), snapshot(G)
    step(setup, update_g=False)
    assert same(snapshot(G), before_g)
    assert not same(snapshot(D), before_d[-len(list(D.parameters())):])


def test_combined_step_equals_separate_steps_so_no_gradient_leaks():
    combined, d_only, g_only = players(), players(), players()
    step(combined)
    step(d_only, update_g=False)
    step(g_only, update_d=False)
    assert same(snapshot(combined[0], combined[1]), snapshot(d_only[0], d_only[1]))
    assert same(snapshot(combined[2]), snapshot(g_only[2]))


def test_the_public_port_flaw_would_be_caught():
    """Backpropagating both losses into every parameter (the public PyTorch port) changes D's update,
    so the equality above is a real check."""
    ported, d_only = players(), players()
    step(d_only, update_g=False)
    enc, D, G, d_params, d_opt, g_opt, ids = ported
    torch.manual_seed(123)
    h = enc(ids, torch.ones_like(ids))["last_hidden_state"][:, 0]
    fake = G(torch.rand(4, NOISE, generator=torch.Generator().manual_seed(2)))
    f, logits = D(torch.cat([h, fake]))
    d_loss = discriminator_loss(logits[:4], logits[4:], torch.tensor([0, 1, 2, 0]), torch.tensor([1, 1, 0, 0]).bool())
    (generator_loss(logits[4:], f[:4], f[4:]) + d_loss).backward()
    d_opt.step()
    assert not same(snapshot(enc, D), snapshot(d_only[0], d_only[1]))


def test_collapse_ratio_is_zero_for_identical_fakes_and_one_for_real_copies():
    real = torch.randn(40, 5)
    labels = torch.arange(40) % 2
    assert collapse_ratios(real, labels, real.clone(), labels, 2)["mean_per_class"] == pytest.approx(1.0)
    collapsed = collapse_ratios(real, labels, real[:1].repeat(40, 1), labels, 2)
    assert collapsed["all"] == pytest.approx(0.0, abs=1e-9)
    assert collapsed["mean_per_class"] == pytest.approx(0.0, abs=1e-9)
    assert spread(torch.tensor([[0.0, 0.0], [2.0, 0.0]])) == pytest.approx(1.0)


def test_pca_2d_recovers_the_two_largest_variance_directions():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)) * np.array([5.0, 0.1, 2.0, 0.1])
    xy = gan_plots.pca_2d(x)
    top = np.sort(np.linalg.eigvalsh(np.cov(x.T)))[::-1][:2]
    np.testing.assert_allclose(np.var(xy, axis=0, ddof=1), top, rtol=1e-6)


# ---------------------------------------------------------------------------- run_gan.py end to end



def run(tmp_path, ckpt, *extra):
    return run_gan.main(["--model", str(ckpt), "--data-dir", str(FIXTURE_DATA), "--device", "cpu", "--steps", "4", "--batch-size", "2",
                         "--threads", "1", "--log-every", "2", "--out-dir", str(tmp_path), *extra])


@pytest.mark.parametrize("method, extra", [("plain", []), ("gan", ["--embeddings-plot"]),
                                           ("acgan", ["--freeze-encoder", "--task", "cfimdb", "--embeddings-plot"]),
                                           ("acgan", ["--acgan-d-classes", "real"])])
def test_each_method_runs_and_writes_predictions_and_a_record(tmp_path, tiny_checkpoint, method, extra):
    result = run(tmp_path, tiny_checkpoint, "--method", method, "--labelled", "0.5", *extra)
    task = "cfimdb" if "cfimdb" in extra else "sst"
    labelled, pool = (3, 5) if task == "sst" else (2, 3)  # ceil(0.5 * training examples)
    assert 0.0 <= result["dev_acc"] <= 1.0 and result["labelled"] == labelled
    assert result["unlabelled"] == (0 if method == "plain" else pool - labelled) and len(result["log"]) == 2
    for split in ("dev", "test"):
        lines = (tmp_path / "predictions" / f"{task}-{split}-output.csv").read_text().splitlines()
        assert lines[0].split() == ["id", "Predicted_Sentiment"] and len(lines) > 1
    assert ("collapse" in result) == (method != "plain")
    assert result.get("acgan_d_classes") == (None if method != "acgan" else "real" if "real" in extra else "all")
    assert json.loads((tmp_path / "result.json").read_text())["dev_acc"] == result["dev_acc"]


def test_sweep_covers_every_fraction_method_and_seed(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    # Without matplotlib (an optional extra; made missing here, whether installed or not): no PNG, one hint.
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    monkeypatch.setattr(curves, "_WARNED", False)
    result = run(tmp_path, tiny_checkpoint, "--sweep", "--fractions", "0.5,1", "--seeds", "1", "--freeze-encoder")
    assert len(result["runs"]) == 2 * 3
    assert set(result["summary"]) == {"plain", "gan", "acgan"}
    assert all(set(by) == {"0.5", "1"} and all(v["n"] == 1 for v in by.values()) for by in result["summary"].values())
    for method, by in result["summary"].items():  # the GAN methods also carry their conditioning score
        assert all(("conditioning_mean" in v) == (method != "plain") for v in by.values())
    acgan_1 = next(r for r in result["runs"] if r["method"] == "acgan" and r["fraction"] == 1)
    assert result["summary"]["acgan"]["1"]["conditioning_mean"] == acgan_1["conditioning"]["accuracy"]
    # (nan_ok: the tiny fixture leaves classes without real rows, whose spread is undefined)
    assert result["summary"]["acgan"]["1"]["collapse_mean"] == pytest.approx(acgan_1["collapse"]["mean_per_class"],
                                                                              nan_ok=True)
    assert "collapse_mean" not in result["summary"]["plain"]["1"]
    assert (tmp_path / "sweep.json").is_file()
    assert capsys.readouterr().out.count("pip install matplotlib") == 1
    assert not list(tmp_path.glob("*.png"))


def test_sweeps_run_apart_merge_into_the_sweep_run_at_once(tmp_path, tiny_checkpoint):
    common = ("--sweep", "--fractions", "0.5", "--methods", "plain,gan", "--freeze-encoder")
    whole = run(tmp_path / "whole", tiny_checkpoint, *common, "--seeds", "1,2")
    for seed in ("1", "2"):
        run(tmp_path / seed, tiny_checkpoint, *common, "--seeds", seed)
    merged = run_gan.main(["--merge", str(tmp_path / "1" / "sweep.json"), str(tmp_path / "2" / "sweep.json"),
                           "--out-dir", str(tmp_path / "merged"), "--device", "cpu"])
    same = json.dumps(merged["summary"], sort_keys=True) == json.dumps(whole["summary"], sort_keys=True)  # NaN == NaN
    assert same and (tmp_path / "merged" / "sweep.json").is_file()
    with pytest.raises(SystemExit, match="seed 1 is in both"):
        run_gan.main(["--merge", str(tmp_path / "1" / "sweep.json"), str(tmp_path / "whole" / "sweep.json"), "--device", "cpu"])
    with pytest.raises(SystemExit, match="cannot read"):
        run_gan.main(["--merge", str(tmp_path / "missing.json"), "--device", "cpu"])


def test_sweep_plot_is_a_png_when_matplotlib_is_installed(tmp_path):
    pytest.importorskip("matplotlib")  # the optional [plots] extra
    summary = {m: {"0.5": {"mean": 0.4, "std": 0.1, "n": 2}, "1": {"mean": 0.6, "std": 0.0, "n": 2}}
               for m in ("plain", "gan")}
    path = gan_plots.plot_sweep(summary, tmp_path / "sweep.png", "sst")
    assert path is not None and (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_plain_baseline_sees_only_labelled_examples(tmp_path, tiny_checkpoint):
    a = run(tmp_path / "a", tiny_checkpoint, "--method", "plain", "--labelled", "0.4", "--freeze-encoder")
    g = run(tmp_path / "g", tiny_checkpoint, "--method", "gan", "--labelled", "0.4", "--freeze-encoder")
    assert a["labelled"] == g["labelled"] == 2 and a["unlabelled"] == 0 and g["unlabelled"] == 3


def test_summary_keeps_the_real_classes_fix_apart_from_acgan():
    rec = lambda acc, d: {"method": "acgan", "fraction": 0.1, "seed": 1, "dev_acc": acc, "acgan_d_classes": d}  # noqa: E731
    summary = run_gan.summarize([rec(0.4, "all"), rec(0.5, "real")])
    assert summary["acgan"]["0.1"]["mean"] == 0.4 and summary["acgan (D: real classes)"]["0.1"]["mean"] == 0.5


def test_summary_keeps_a_slower_generator_apart_and_old_records_in_their_method():
    rec = lambda acc, **lr: {"method": "gan", "fraction": 0.1, "seed": 1, "dev_acc": acc, **lr}  # noqa: E731
    summary = run_gan.summarize([rec(0.3), rec(0.5, head_lr=1e-4, g_lr=1e-4), rec(0.6, head_lr=1e-4, g_lr=2.5e-5)])
    assert summary["gan"]["0.1"] == {"mean": 0.4, "std": pytest.approx(0.1), "n": 2}
    assert summary["gan (G lr 2.5e-05)"]["0.1"]["mean"] == 0.6


@pytest.mark.parametrize("g_lr, moves", [("0", False), (None, True)])
def test_g_lr_sets_the_generator_learning_rate(tmp_path, tiny_checkpoint, monkeypatch, g_lr, moves):
    made = []

    class Recorded(run_gan.Generator):  # keeps the generator and a copy of its initial weights
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            made.append((self, {k: v.clone() for k, v in self.state_dict().items()}))

    monkeypatch.setattr(run_gan, "Generator", Recorded)
    result = run(tmp_path, tiny_checkpoint, "--method", "gan", "--freeze-encoder", *(["--g-lr", g_lr] if g_lr else []))
    (G, start), = made
    same = all(torch.equal(v, start[k]) for k, v in G.state_dict().items())
    assert same != moves and result["g_lr"] == (0.0 if g_lr else result["head_lr"])


def test_a_stored_sweep_from_before_the_conditioning_score_merges(tmp_path, capsys):
    stored = Path(__file__).parents[1] / "docs" / "results" / "gan-sweep-sst-frozen.json"  # runs lack "conditioning"
    merged = run_gan.main(["--merge", str(stored), "--out-dir", str(tmp_path), "--device", "cpu"])
    runs = [r for r in json.loads(stored.read_text())["runs"] if r["method"] == "gan" and r["fraction"] == 0.1]
    row = merged["summary"]["gan"]["0.1"]
    assert row["mean"] == pytest.approx(np.mean([r["dev_acc"] for r in runs])) and "conditioning_mean" not in row
    assert row["collapse_mean"] == pytest.approx(np.mean([r["collapse"]["mean_per_class"] for r in runs]))
    assert "(collapse | conditioning)" in capsys.readouterr().out
