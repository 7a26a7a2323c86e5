"""Adding a task touches the task table (training/multitask/tasks.py) and a head, nothing else: a toy task,
binary sentiment on the CFIMDB files, trains beside sst, is evaluated, and gets its prediction files."""
from pathlib import Path

import numpy as np
import torch.nn.functional as F

from data.datasets import load_task
from heads.sentiment import SentimentHead
from minbert.safetensors import load_safetensors
from training import run_multitask
from training.multitask import tasks

FIXTURE_DATA = Path(__file__).parent / "fixtures" / "data" / "course"

TOY = tasks.Task(data="cfimdb", pair=False, loss=lambda out, y: F.cross_entropy(out.float(), y),
                 predict=lambda out: out.argmax(-1), metric=lambda p, y: float((p == y).mean()),
                 teacher=lambda out: out.softmax(-1), output=("toy", "Predicted_Label", "{:d}"),
                 head=lambda hidden, options: SentimentHead(hidden, 2, dropout=options.dropout))


def test_a_task_added_through_the_table_trains_evaluates_and_writes_its_predictions(tmp_path, tiny_checkpoint,
                                                                                     monkeypatch):
    monkeypatch.setitem(tasks.TASKS, "toy", TOY)
    out = tmp_path / "run"
    result = run_multitask.main([
        "--model", str(tiny_checkpoint), "--data-dir", str(FIXTURE_DATA), "--tasks", "sst,toy", "--preset", "quick",
        "--amp", "none", "--device", "cpu", "--epochs", "2", "--batch-size", "2", "--threads", "1",
        "--log-every", "1", "--out-dir", str(out), "--predictions-dir", str(out / "predictions")])
    assert set(result["dev"]) == {"sst", "toy"}  # no overall: that is the course's three tasks
    log = (out / "log.jsonl").read_text()
    assert '"loss_toy"' in log, "the toy task never had a training step"
    for split in ("dev", "test"):
        lines = (out / "predictions" / f"toy-{split}-output.csv").read_text().splitlines()
        assert lines[0].split() == ["id", "Predicted_Label"]
        rows = [line.split(" , ") for line in lines[1:]]
        examples = load_task("cfimdb", split, FIXTURE_DATA).examples
        assert sorted(r[0] for r in rows) == sorted(e["id"] for e in examples)
        assert {int(r[1]) for r in rows} <= {0, 1}
        if split == "dev":  # the logged score is the accuracy of the written file
            gold = {e["id"]: e["label"] for e in examples}
            acc = np.mean([int(r[1]) == gold[r[0]] for r in rows])
            assert result["dev"]["toy"] == acc
    weights = load_safetensors(out / "best" / "model.safetensors")
    assert any(k.startswith("heads.toy.") for k in weights)
