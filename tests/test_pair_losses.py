"""The pair objectives (training/multitask/pair_losses.py): CoSENT (--sts-loss cosent) and the multiple-negatives
ranking loss on Quora's duplicates (--quora-mnrl), each against an explicit loop over pairs; their
options take effect in run_multitask.py, MNRL's sentence encodings exist only when it is on, and bad
values are refused. (The defaults' unchanged loss traces: tests/test_loss_traces.py.)"""
import math
from pathlib import Path

import pytest
import torch

from data.batching import collate, encode_examples, example_lengths
from data.datasets import load_task
from heads.multitask_bert import MultitaskBert
from minbert import BertModel, Tokenizer
from minbert.safetensors import load_safetensors
from training.multitask import options, pair_losses, tasks
from training import run_distill, run_multitask
from training.multitask.splits import load_split

FIXTURE_DATA = Path(__file__).parent / "fixtures" / "data" / "course"


def cosent_by_loops(s: list[float], y: list[float], lam: float = 20.0) -> float:
    total = 0.0
    for i in range(len(s)):
        for j in range(len(s)):
            if y[i] > y[j]:
                total += math.exp(lam * (s[j] - s[i]))
    return math.log(1.0 + total)


def mnrl_by_loops(u: list[list[float]], v: list[list[float]], scale: float = 20.0) -> float:
    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
    losses = []
    for i in range(len(u)):
        logits = [scale * cos(u[i], v[j]) for j in range(len(v))]
        losses.append(math.log(sum(math.exp(z) for z in logits)) - logits[i])
    return sum(losses) / len(losses)


def test_cosent_equals_the_sum_over_ordered_pairs():
    g = torch.Generator().manual_seed(0)
    for B in (2, 5, 16):
        s = torch.rand(B, generator=g, dtype=torch.float64)
        y = torch.randint(0, 4, (B,), generator=g).double()  # ties: such pairs are not ordered
        got = pair_losses.cosent_loss(s, y).item()
        assert got == pytest.approx(cosent_by_loops(s.tolist(), y.tolist()), rel=1e-5)
    # a large violation stays finite (logsumexp), where the plain sum overflows float32
    big = pair_losses.cosent_loss(torch.tensor([0.0, 10.0]), torch.tensor([5.0, 0.0]))
    assert big.item() == pytest.approx(200.0, rel=1e-6)
    # no two different labels: nothing to order, loss 0 and no gradient
    s = torch.rand(4, requires_grad=True)
    loss = pair_losses.cosent_loss(s, torch.full((4,), 3.0))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(s.grad == 0)


def test_the_sts_table_loss_ranks_the_head_score_over_five():
    out, y = torch.tensor([4.0, 1.0, 2.5]), torch.tensor([5.0, 0.0, 3.2])
    args = options.parse_args(["--device", "cpu", "--sts-loss", "cosent"])
    got = tasks.task_loss("sts", args)(out, y).item()
    assert got == pytest.approx(cosent_by_loops([0.8, 0.2, 0.5], y.tolist()), rel=1e-5)  # float32
    default = tasks.task_loss("sts", options.parse_args(["--device", "cpu"]))(out, y).item()
    assert default == pytest.approx(sum((a - b) ** 2 for a, b in zip(out.tolist(), y.tolist())) / 3, rel=1e-6)


def test_mnrl_equals_the_cross_entropy_loop_over_in_batch_negatives():
    g = torch.Generator().manual_seed(1)
    for n in (2, 3, 7):
        u, v = torch.randn(n, 6, generator=g, dtype=torch.float64), torch.randn(n, 6, generator=g, dtype=torch.float64)
        got = pair_losses.mnrl_loss(u, v).item()
        assert got == pytest.approx(mnrl_by_loops(u.tolist(), v.tolist()), rel=1e-5)
    with pytest.raises(ValueError, match="n >= 2"):
        pair_losses.mnrl_loss(torch.randn(1, 6), torch.randn(1, 6))


PAIRS = [("What is the photosynthesis of algae?", "How do algae do photosynthesis?", 1),
         ("What are typical snacks in Lisbon?", "Which museum should I visit in Porto?", 0),
         ("How do I learn Python quickly?", "What is the fastest way to learn Python?", 1),
         ("Is it going to rain tomorrow in the capital city of Norway?", "Will Oslo get rain tomorrow?", 1),
         ("Why is the sky blue?", "How tall is Mount Everest?", 0)]


def quora_examples(pairs):
    return [dict(id=f"q{i}", sentence1=a, sentence2=b, label=y) for i, (a, b, y) in enumerate(pairs)]


def test_quora_mnrl_on_a_cross_encoder_batch_encodes_each_duplicate_sentence_on_its_own(tiny_checkpoint):
    tok = Tokenizer.from_pretrained(tiny_checkpoint)
    model = MultitaskBert(BertModel.from_pretrained(tiny_checkpoint), pair_mode="cross").eval()
    enc = encode_examples(tok, quora_examples(PAIRS), "quora", cross_encoder=True, sentences=True)
    batch = collate(enc, tok.pad_id)
    got = pair_losses.quora_mnrl(model, batch).item()

    def vector(ids):  # one unpadded sentence -> the mean of its token vectors
        x = torch.as_tensor(ids, dtype=torch.long)[None]  # (1, T)
        with torch.no_grad():
            return model.encoder(x, torch.ones_like(x), torch.zeros_like(x))["last_hidden_state"][0].mean(0).tolist()

    dups = [e for e in enc if e["label"] == 1]
    want = mnrl_by_loops([vector(e["input_ids_1"]) for e in dups], [vector(e["input_ids_2"]) for e in dups])
    assert got == pytest.approx(want, rel=1e-4)
    one = collate(encode_examples(tok, quora_examples(PAIRS[:2]), "quora", cross_encoder=True, sentences=True),
                  tok.pad_id)
    assert pair_losses.quora_mnrl(model, one).item() == 0.0  # a single duplicate: no negative, contributes 0


