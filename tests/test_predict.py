"""A self-contained run folder (MultitaskBert.save_run / from_run) and training/run_predict.py.

The reference for every prediction is the in-memory model that was saved, run one example at a
time on the project's tokenizer output, with the head's output mapped by hand (softmax, sigmoid,
argmax): the script's batching, length sorting, reordering and file writing are what is under test.
"""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from heads.multitask_bert import MultitaskBert, read_run
from minbert import BertModel, CheckpointError, Tokenizer
from training import run_predict
from training.multitask import tasks

REPO = Path(__file__).resolve().parents[1]
FIXTURE_DATA = REPO / "tests" / "fixtures" / "data" / "course"
OPTIONS = {"tasks": ["sst", "quora", "sts"], "max_length": 32, "model": "tiny", "lr": 1e-4}
# Hand-written items of very different lengths, so length-sorted batches differ from the input order.
SENTENCES = ["Fine.", "A slow, sad and rather long film about a lighthouse keeper and his three cats at sea.",
             "Loud.", "The actors seem to enjoy themselves , and so did we .", "Meh", "Not bad at all."]
PAIRS = [("A dog runs.", "A dog is running through the long wet grass of a park near the river."),
         ("Two men talk.", "Two men are talking."), ("How do I bake bread?", "What is the capital of Peru?"),
         ("A woman slices an onion on a wooden board in a small kitchen.", "Someone cuts an onion."),
         ("It rains.", "It is raining.")]


def make_model(ckpt: Path, seed: int = 0, **heads) -> MultitaskBert:
    torch.manual_seed(seed)
    return MultitaskBert(BertModel.from_pretrained(ckpt), **heads).eval()


@pytest.fixture(scope="module")
def run(tiny_checkpoint, tmp_path_factory):
    """(run folder, the saved model, its tokenizer): bi-encoder quora, cosine sts, mean-pooled sst."""
    model = make_model(tiny_checkpoint, sentiment_pooling="mean", pair_mode="bi", sts_mode="cosine")
    tok = Tokenizer.from_pretrained(tiny_checkpoint)
    d = tmp_path_factory.mktemp("run") / "best"
    model.save_run(d, tok, OPTIONS, {"sst": 0.25, "overall": 0.5}, 2)
    return d, model, tok


def one_by_one(model, tok, task, items, max_length=OPTIONS["max_length"]) -> torch.Tensor:
    """The reference: each item alone through the model's own methods."""
    rows = []
    with torch.no_grad():
        for item in items:
            if task == "sst":
                rows.append(model.predict_sentiment(tok([item], max_length=max_length))[0])
            elif (model.pair_mode if task == "quora" else model.sts_mode) == "cross":
                rows.append(model(task, tok([item[0]], pairs=[item[1]], max_length=max_length))[0])
            else:
                a, b = tok([item[0]], max_length=max_length), tok([item[1]], max_length=max_length)
                rows.append(model(task, a, b)[0])
    return torch.stack(rows)


# ---------------------------------------------------------------------------- the run folder


@pytest.mark.parametrize("heads", [dict(sentiment_pooling="cls", pair_mode="cross", sts_mode="cross", dropout=0.3),
                                   dict(sentiment_pooling="pooler", pair_mode="bi", sts_mode="regressor")])
def test_from_run_rebuilds_every_head_without_the_command_line(tiny_checkpoint, tmp_path, heads):
    model = make_model(tiny_checkpoint, seed=3, **heads)
    tok = Tokenizer.from_pretrained(tiny_checkpoint)
    model.save_run(tmp_path / "best", tok, OPTIONS, {"overall": 0.1}, 1)
    loaded = MultitaskBert.from_run(tmp_path)  # the --out-dir is accepted too
    assert not loaded.training and loaded.head_config == model.head_config
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    for task, items in (("sst", SENTENCES), ("quora", PAIRS), ("sts", PAIRS)):
        torch.testing.assert_close(one_by_one(loaded, tok, task, items), one_by_one(model, tok, task, items))


def test_run_folder_holds_config_tokenizer_heads_and_options(run):
    d, model, tok = run
    config = json.loads((d / "config.json").read_text())
    assert config["hidden_size"] == model.encoder.config.hidden_size and config["model_type"] == "bert"
    assert "attn_implementation" not in config and "unpad" not in config  # runtime switches, not the checkpoint
    assert json.loads((d / "options.json").read_text()) == {"options": OPTIONS, "dev": {"sst": 0.25, "overall": 0.5},
                                                            "epoch": 2}
    info = read_run(d)
    assert info["tasks"] == OPTIONS["tasks"] and info["max_length"] == 32 and info["heads"]["sts_mode"] == "cosine"
    again = Tokenizer.from_pretrained(d)
    texts = SENTENCES + ["Ünïcode àccents, 中文 and [brackets]!"]
    assert again.encode_ids(texts) == tok.encode_ids(texts)
    assert again.model_max_length == tok.model_max_length


def test_a_second_save_replaces_the_run_and_leaves_nothing_behind(run, tmp_path):
    d0, model, tok = run
    d = tmp_path / "best"
    model.save_run(d, tok, OPTIONS, {"overall": 0.1}, 1)
    model.save_run(d, tok, OPTIONS, {"overall": 0.2}, 2)
    assert read_run(d)["epoch"] == 2 and read_run(d)["dev"] == {"overall": 0.2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]  # no .best.tmp / .best.old


