"""The dev scores a multitask run reports are those of the prediction files it writes.

Recomputed here from the files alone: the predictions parsed with csv, the dev labels read from the
dev CSVs with csv, SST/Quora accuracy and STS Pearson with numpy/scipy, the overall score by the
course's formula, all without training/multitask/tasks.py or data/. Compared with what the run logged
(log.jsonl: the best epoch's dev row and the final row) and returned.

Each id must be paired with its own row: the run trains on the keyword task of test_learning.py with
dev = train (its dev rows shuffled, so file order says nothing), to a perfect fit; then every id's
prediction must equal the label of the dev row with that id.
"""
import csv
import json
import random

import numpy as np
import pytest
from scipy.stats import pearsonr

from test_learning import COMMON, write_task_files
from training import run_multitask

FILES = {"sst": ("ids-sst-dev.csv", "sentiment", "sst-dev-output.csv"),
         "quora": ("quora-dev.csv", "is_duplicate", "para-dev-output.csv"),
         "sts": ("sts-dev.csv", "similarity", "sts-dev-output.csv")}


def read_gold(path) -> dict[str, float]:
    with open(path, newline="", encoding="utf-8") as f:
        return {row["id"].strip(): float(row[label]) for row in csv.DictReader(f, delimiter="\t")
                for label in [FILES_BY_NAME[path.name]]}


FILES_BY_NAME = {name: label for name, label, _ in FILES.values()}


def read_predictions(path) -> dict[str, float]:
    """The course's format: a header `id \\t Predicted_X`, then `id , value` rows."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0][0].split()[0] == "id", f"{path.name}: header {rows[0]}"
    ids = [r[0].strip() for r in rows[1:]]
    assert len(ids) == len(set(ids)), f"{path.name}: an id appears twice"
    return {r[0].strip(): float(r[1]) for r in rows[1:]}


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory, tiny_checkpoint):
    d = write_task_files(tmp_path_factory.mktemp("data"))
    for name, _, _ in FILES.values():  # shuffle the dev rows: the files' order must not matter
        header, *rows = (d / name).read_text().splitlines()
        random.Random(1).shuffle(rows)
        (d / name).write_text("\n".join([header, *rows]) + "\n")
    out = tmp_path_factory.mktemp("run")
    result = run_multitask.main([
        "--model", str(tiny_checkpoint), "--data-dir", str(d), *COMMON, "--amp", "none", "--epochs", "20",
        "--batch-size", "8", "--lr", "3e-3", "--layer-decay", "1", "--warmup", "0", "--dropout", "0",
        "--sts-mode", "cross", "--out-dir", str(out), "--predictions-dir", str(out / "predictions")])
    return d, out, result


def recompute(d, out) -> tuple[dict, dict, dict]:
    gold = {t: read_gold(d / name) for t, (name, _, _) in FILES.items()}
    pred = {t: read_predictions(out / "predictions" / f) for t, (_, _, f) in FILES.items()}
    scores = {}
    for t in FILES:
        assert set(pred[t]) == set(gold[t]), f"{t}: the prediction file's ids are not the dev ids"
        ids = sorted(gold[t])
        p, g = np.array([pred[t][i] for i in ids]), np.array([gold[t][i] for i in ids])
        scores[t] = float(pearsonr(p, g)[0]) if t == "sts" else float(np.mean(p == g))
    scores["overall"] = (scores["sst"] + scores["quora"] + (scores["sts"] + 1) / 2) / 3
    return scores, gold, pred


def test_logged_dev_scores_are_those_of_the_prediction_files(fitted_run):
    d, out, result = fitted_run
    scores, _, _ = recompute(d, out)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    [final] = [r for r in log if r.get("final") == "dev"]
    evals = [r for r in log if r.get("eval") == "dev"]
    best = max(evals, key=lambda r: r["overall"])  # predictions come from the best epoch's checkpoint
    for logged in (final, best, result["dev"]):
        for k in ("sst", "quora", "sts", "overall"):
            # sts is written with 4 decimals: its Pearson may move in the 4th-5th digit
            assert logged[k] == pytest.approx(scores[k], abs=2e-4), f"{k}: logged {logged[k]}, files give {scores[k]}"


def test_each_id_is_paired_with_its_own_row(fitted_run):
    d, out, _ = fitted_run
    scores, gold, pred = recompute(d, out)
    assert scores["sst"] == 1.0 and scores["quora"] == 1.0, f"the run did not fit its training set: {scores}"
    for t in ("sst", "quora"):  # a perfect fit: a prediction under another row's id would show as a mismatch
        wrong = {i: (pred[t][i], gold[t][i]) for i in gold[t] if pred[t][i] != gold[t][i]}
        assert not wrong, f"{t}: predictions that are not their row's label: {wrong}"
    errors = np.array([abs(pred["sts"][i] - gold["sts"][i]) for i in gold["sts"]])
    assert errors.mean() < 0.5, f"sts: mean error {errors.mean():.3f} against each id's own row"
