"""--rdrop: R-Drop (Liang et al. 2021). The task table's divergences against torch's kl_div, the
loss against a plain forward without dropout, its gradient with dropout, and a run of the command."""
import pytest
import torch
import torch.nn.functional as F

from reliability_cases import FIXTURE_DATA, TOKENIZER, base_argv, make_tiny_checkpoint
from data.batching import collate
from minbert import BertModel, Tokenizer
from training import run_multitask
from training.multitask import tasks
from training.multitask.recipe import build_model, doubled, rdrop_loss, task_output
from training.multitask.splits import load_split


def reference_symmetric_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """1/2 (KL(P||Q) + KL(Q||P)) of class distributions given by log-probabilities, by F.kl_div."""
    p, q = p_logits.log_softmax(-1), q_logits.log_softmax(-1)
    kl_pq = F.kl_div(q, p, reduction="batchmean", log_target=True)  # KL(P || Q)
    kl_qp = F.kl_div(p, q, reduction="batchmean", log_target=True)
    return 0.5 * (kl_pq + kl_qp)


def test_sst_divergence_is_the_symmetric_kl_of_the_softmaxes():
    torch.manual_seed(0)
    a, b = torch.randn(16, 5) * 3, torch.randn(16, 5) * 3
    torch.testing.assert_close(tasks.TASKS["sst"].divergence(a, b), reference_symmetric_kl(a, b))
    assert tasks.TASKS["sst"].divergence(a, a.clone()) == 0


def test_quora_divergence_is_the_symmetric_kl_of_the_bernoullis():
    torch.manual_seed(0)
    a, b = torch.randn(16) * 4, torch.randn(16) * 4
    two_class = lambda x: torch.stack([torch.zeros_like(x), x], -1)  # softmax([0, x]) = (1 - sigmoid x, sigmoid x)
    torch.testing.assert_close(tasks.TASKS["quora"].divergence(a, b),
                               reference_symmetric_kl(two_class(a), two_class(b)))
    assert tasks.TASKS["quora"].divergence(a, a.clone()) == 0
    big = torch.tensor([30.0, -30.0])  # saturated sigmoids: finite, no log(0)
    assert torch.isfinite(tasks.TASKS["quora"].divergence(big, -big))


def test_sts_divergence_is_the_squared_difference():
    torch.manual_seed(0)
    a, b = torch.rand(16) * 5, torch.rand(16) * 5
    torch.testing.assert_close(tasks.TASKS["sts"].divergence(a, b), F.mse_loss(a, b))
    assert tasks.TASKS["sts"].divergence(a, a.clone()) == 0


# ----------------------------------------------------------------------------- the loss on a model


def tiny_model(tmp_path, dropout: float, *modes: str):
    """A tiny model in train mode, its options, and a batch of 6 training examples per task."""
    ckpt = make_tiny_checkpoint(tmp_path / f"tiny-{dropout}", dropout=dropout)
    args = run_multitask.parse_args(["--device", "cpu", "--amp", "none", "--data-dir", str(FIXTURE_DATA),
                                     "--max-length", "64", "--dropout", str(dropout), *modes])
    torch.manual_seed(0)
    model = build_model(args, BertModel.from_pretrained(ckpt))
    tok = Tokenizer.from_pretrained(TOKENIZER)
    batches = {t: collate(load_split(args, tok, t, "train")[:6], tok.pad_id) for t in args.tasks}
    return model.train(), args, batches


@pytest.mark.parametrize("modes", [[], ["--pair-mode", "bi", "--sts-mode", "cross"]])
def test_without_dropout_the_rdrop_loss_is_the_plain_loss(tmp_path, modes):
    model, args, batches = tiny_model(tmp_path, 0.0, *modes)
    for t, batch in batches.items():
        labels = batch["labels"]
        x = [{k: v.clone() for k, v in part.items()} for part in tasks.inputs(batch)]
        out = model(t, *x)  # one plain forward of the batch, loss by torch's own functions
        plain = {"sst": lambda: F.cross_entropy(out, labels),
                 "quora": lambda: F.binary_cross_entropy_with_logits(out, labels.float()),
                 "sts": lambda: F.mse_loss(out, labels)}[t]()
        torch.testing.assert_close(rdrop_loss(model, t, batch, labels, 1.0, args), plain, rtol=1e-5, atol=1e-6)


def grads(model, loss) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("task", ["sst", "quora", "sts"])
def test_with_dropout_the_divergence_changes_the_gradient(tmp_path, task):
    """The same dropout masks (same seed) with alpha 1 and alpha 0: only the divergence term differs."""
    model, args, batches = tiny_model(tmp_path, 0.3)
    batch, labels = batches[task], batches[task]["labels"]
    torch.manual_seed(1)
    with_div = grads(model, rdrop_loss(model, task, batch, labels, 1.0, args))
    torch.manual_seed(1)
    without = grads(model, rdrop_loss(model, task, batch, labels, 0.0, args))
    torch.manual_seed(1)
    again = grads(model, rdrop_loss(model, task, batch, labels, 0.0, args))
    assert torch.equal(without, again)  # the comparison is fair: the same masks give the same gradient
    assert not torch.allclose(with_div, without, rtol=1e-4, atol=1e-7)
    # two masks: the two halves of the doubled batch's forward are different outputs of the same examples
    out1, out2 = task_output(model, task, doubled(batch), args).chunk(2)
    assert out1.shape[0] == len(labels) and not torch.allclose(out1, out2)


def test_a_run_with_rdrop_trains_and_records_its_option(tmp_path):
    ckpt = make_tiny_checkpoint(tmp_path / "tiny", dropout=0.1)
    out = tmp_path / "run"
    plain = run_multitask.main(base_argv(ckpt, FIXTURE_DATA, tmp_path / "plain"))
    rdrop = run_multitask.main(base_argv(ckpt, FIXTURE_DATA, out) + ["--rdrop", "1"])
    assert rdrop["history"] and rdrop["dev"].keys() == plain["dev"].keys()
    logged = [[line for line in (d / "log.jsonl").read_text().splitlines() if '"loss_' in line]
              for d in (tmp_path / "plain", out)]
    assert logged[0] and len(logged[0]) == len(logged[1])
    assert logged[0] != logged[1], "--rdrop did not reach the training loss"


def test_bad_rdrop_is_refused_with_the_option_named(capsys):
    with pytest.raises(SystemExit):
        run_multitask.parse_args(["--device", "cpu", "--rdrop", "-1"])
    assert "--rdrop -1.0: must be 0 (off) or a positive weight" in capsys.readouterr().err
