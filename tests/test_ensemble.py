"""training/run_ensemble.py: the mean of several runs' outputs, aligned by id, and the course files.

The reference is computed here, independently of the script: every member rebuilt with
MultitaskBert.from_run, run one example at a time (no batching, no length buckets) on its own
max_length and pair encoding, its head output mapped by hand (softmax, sigmoid, the score), then
averaged over the members in file order.
"""
import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from data.batching import encode_examples
from data.datasets import load_task
from heads.multitask_bert import MultitaskBert
from minbert import BertModel, Tokenizer
from training.multitask import recipe, tasks
from training import run_ensemble

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "fixtures" / "data" / "course"
COURSE = ("sst", "quora", "sts")
# The course's headers (Similiary sic) and file names, written out: the format under test.
HEADERS = {"sst": "id \t Predicted_Sentiment ", "quora": "id \t Predicted_Is_Paraphrase ",
           "sts": "id \t Predicted_Similiary "}
FILES = {"sst": "sst", "quora": "para", "sts": "sts"}
# Two members that differ in everything an ensemble must absorb: weights, heads, pair encoding, length.
MEMBERS = {"a": (dict(sentiment_pooling="cls", pair_mode="cross", sts_mode="cross"), 32, 1),
           "b": (dict(sentiment_pooling="mean", pair_mode="bi", sts_mode="regressor"), 7, 2)}


def save_member(checkpoint: Path, directory: Path, heads: dict, max_length: int, seed: int,
                task_names=COURSE) -> Path:
    torch.manual_seed(seed)
    model = MultitaskBert(BertModel.from_pretrained(checkpoint), **heads).eval()
    options = {"tasks": list(task_names), "max_length": max_length, "model": "tiny"}
    model.save_run(directory / "best", Tokenizer.from_pretrained(checkpoint), options, {"overall": 0.5}, 1)
    return directory / "best"


@pytest.fixture(scope="module")
def members(tiny_checkpoint, tmp_path_factory) -> dict[str, Path]:
    return {k: save_member(tiny_checkpoint, tmp_path_factory.mktemp(f"member-{k}"), *v) for k, v in MEMBERS.items()}


def run(runs, out: Path, *extra) -> dict:
    return run_ensemble.main([str(r) for r in runs] + ["--data-dir", str(DATA), "--device", "cpu",
                                                       "--predictions-dir", str(out), *extra])


def examples(task: str, split: str) -> list[dict]:
    return load_task(tasks.TASKS[task].data, split, DATA).examples


def by_hand(members: dict, key: str, task: str, split: str) -> np.ndarray:
    """Member `key`'s probability-space outputs, one example at a time, in file order."""
    model = MultitaskBert.from_run(members[key])
    tok = Tokenizer.from_pretrained(members[key])
    max_length = MEMBERS[key][1]
    cross = (model.pair_mode if task == "quora" else model.sts_mode) == "cross"
    rows = []
    with torch.no_grad():
        for e in examples(task, split):
            if task == "sst":
                rows.append(torch.softmax(model.predict_sentiment(tok([e["sentence"]], max_length=max_length))[0], -1))
                continue
            a, b = e["sentence1"], e["sentence2"]
            if cross:
                out = model(task, tok([a], pairs=[b], max_length=max_length))[0]
            else:
                out = model(task, tok([a], max_length=max_length), tok([b], max_length=max_length))[0]
            rows.append(torch.sigmoid(out) if task == "quora" else out)
    return torch.stack(rows).double().numpy()


def read_file(path: Path) -> tuple[str, list[tuple[str, str]]]:
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "", f"{path} must end with a newline"
    rows = []
    for line in lines[1:-1]:
        m = re.fullmatch(r"(\S+) , (\S+) ", line)
        assert m, f"{path}: {line!r} is not `id , prediction `"
        rows.append((m.group(1), m.group(2)))
    return lines[0], rows


def test_the_mean_is_the_members_own_outputs_averaged_in_probability_space(members, tmp_path):
    result = run(members.values(), tmp_path)
    for t in COURSE:
        for s in ("dev", "test"):
            want = (by_hand(members, "a", t, s) + by_hand(members, "b", t, s)) / 2
            assert result["ids"][t][s] == [e["id"] for e in examples(t, s)]
            np.testing.assert_allclose(result["mean"][t][s], want, rtol=1e-5, atol=1e-6, err_msg=f"{t}-{s}")
            decided = {"sst": want.argmax(-1), "quora": (want > 0.5).astype(int), "sts": np.clip(want, 0, 5)}[t]
            np.testing.assert_allclose(result["predictions"][t][s], decided, atol=1e-6, err_msg=f"{t}-{s}")
    labels = {t: np.array([e["label"] for e in examples(t, "dev")]) for t in COURSE}
    dev = result["ensemble"]["dev"]
    assert dev["sst"] == pytest.approx(float((result["predictions"]["sst"]["dev"] == labels["sst"]).mean()))
    assert dev["sts"] == pytest.approx(np.corrcoef(result["predictions"]["sts"]["dev"], labels["sts"])[0, 1])
    assert dev["overall"] == pytest.approx((dev["sst"] + dev["quora"] + (dev["sts"] + 1) / 2) / 3)