def test_a_bad_run_folder_is_named_with_the_fix(run, tmp_path):
    with pytest.raises(CheckpointError, match="no such run folder"):
        read_run(tmp_path / "nowhere")
    old = tmp_path / "old"  # what run_multitask.py wrote before runs were self-contained
    old.mkdir()
    for f in ("model.safetensors", "options.json"):
        (old / f).write_bytes((run[0] / f).read_bytes())
    with pytest.raises(CheckpointError, match="lacks config.json, tokenizer.json, heads.json.*train it again"):
        read_run(old)
    (old / "heads.json").write_text("{not json")
    for f in ("config.json", "tokenizer.json"):
        (old / f).write_bytes((run[0] / f).read_bytes())
    with pytest.raises(CheckpointError, match="heads.json or options.json is damaged"):
        read_run(old)


# ---------------------------------------------------------------------------- run_predict.py


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.write_text("\t".join(["", *header]) + "\n"
                    + "".join("\t".join([str(i), *map(str, r)]) + "\n" for i, r in enumerate(rows)), encoding="utf-8")
    return path


@pytest.mark.parametrize("labelled", [True, False])
def test_a_course_file_in_gives_the_course_predictions_out_in_input_order(run, tmp_path, capsys, labelled):
    d, model, tok = run
    labels = [4.0, 4.8, 0.2, 3.5, 4.9]
    rows = [[f"sts-{i}", a, b] + ([y] if labelled else []) for i, ((a, b), y) in enumerate(zip(PAIRS, labels))]
    src = write_csv(tmp_path / "in.csv", ["id", "sentence1", "sentence2"] + (["similarity"] if labelled else []), rows)
    out = tmp_path / "pred.csv"
    result = run_predict.main(["--run", str(d), "--task", "sts", "--input", str(src), "--output", str(out),
                               "--batch-size", "2", "--device", "cpu"])
    expected = one_by_one(model, tok, "sts", PAIRS).clamp(0, 5).numpy()
    lines = out.read_text().splitlines()
    assert lines[0] == "id \t Predicted_Similiary "
    ids = [line.split(" , ")[0] for line in lines[1:]]
    values = np.array([float(line.split(" , ")[1]) for line in lines[1:]])
    assert ids == [f"sts-{i}" for i in range(len(PAIRS))]
    np.testing.assert_allclose(values, expected, atol=1e-4)  # written with 4 decimals
    if labelled:
        assert result["score"] == pytest.approx(float(np.corrcoef(expected, labels)[0, 1]), abs=1e-5)
        assert "sts Pearson r" in capsys.readouterr().err
    else:
        assert "score" not in result


def test_sentences_on_the_command_line_print_labels_with_probabilities(run, capsys):
    d, model, tok = run
    result = run_predict.main(["--run", str(d), "--task", "sst", "--batch-size", "4", "--device", "cpu", *SENTENCES])
    probs = one_by_one(model, tok, "sst", SENTENCES).softmax(-1)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(SENTENCES)
    for line, p, sentence in zip(lines, probs, SENTENCES):
        label, details, text = line.split("\t")
        assert text == sentence and label == tasks.SST_LABELS[int(p.argmax())]
        shown = [float(part.rsplit(" ", 1)[1]) for part in details.split(", ")]
        np.testing.assert_allclose(shown, p.numpy(), atol=5e-4)  # printed with 3 decimals
    assert result["predictions"].tolist() == probs.argmax(-1).tolist()


def test_pairs_on_stdin_print_the_paraphrase_probability(run, capsys, monkeypatch):
    d, model, tok = run
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(f"{a}\t{b}\n" for a, b in PAIRS) + "\n"))
    run_predict.main(["--run", str(d), "--task", "quora", "--batch-size", "2", "--device", "cpu"])
    p = torch.sigmoid(one_by_one(model, tok, "quora", PAIRS))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(PAIRS)  # the blank line is skipped
    for line, pi, (a, b) in zip(lines, p, PAIRS):
        verdict, shown, s1, s2 = line.split("\t")
        assert (s1, s2) == (a, b) and abs(float(shown) - pi.item()) < 5e-4
        assert verdict == ("paraphrase" if pi > 0.5 else "not a paraphrase")


@pytest.mark.parametrize("argv, stdin, message", [
    (["--task", "quora", "only one"], None, "even number of arguments"),
    (["--task", "sts"], "no tab on this line\n", "stdin line 1: --task sts needs two sentences separated by one tab"),
    (["--task", "sst", "--input", str(FIXTURE_DATA / "sts-dev.csv")], None, r"header lacks column\(s\) \['sentence'\]"),
])
def test_bad_input_stops_with_a_message_naming_it(run, monkeypatch, argv, stdin, message):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    with pytest.raises(SystemExit, match=message):
        run_predict.main(["--run", str(run[0]), "--device", "cpu", *argv])


def test_a_task_the_run_did_not_train_is_refused(run, tmp_path):
    d, model, tok = run
    model.save_run(tmp_path / "best", tok, dict(OPTIONS, tasks=["sst", "sts"]), {}, 1)
    with pytest.raises(SystemExit, match="trained on sst, sts, not quora: its quora head is untrained"):
        run_predict.main(["--run", str(tmp_path), "--task", "quora", "--device", "cpu", "a", "b"])


def test_the_script_runs_from_the_command_line(run):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, str(REPO / "training" / "run_predict.py"), "--run", str(run[0]),
                          "--task", "sts", "--device", "cpu"], input="A man sings.\tA man is singing.\n",
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    score, s1, s2 = out.stdout.strip().split("\t")
    assert 0 <= float(score) <= 5 and (s1, s2) == ("A man sings.", "A man is singing.")
