"""Every trainer learns: on a small task whose label follows from a keyword, a tiny random BERT must
clearly lower its training loss and reach a training score well above chance within seconds of CPU.

The data are written here in the course's CSV format, with the dev files a copy of the training
files, so the dev score each trainer reports is its training accuracy (or correlation). The losses
are the raw per-step values, taken by wrapping training.engine.loop.fit's on_step (the trainers import fit
by name). tests/test_mutations.py runs this file with every gradient's sign flipped and with a
zero_grad that does nothing, and expects it to fail.
"""
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from training.engine import loop as loop_module
from training import run_classifier, run_distill, run_gan, run_multitask
from training.methods import distill as distill_module

FIXTURE_DATA = Path(__file__).parent / "fixtures" / "data" / "course"
FILLER = ("the film story plot actor scene music cast script ending camera pace tone crowd city night day "
          "road house river song book letter friend").split()
SENTIMENT = ["awful", "dull", "fine", "good", "superb"]  # SST label = index of the keyword in the sentence
TOPICS = ["tea", "bike", "rain", "chess", "bread"]


def words(rng: random.Random, n: int, *keep: str) -> str:
    w = rng.sample(FILLER, n) + list(keep)
    rng.shuffle(w)
    return " ".join(w)


def write_task_files(d: Path, n: int = 40, seed: int = 0) -> Path:
    """sst: the label is the sentiment keyword's index; quora: a paraphrase iff both questions name
    the same topic (and the second says "exactly"); sts: the similarity is the topic's index (0..4) plus one for a shared topic,
    so it is both learnable and spread over 0..5. cfimdb: sst's keywords 0/1 vs 3/4."""
    rng = random.Random(seed)
    d.mkdir(parents=True, exist_ok=True)
    sst, cfimdb, quora, sts = [], [], [], []
    for i in range(n):
        label = i % 5
        sst.append(f"{i}\tsst{i:04d}\t {words(rng, 5, SENTIMENT[label])} .\t{label}")
        pos = i % 2
        cfimdb.append(f"{i}\tcfi{i:04d}\t {words(rng, 5, SENTIMENT[3 + rng.randrange(2)] if pos else SENTIMENT[rng.randrange(2)])} .\t{pos}")
        a, same = rng.randrange(5), i % 2 == 0
        b = a if same else (a + 1 + rng.randrange(4)) % 5
        cue = "exactly" if same else "also"  # a keyword besides the topic: a quick cue for the single-task teacher
        quora.append(f"{i}\tqqp{i:04d}\tis {words(rng, 3, TOPICS[a])}?\tis {cue} {words(rng, 3, TOPICS[b])}?\t{float(same)}")
        a = i % 5
        shared = rng.random() < 0.5
        b = a if shared else (a + 1 + rng.randrange(4)) % 5
        sts.append(f"{i}\tsts{i:04d}\t{words(rng, 3, TOPICS[a])}\t{words(rng, 3, TOPICS[b])}\t{a + shared:.1f}")
    files = {"ids-sst": ("\tid\tsentence\tsentiment", sst), "ids-cfimdb": ("\tid\tsentence\tsentiment", cfimdb),
             "quora": ("\tid\tsentence1\tsentence2\tis_duplicate", quora),
             "sts": ("\tid\tsentence1\tsentence2\tsimilarity", sts)}
    for stem, (header, rows) in files.items():
        for split in ("train", "dev"):  # dev = train: the reported dev score is the training score
            (d / f"{stem}-{split}.csv").write_text("\n".join([header, *rows]) + "\n")
        shutil.copy(FIXTURE_DATA / f"{stem}-test-student.csv", d / f"{stem}-test-student.csv")
    return d


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    return write_task_files(tmp_path_factory.mktemp("learnable"))


@pytest.fixture
def step_losses(monkeypatch):
    """One {loss name: [value of every step]} per fit() the trainers call during the test."""
    fits: list[dict[str, list[float]]] = []
    real_fit = loop_module.fit

    def fit(loop, *a, **k):
        seen, inner = {}, loop.on_step
        fits.append(seen)

        def on_step(step, values):
            for name, v in values.items():
                seen.setdefault(name, []).append(float(v))
            if inner:
                inner(step, values)
        loop.on_step = on_step
        return real_fit(loop, *a, **k)

    for module in (run_multitask, run_classifier, run_gan, distill_module):
        monkeypatch.setattr(module, "fit", fit)
    return fits