def test_members_are_aligned_by_id_when_they_bucket_differently(members, tmp_path):
    # The premise: the two members' length buckets put some split's examples in different orders.
    orders = {}
    for k, d in members.items():
        model, tok = MultitaskBert.from_run(d), Tokenizer.from_pretrained(d)
        for t in COURSE:
            for s in ("dev", "test"):
                enc = encode_examples(tok, examples(t, s), tasks.TASKS[t].data, max_length=MEMBERS[k][1],
                                      cross_encoder=tasks.is_cross(t, model))
                orders[k, t, s] = tasks.outputs(model, enc, tok.pad_id, "cpu", t)[0]
    differ = [(t, s) for t in COURSE for s in ("dev", "test") if orders["a", t, s] != orders["b", t, s]]
    assert len(differ) >= 2, "the fixture members bucket alike: the test would not see a positional mix-up"
    result = run(members.values(), tmp_path)
    for n, k in enumerate(members):
        for t in COURSE:
            for s in ("dev", "test"):
                got = tasks.TASKS[t].teacher(torch.from_numpy(result["member_outputs"][n][t][s]).double()).numpy()
                np.testing.assert_allclose(got, by_hand(members, k, t, s), rtol=1e-5, atol=1e-6, err_msg=f"{k} {t}-{s}")


def test_a_one_member_ensemble_writes_the_members_own_prediction_files(members, tmp_path):
    result = run([members["a"]], tmp_path / "ensemble")
    # The member's own files, as run_multitask.py writes them at the end of training.
    model, tok = MultitaskBert.from_run(members["a"]), Tokenizer.from_pretrained(members["a"])
    args = argparse.Namespace(tasks=list(COURSE), device="cpu", amp="none")
    data = {t: {s: encode_examples(tok, examples(t, s), tasks.TASKS[t].data, max_length=MEMBERS["a"][1],
                                   cross_encoder=tasks.is_cross(t, model)) for s in ("dev", "test")} for t in COURSE}
    own = recipe.write_predictions(model, data, args, tok.pad_id, tmp_path / "own")
    for t in COURSE:
        for s in ("dev", "test"):
            name = f"{FILES[t]}-{s}-output.csv"
            header, rows = read_file(tmp_path / "ensemble" / name)
            own_header, own_rows = read_file(tmp_path / "own" / name)
            assert header == own_header and sorted(rows) == sorted(own_rows), name
    assert result["ensemble"]["dev"] == pytest.approx(own)
    assert result["members"][0]["dev"] == pytest.approx(own)


def test_the_files_are_in_the_course_format(members, tmp_path):
    run(members.values(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{FILES[t]}-{s}-output.csv" for t in COURSE
                                                               for s in ("dev", "test"))
    for t in COURSE:
        for s in ("dev", "test"):
            header, rows = read_file(tmp_path / f"{FILES[t]}-{s}-output.csv")
            assert header == HEADERS[t]
            assert [i for i, _ in rows] == [e["id"] for e in examples(t, s)]  # every id once, in file order
            for _, v in rows:
                if t == "sts":
                    assert re.fullmatch(r"\d\.\d{4}", v) and 0.0 <= float(v) <= 5.0, v
                else:
                    assert v in ({"0", "1", "2", "3", "4"} if t == "sst" else {"0", "1"}), v


def test_record_holds_members_and_ensemble_scores_and_times(members, tmp_path):
    run(members.values(), tmp_path / "p", "--record", str(tmp_path / "r.json"), "--limit-eval", "2")
    record = json.loads((tmp_path / "r.json").read_text())
    assert [m["run"] for m in record["members"]] == [str(d) for d in members.values()]
    assert all(set(m["dev"]) == {*COURSE, "overall"} and m["seconds"] > 0 for m in record["members"])
    assert set(record["ensemble"]["dev"]) == {*COURSE, "overall"} and record["seconds"] > 0
    assert "--limit-eval 2" in record["command"]
    header, rows = read_file(tmp_path / "p" / "sst-test-output.csv")
    assert len(rows) == 2


def test_decide_of_the_teacher_output_is_the_tasks_prediction():
    """The task table's rule: one member's decide(teacher(out)) is its own predict(out)."""
    g = torch.Generator().manual_seed(0)
    for t, shape in (("sst", (500, 5)), ("quora", (500,)), ("sts", (500,))):
        out = torch.randn(shape, generator=g) * 4
        task = tasks.TASKS[t]
        assert torch.equal(task.decide(task.teacher(out.double())), task.predict(out)), t


def test_clear_errors(members, tiny_checkpoint, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="not a complete run folder"):
        run([members["a"], tmp_path / "empty"], tmp_path / "p")
    sst_only = save_member(tiny_checkpoint, tmp_path / "sst", MEMBERS["a"][0], 16, 3, ["sst"])
    quora_only = save_member(tiny_checkpoint, tmp_path / "quora", MEMBERS["a"][0], 16, 3, ["quora"])
    with pytest.raises(SystemExit, match="share no course task"):
        run([sst_only, quora_only], tmp_path / "p")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ids-sst-dev.csv").write_bytes((DATA / "ids-sst-dev.csv").read_bytes())
    with pytest.raises(SystemExit, match="ids-sst-test-student.csv"):
        run_ensemble.main([str(members["a"]), "--data-dir", str(tmp_path / "data"), "--device", "cpu",
                           "--predictions-dir", str(tmp_path / "p")])
    # Members that share only some tasks: the ensemble covers those, and says so.
    result = run([members["a"], sst_only], tmp_path / "partial")
    assert result["tasks"] == ["sst"] and sorted(p.name for p in (tmp_path / "partial").iterdir()) == [
        "sst-dev-output.csv", "sst-test-output.csv"]