def test_mnrl_sentence_encodings_exist_only_when_it_is_on_and_keep_the_batches(tiny_checkpoint):
    tok = Tokenizer.from_pretrained(tiny_checkpoint)
    base = ["--model", str(tiny_checkpoint), "--data-dir", str(FIXTURE_DATA), "--device", "cpu"]
    off = load_split(options.parse_args(base), tok, "quora", "train")
    on_args = options.parse_args(base + ["--quora-mnrl", "0.5"])
    on = load_split(on_args, tok, "quora", "train")
    assert all("input_ids_1" not in e for e in off) and "inputs1" not in collate(off, tok.pad_id)
    assert all("input_ids_1" in e and "input_ids" in e for e in on)
    both = collate(on, tok.pad_id)
    assert {"inputs", "inputs1", "inputs2"} <= set(both)
    for k in ("input_ids", "token_type_ids"):  # the cross-encoder input is the one without the option
        assert torch.equal(both["inputs"][k], collate(off, tok.pad_id)["inputs"][k])
    assert example_lengths(on) == example_lengths(off)  # bucketing key: the same batches
    singles = encode_examples(tok, load_task("quora", "train", FIXTURE_DATA).examples, "quora")  # a bi-encoder's
    for k in ("input_ids_1", "input_ids_2"):
        assert [list(e[k]) for e in on] == [list(e[k]) for e in singles]
    assert all("input_ids_1" not in e for e in load_split(on_args, tok, "quora", "dev"))  # training only


def run(tmp_path, ckpt, name, *extra):
    out = tmp_path / name
    run_multitask.main(["--model", str(ckpt), "--data-dir", str(FIXTURE_DATA), "--device", "cpu", "--preset", "quick",
                        "--amp", "none", "--epochs", "2", "--batch-size", "4", "--threads", "1", "--out-dir", str(out),
                        "--predictions-dir", str(out / "predictions"), *extra])
    return load_safetensors(out / "best" / "model.safetensors")


def spy(monkeypatch, module, name: str) -> list:
    """Record every call of module.name made while gradients are on (training, not evaluation)."""
    real, calls = getattr(module, name), []

    def recorded(*a, **k):
        value = real(*a, **k)
        if torch.is_grad_enabled():
            calls.append(value.item())
        return value

    monkeypatch.setattr(module, name, recorded)
    return calls


def test_the_options_change_the_training_losses_and_so_the_weights(tmp_path, tiny_checkpoint, monkeypatch):
    plain = run(tmp_path, tiny_checkpoint, "plain")
    sts_mse = []
    real = tasks.loss_from_output
    monkeypatch.setattr(tasks, "loss_from_output",
                        lambda task, out, y: sts_mse.append(task) or real(task, out, y) if task == "sts"
                        else real(task, out, y))
    cosent, mnrl = spy(monkeypatch, tasks, "cosent_loss"), spy(monkeypatch, pair_losses, "mnrl_loss")
    trained = run(tmp_path, tiny_checkpoint, "pair", "--sts-loss", "cosent", "--quora-mnrl", "0.5")
    assert cosent and not sts_mse, "--sts-loss cosent did not replace the MSE of sts"
    assert mnrl and all(v > 0 for v in mnrl), "--quora-mnrl never added its loss"
    assert any(not torch.equal(plain[k], trained[k]) for k in plain if k.startswith("encoder."))


def test_bad_values_and_tasks_without_the_loss_are_refused(capsys):
    for argv, message in [(["--quora-mnrl", "-1"], "--quora-mnrl -1.0: must be a weight of 0 (off) or more"),
                          (["--quora-mnrl", "inf"], "--quora-mnrl inf: must be"),
                          (["--sts-loss", "l1"], "invalid choice: 'l1'"),
                          (["--tasks", "sst,sts", "--quora-mnrl", "1"], "add quora to --tasks"),
                          (["--tasks", "sst", "--sts-loss", "cosent"], "add sts to --tasks")]:
        with pytest.raises(SystemExit) as e:
            options.parse_args(["--device", "cpu", *argv])
        assert e.value.code == 2 and message in capsys.readouterr().err, argv
    with pytest.raises(SystemExit):
        run_distill.parse_args(["all", "--device", "cpu", "--sts-loss", "cosent"])
    assert "supports neither --sts-loss cosent nor --quora-mnrl" in capsys.readouterr().err


def test_help_explains_both_options(capsys):
    with pytest.raises(SystemExit):
        options.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--sts-loss {mse,cosent}" in text and "Su 2022" in text
    assert "--quora-mnrl WEIGHT" in text and "fewer than 2 duplicates add 0" in text and "0: off" in text
