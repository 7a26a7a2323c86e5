"""training/engine/curves.py: a run's log.jsonl drawn as training curves; matplotlib stays optional."""
import json
import sys

import pytest

from training.engine import curves

# A hand-written log in run_multitask.py's format: training rows, a skipped (non-finite) step whose
# losses are strings, dev rows after each epoch, the final row.
LOG = [
    {"step": 2, "epoch": 1, "lr": 1e-5, "loss_sst": 1.6, "loss_sts": 1.1},
    {"step": 3, "skipped": "non-finite", "total_skipped": 1, "norm": "nan", "loss_quora": "nan"},
    {"step": 4, "epoch": 1, "lr": 2e-5, "loss_sst": 1.5, "loss_sts": 0.9, "loss_quora": 0.7},
    {"eval": "dev", "epoch": 1, "phase": "multitask", "step": 4, "minutes": 0.1, "sst": 0.4, "quora": 0.8, "sts": 0.85,
     "overall": 0.7},
    {"step": 6, "epoch": 2, "lr": 1e-5, "loss_sst": 1.2, "loss_sts": 0.5, "loss_quora": 0.5},
    {"eval": "dev", "epoch": 2, "phase": "multitask", "step": 8, "minutes": 0.2, "sst": 0.45, "quora": 0.82,
     "sts": 0.86, "overall": 0.72},
    {"final": "dev", "minutes": 0.3, "sst": 0.45, "quora": 0.82, "sts": 0.86, "overall": 0.72},
]


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in LOG))
    return path


def test_the_log_gives_loss_per_task_and_dev_rows(log):
    losses, dev = curves.read_run_log(log)
    assert losses == {"sst": [(2, 1.6), (4, 1.5), (6, 1.2)], "sts": [(2, 1.1), (4, 0.9), (6, 0.5)],
                      "quora": [(4, 0.7), (6, 0.5)]}  # the skipped step's "nan" strings are left out
    assert [(row["epoch"], row["overall"]) for row in dev] == [(1, 0.7), (2, 0.72)]


def test_a_file_that_is_not_a_log_is_named(tmp_path):
    bad = tmp_path / "notes.jsonl"
    bad.write_text('{"step": 1, "lr": 1, "loss_sst": 1.0}\nthis is not json\n')
    with pytest.raises(ValueError, match="notes.jsonl: line 2: not JSON"):
        curves.plot_run(bad, tmp_path / "x.png")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no training or dev rows"):
        curves.plot_run(empty, tmp_path / "x.png")


def test_without_matplotlib_no_picture_and_a_hint(log, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    monkeypatch.setattr(curves, "_WARNED", False)
    assert curves.plot_run(log, tmp_path / "curves.png") is None
    assert "pip install matplotlib" in capsys.readouterr().out
    assert not (tmp_path / "curves.png").exists()


def test_with_matplotlib_a_png_is_written(log, tmp_path):
    pytest.importorskip("matplotlib")
    out = curves.plot_run(log, tmp_path / "curves.png", title="a run")
    assert out == tmp_path / "curves.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_run_summarize_plot_draws_each_run_or_says_why_not(log, tmp_path, monkeypatch, capsys):
    from training import run_summarize
    run = log.parent
    (run / "best").mkdir()
    (run / "best" / "options.json").write_text(json.dumps({"epoch": 2, "dev": LOG[-1] | {"final": None}}))
    monkeypatch.setattr(curves, "pyplot", lambda: None)  # as without matplotlib
    run_summarize.main([str(run), "--plot"])
    out = capsys.readouterr().out
    assert f"curves of {run}: not drawn" in out and "| 0.4500 | 0.8200 | 0.8600 | 0.7200 | 2 |" in out
    assert not (run / "curves.png").exists()
