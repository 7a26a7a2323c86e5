"""Born-Again distillation: the teacher-annealed targets and losses (training/methods/distill_targets.py) against
hand computation, and training/run_distill.py end to end on the fixture files with a tiny random BERT."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from minbert.safetensors import load_safetensors
from heads.multitask_bert import MultitaskBert
from training.multitask import options
from training import run_distill, run_multitask, run_predict
from training.methods.distill_targets import annealed_lambda, distill_loss, mixed_targets

FIXTURE_DATA = Path(__file__).parent / "fixtures" / "data" / "course"


def test_lambda_rises_linearly_from_zero_at_the_start_to_one_at_the_end():
    total = 40
    values = [annealed_lambda(s, total) for s in range(total + 1)]
    assert values[0] == 0.0 and values[-1] == 1.0
    assert values[10] == pytest.approx(0.25) and values[20] == pytest.approx(0.5)
    steps = [b - a for a, b in zip(values, values[1:])]
    assert all(d == pytest.approx(1 / total) for d in steps)
    assert annealed_lambda(total + 5, total) == 1.0  # clamped after the end
    with pytest.raises(ValueError, match="total_steps"):
        annealed_lambda(0, 0)


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_sst_targets_mix_the_one_hot_gold_with_teacher_probabilities(lam):
    gold = torch.tensor([0, 3])
    teacher = torch.tensor([[0.1, 0.2, 0.3, 0.2, 0.2], [0.5, 0.1, 0.1, 0.1, 0.2]])
    one_hot = torch.tensor([[1.0, 0, 0, 0, 0], [0, 0, 0, 1.0, 0]])
    expected = lam * one_hot + (1 - lam) * teacher
    got = mixed_targets("sst", gold, teacher, lam)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got.sum(-1), torch.ones(2))  # still distributions


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_quora_and_sts_targets_mix_scalars(lam):
    torch.testing.assert_close(mixed_targets("quora", torch.tensor([1, 0]), torch.tensor([0.8, 0.3]), lam),
                               torch.tensor([lam * 1 + (1 - lam) * 0.8, (1 - lam) * 0.3]))
    torch.testing.assert_close(mixed_targets("sts", torch.tensor([4.0, 1.0]), torch.tensor([3.0, 2.5]), lam),
                               torch.tensor([4 * lam + 3 * (1 - lam), lam + 2.5 * (1 - lam)]))


def test_mixed_targets_reject_bad_input():
    with pytest.raises(ValueError, match="lam"):
        mixed_targets("sts", torch.zeros(2), torch.zeros(2), 1.5)
    with pytest.raises(ValueError, match="sst"):
        mixed_targets("sst", torch.zeros(2, dtype=torch.long), torch.zeros(2), 0.5)
    with pytest.raises(ValueError, match="unknown task"):
        mixed_targets("nli", torch.zeros(2), torch.zeros(2), 0.5)


# The plain task losses, from PyTorch (not the project's training/multitask/tasks.py, a graded step).
PLAIN_LOSS = {"sst": lambda out, y: F.cross_entropy(out, y),
              "quora": lambda out, y: F.binary_cross_entropy_with_logits(out, y.float()),
              "sts": lambda out, y: F.mse_loss(out, y.float())}


def test_with_gold_targets_the_loss_is_the_plain_task_loss():
    torch.manual_seed(0)
    cases = {"sst": (torch.randn(4, 5), torch.tensor([0, 4, 2, 2]), torch.rand(4, 5).softmax(-1)),
             "quora": (torch.randn(4), torch.tensor([1, 0, 0, 1]), torch.rand(4)),
             "sts": (torch.rand(4) * 5, torch.tensor([0.5, 4.0, 2.2, 3.0]), torch.rand(4) * 5)}
    for task, (out, gold, teacher) in cases.items():
        target = mixed_targets(task, gold, teacher, 1.0)
        torch.testing.assert_close(distill_loss(task, out, target), PLAIN_LOSS[task](out, gold))


def test_soft_losses_match_hand_computation():
    logits = torch.tensor([[1.0, 0.0, -1.0, 0.5, 2.0]])
    target = torch.tensor([[0.1, 0.2, 0.3, 0.2, 0.2]])
    log_p = logits - torch.log(torch.exp(logits).sum())
    torch.testing.assert_close(distill_loss("sst", logits, target), -(target * log_p).sum())
    z, t = torch.tensor([0.3, -1.2]), torch.tensor([0.9, 0.25])
    p = torch.sigmoid(z)
    torch.testing.assert_close(distill_loss("quora", z, t), -(t * p.log() + (1 - t) * (1 - p).log()).mean())
    torch.testing.assert_close(distill_loss("sts", torch.tensor([1.0, 3.0]), torch.tensor([2.0, 3.5])),
                               torch.tensor((1 + 0.25) / 2))
    with pytest.raises(ValueError, match="shape"):
        distill_loss("sst", logits, target[:, :4])


# ---------------------------------------------------------------------------- run_distill.py end to end



def distill_main(tmp_path, ckpt, *argv):
    return run_distill.main([*argv, "--model", str(ckpt), "--data-dir", str(FIXTURE_DATA), "--device", "cpu", "--preset", "quick",
                             "--amp", "none",
                         "--epochs", "1", "--batch-size", "2", "--threads", "1", "--lr", "1e-3",
                         "--teachers-dir", str(tmp_path / "teachers"), "--bam-dir", str(tmp_path / "bam")])


@pytest.fixture(scope="module")
def all_run(tmp_path_factory, tiny_checkpoint):
    tmp = tmp_path_factory.mktemp("bam")
    record = distill_main(tmp, tiny_checkpoint, "all", "--variants", "multi,annealed,0,0.5,1")
    return tmp, record


def test_all_records_every_variant_with_every_task(all_run):
    tmp, record = all_run
    for name in ("single", "multi", "annealed", "lambda=0", "lambda=0.5", "lambda=1"):
        assert set(record[name]) == {"sst", "quora", "sts", "overall"}, name
    saved = json.loads((tmp / "bam" / "all.json").read_text())
    assert saved["annealed"] == record["annealed"] and saved["wall_seconds"] >= 0
    lam = [h["lambda"] for h in record["history"]["annealed"]]
    assert 0.5 < lam[-1] < 1.0  # the last step's weight: (total - 1) / total
    for t in ("sst", "para", "sts"):
        lines = (tmp / "bam" / "annealed" / "predictions" / f"{t}-test-output.csv").read_text().splitlines()
        assert len(lines) > 1


def test_teacher_outputs_cover_every_training_example_in_the_right_form(all_run):
    tmp, _ = all_run
    outputs = json.loads((tmp / "teachers" / "teacher_outputs.json").read_text())
    from data.datasets import load_task
    for t in ("sst", "quora", "sts"):
        ids = {e["id"] for e in load_task(t, "train", FIXTURE_DATA).examples}
        assert set(outputs[t]) == ids
    assert all(len(p) == 5 and abs(sum(p) - 1) < 1e-4 for p in outputs["sst"].values())
    assert all(0 < p < 1 for p in outputs["quora"].values())
    assert all(0 <= s <= 5 for s in outputs["sts"].values())
    for t in ("sst", "quora", "sts"):
        assert (tmp / "teachers" / t / "model.safetensors").is_file()


def test_only_the_targets_differ_between_variants(all_run):
    tmp, _ = all_run
    weights = {v: load_safetensors(tmp / "bam" / v / "model.safetensors") for v in ("multi", "lambda_1", "lambda_0")}
    assert all(torch.equal(weights["multi"][k], weights["lambda_1"][k]) for k in weights["multi"])
    assert not all(torch.equal(weights["multi"][k], weights["lambda_0"][k]) for k in weights["multi"])


def test_the_multi_student_is_run_multitasks_default_run(all_run, tiny_checkpoint):
    """The `multi` student (gold labels only) trains exactly what run_multitask.py trains with the same
    options, so a plain multitask run stands for it (docs/RESULTS.md's BAM! table uses the full default run)."""
    tmp, _ = all_run
    run_multitask.main(["--model", str(tiny_checkpoint), "--data-dir", str(FIXTURE_DATA), "--device", "cpu",
                        "--preset", "quick", "--amp", "none", "--epochs", "1", "--batch-size", "2", "--threads", "1",
                        "--lr", "1e-3", "--out-dir", str(tmp / "mt"), "--predictions-dir", str(tmp / "mt-pred")])
    plain = load_safetensors(tmp / "mt" / "best" / "model.safetensors")
    student = load_safetensors(tmp / "bam" / "multi" / "model.safetensors")
    assert plain.keys() == student.keys() and all(torch.equal(plain[k], student[k]) for k in plain)


def test_teachers_and_students_are_run_folders_that_run_predict_reads(all_run, capsys):
    """run_predict.py, loading each folder on its own, scores the dev file as the trainer did and writes
    the trainer's dev predictions."""
    tmp, record = all_run
    printed = {"sst": "sst accuracy", "sts": "sts Pearson r"}
    files = {"sst": "ids-sst-dev.csv", "sts": "sts-dev.csv"}
    rows = lambda path: sorted(path.read_text().splitlines()[1:])  # noqa: E731
    for folder, task, dev in ((tmp / "teachers" / "sts", "sts", record["single"]),
                              (tmp / "bam" / "annealed", "sts", record["annealed"]),
                              (tmp / "bam" / "annealed", "sst", record["annealed"])):
        assert isinstance(MultitaskBert.from_run(folder), MultitaskBert)
        run_predict.main(["--run", str(folder), "--task", task, "--device", "cpu",
                          "--input", str(FIXTURE_DATA / files[task]), "--output", str(tmp / "p.csv")])
        out = "".join(capsys.readouterr())  # the score goes to stderr
        assert f"{printed[task]} {dev[task]:.4f}" in out, out
        assert rows(tmp / "p.csv") == rows(folder / "predictions" / f"{task}-dev-output.csv")
        saved = json.loads((folder / "options.json").read_text())  # the kept epoch's scores: the prediction files'
        assert saved["epoch"] == 1 and saved["dev"][task] == dev[task]
    assert json.loads((tmp / "bam" / "annealed" / "options.json").read_text())["options"]["lambda"] == "annealed"


def test_student_command_reuses_the_stored_teachers(all_run, tiny_checkpoint):
    tmp, first = all_run
    ckpt = tmp / "teachers" / "sst" / "model.safetensors"
    mtime = ckpt.stat().st_mtime_ns
    record = distill_main(tmp, tiny_checkpoint, "student", "--fixed-lambda", "0")
    assert ckpt.stat().st_mtime_ns == mtime
    assert record["single"] == first["single"]
    assert record["lambda=0"] == first["lambda=0"]  # same seed, same teachers: the same student
    assert json.loads((tmp / "bam" / "student-lambda_0.json").read_text())["lambda=0"] == record["lambda=0"]


def test_teachers_trained_with_other_heads_are_refused(all_run, tiny_checkpoint):
    tmp, _ = all_run
    with pytest.raises(SystemExit, match="retrain-teachers"):
        distill_main(tmp, tiny_checkpoint, "student", "--pair-mode", "bi")


def test_bad_options_exit_with_a_clear_message(capsys):
    with pytest.raises(SystemExit):
        run_distill.parse_args(["student", "--device", "cpu", "--fixed-lambda", "2"])
    assert "--fixed-lambda" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_distill.parse_args(["all", "--device", "cpu", "--pcgrad"])
    assert "pcgrad" in capsys.readouterr().err


@pytest.mark.skipif(not options.cpu_has_bf16(), reason="this CPU has no native bf16 (AVX512-BF16/AMX)")
def test_amp_bf16_on_cpu_runs_the_matrix_products_in_bf16(tmp_path, tiny_checkpoint):
    """--amp bf16 on a CPU with native bf16: the Linear layers of the training steps compute in bf16
    (the old loop entered torch.autocast("cuda") whatever the device, so CPU steps ran in fp32)."""
    seen = []

    def hook(module, args, output):
        if isinstance(module, torch.nn.Linear) and torch.is_grad_enabled():
            seen.append(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        run_distill.main(["teachers", "--tasks", "sst", "--model", str(tiny_checkpoint), "--data-dir", str(FIXTURE_DATA),
                          "--preset", "quick", "--amp", "bf16", "--device", "cpu", "--epochs", "1", "--batch-size", "2",
                          "--threads", "1", "--teachers-dir", str(tmp_path / "teachers"), "--bam-dir", str(tmp_path)])
    finally:
        handle.remove()
    assert seen and all(d == torch.bfloat16 for d in seen), f"Linear outputs in training: {sorted(set(seen), key=str)}"