def assert_dropped(losses: dict[str, list[float]], factor: float = 0.7, k: int = 5) -> None:
    """Each loss: the mean of its last k steps is below factor x the mean of its first k."""
    assert losses, "no training step was seen"
    for name, values in losses.items():
        first, last = np.mean(values[:k]), np.mean(values[-k:])
        assert last < factor * first, f"{name}: the training loss did not drop ({first:.4f} -> {last:.4f}): {values}"


# --clip 0: clipping rescales .grad in place, which would turn a .grad that is never zeroed into a
# damped running sum (a momentum) that still learns; without it the sum grows and learning fails.
COMMON = ["--device", "cpu", "--threads", "1", "--seed", "1", "--clip", "0"]


def test_multitask_learns_every_task(tmp_path, tiny_checkpoint, task_dir, step_losses):
    out = tmp_path / "run"
    result = run_multitask.main([
        "--model", str(tiny_checkpoint), "--data-dir", str(task_dir), *COMMON, "--amp", "none", "--epochs", "20",
        "--batch-size", "8", "--lr", "3e-3", "--layer-decay", "1", "--warmup", "0", "--dropout", "0",
        "--sts-mode", "cross", "--out-dir", str(out), "--predictions-dir", str(out / "predictions")])
    [losses] = step_losses
    assert set(losses) == {"sst", "quora", "sts"}
    assert_dropped(losses)
    train = result["history"][-1]
    assert train["sst"] > 0.6, f"sst training accuracy {train['sst']} (chance 0.2)"
    assert train["quora"] > 0.8, f"quora training accuracy {train['quora']} (chance 0.5)"
    assert train["sts"] > 0.7, f"sts training correlation {train['sts']} (chance 0)"


def test_single_task_classifier_learns(tmp_path, tiny_checkpoint, task_dir, step_losses):
    out = tmp_path / "run"
    record = run_classifier.main([
        "--model", str(tiny_checkpoint), "--data-dir", str(task_dir), *COMMON, "--task", "sst", "--mode", "finetune",
        "--epochs", "15", "--batch-size", "8", "--lr", "3e-3", "--warmup", "0", "--dropout", "0",
        "--out-dir", str(out), "--predictions-dir", str(out / "predictions"), "--no-save"])
    [losses] = step_losses
    assert_dropped(losses)
    assert record["history"][-1]["dev_acc"] > 0.6, f"training accuracy {record['history']} (chance 0.2)"


def test_distillation_teachers_and_student_learn(tmp_path, tiny_checkpoint, task_dir, step_losses):
    record = run_distill.main([
        "student", "--teachers-dir", str(tmp_path / "teachers"), "--bam-dir", str(tmp_path / "bam"),
        "--model", str(tiny_checkpoint), "--data-dir", str(task_dir), *COMMON, "--amp", "none", "--epochs", "20",
        "--batch-size", "8", "--lr", "5e-3", "--layer-decay", "1", "--warmup", "0", "--dropout", "0",
        "--sts-mode", "cross"])
    assert len(step_losses) == 4, "three single-task teachers, then the student"
    for losses in step_losses:
        assert_dropped(losses)
    for name in ("single", "annealed"):
        train = record[name]
        assert train["sst"] > 0.6 and train["quora"] > 0.8 and train["sts"] > 0.7, f"{name}: training scores {train}"


def test_gan_bert_discriminator_learns(tmp_path, tiny_checkpoint, task_dir, step_losses):
    record = run_gan.main([
        "--model", str(tiny_checkpoint), "--data-dir", str(task_dir), *COMMON,
        "--task", "sst", "--method", "gan", "--labelled", "0.5", "--steps", "150",
        "--batch-size", "8", "--lr", "3e-3", "--head-lr", "3e-3", "--warmup", "0", "--dropout", "0",
        "--out-dir", str(tmp_path / "gan")])
    [losses] = step_losses
    assert_dropped({"d_loss": losses["d_loss"]})  # G's loss rises as D learns: a game, not a descent
    assert record["dev_acc"] > 0.6, f"training accuracy {record['dev_acc']} (chance 0.2)"
