"""Training curves: log.jsonl (the loop's log) read back, and drawn; matplotlib is optional.

Without matplotlib the drawing functions return None and print how to get it once; the scripts still
run and write their JSON records. pyplot() and save_figure() serve the other pictures too
(training/methods/gan_plots.py).
"""
from __future__ import annotations

import json
from pathlib import Path

_WARNED = False


def pyplot():
    """matplotlib.pyplot with a file-only backend, or None (and a hint, printed once)."""
    global _WARNED
    try:
        import matplotlib
        matplotlib.use("Agg")  # no display needed: we only write PNG files
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        if not _WARNED:
            print("note: matplotlib is not installed, so no PNG plots; the JSON records have every number. "
                  "For pictures: pip install matplotlib")
            _WARNED = True
        return None


def save_figure(plt, fig, path: str | Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def read_run_log(path: str | Path) -> tuple[dict[str, list[tuple[int, float]]], list[dict]]:
    """A run_multitask.py log.jsonl -> (training loss per task: [(step, running loss)], dev rows:
    [{"epoch", "step", "sst", ...}]). Skipped-step rows (non-finite losses, written as strings) are left out."""
    losses: dict[str, list[tuple[int, float]]] = {}
    dev = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {n}: not JSON ({e}); is this a run's log.jsonl?") from None
        if row.get("eval") == "dev":
            dev.append(row)
        elif "lr" in row:  # a training row: running losses of the tasks trained so far
            for key, value in row.items():
                if key.startswith("loss_") and isinstance(value, (int, float)):
                    losses.setdefault(key[len("loss_"):], []).append((row["step"], float(value)))
    return losses, dev


def plot_run(log_path: str | Path, path: str | Path, title: str | None = None):
    """Training curves of one run: the running training loss per task against the step (left), the
    dev scores after each epoch (right; accuracy for sst/quora, Pearson for sts, the course's
    overall). Returns the path, or None without matplotlib."""
    losses, dev = read_run_log(log_path)
    if not losses and not dev:
        raise ValueError(f"{log_path}: no training or dev rows; is this a run's log.jsonl?")
    plt = pyplot()
    if plt is None:
        return None
    colour = {"sst": "C0", "quora": "C1", "sts": "C2", "overall": "black"}  # one colour per task in both panels
    loss_name = {"sst": "cross-entropy", "quora": "binary cross-entropy", "sts": "squared error"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for task, points in sorted(losses.items(), key=lambda kv: list(colour).index(kv[0]) if kv[0] in colour else 9):
        steps, values = zip(*points)
        left.plot(steps, values, color=colour.get(task), label=f"{task} ({loss_name.get(task, 'loss')})",
                  marker="o" if len(points) < 20 else None)  # a short run logs few points: show each
    for row in dev:  # epoch ends, where the dev scores on the right were measured
        left.axvline(row["step"], color="grey", lw=0.8, ls=":")
    left.set(xlabel="step (dotted: end of an epoch)", ylabel="training loss (running average)",
             title="training loss per task")
    left.grid(alpha=0.3)
    left.legend()
    metrics = {"sst": "sst accuracy", "quora": "quora accuracy", "sts": "sts Pearson", "overall": "overall"}
    epochs = [row["epoch"] for row in dev]
    for key, label in metrics.items():
        if any(key in row for row in dev):
            right.plot(epochs, [row.get(key, np.nan) for row in dev], marker="o", label=label,
                       lw=2.5 if key == "overall" else 1.5, color=colour[key])
    for row in dev[-1:]:
        for key in metrics:
            if key in row:
                right.annotate(f"{row[key]:.3f}", (row["epoch"], row[key]), textcoords="offset points",
                               xytext=(6, -3), fontsize=8)
    right.set_xticks(epochs)
    if epochs:
        right.set_xlim(min(epochs) - 0.2, max(epochs) + 0.6)  # room for the labels of the last epoch
    right.set(xlabel="epoch", ylabel="dev score", title="dev scores after each epoch")
    right.grid(alpha=0.3)
    right.legend()
    if title:
        fig.suptitle(title)
    return save_figure(plt, fig, path)
