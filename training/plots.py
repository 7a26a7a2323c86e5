"""Pictures for the experiment scripts; matplotlib is optional.

Without matplotlib every function here returns None and prints how to get it once; the scripts
still run and write their JSON records. The projections (pca_2d) need only numpy.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

_WARNED = False


def _pyplot():
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


def _save(plt, fig, path: str | Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def pca_2d(x: np.ndarray) -> np.ndarray:
    """(N, C) -> (N, 2): coordinates on the two leading principal axes (SVD of the centred data)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"pca_2d needs an (N >= 2, C) array, got shape {x.shape}")
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)  # rows of vt: principal directions
    out = centred @ vt[:2].T  # (N, 2)
    if out.shape[1] < 2:  # C == 1: pad a zero axis so callers always get two columns
        out = np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    return out


def project_2d(x: np.ndarray, method: str = "pca", seed: int = 0) -> tuple[np.ndarray, str]:
    """(N, C) -> ((N, 2), the method used). "tsne" needs scikit-learn and falls back to PCA without it."""
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE
            perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
            return TSNE(2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(x), "tsne"
        except ImportError:
            print("note: t-SNE needs scikit-learn (pip install scikit-learn); using PCA")
    return pca_2d(x), "pca"


def plot_sweep(summary: dict[str, dict[str, dict]], path: str | Path, title: str, ylabel: str = "dev accuracy"):
    """summary[method][fraction] = {"mean", "std", "n"} -> a line per method, accuracy vs labelled
    fraction on a log axis, +- one standard deviation over seeds. Returns the path or None."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, by_fraction in summary.items():
        fr = sorted(by_fraction, key=float)
        mean = np.array([by_fraction[f]["mean"] for f in fr])
        std = np.array([by_fraction[f]["std"] for f in fr])
        xs = [100 * float(f) for f in fr]
        ax.plot(xs, mean, marker="o", label=method)
        ax.fill_between(xs, mean - std, mean + std, alpha=0.2)
    ax.set(xscale="log", xlabel="labelled training examples (%)", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(plt, fig, path)


def plot_embeddings(real_2d: np.ndarray, real_labels: np.ndarray, fake_2d: np.ndarray, fake_labels: np.ndarray,
                    path: str | Path, title: str, num_classes: int):
    """Real embeddings as dots, generated ones as crosses, one colour per class (the same colour for
    real and generated rows of a class). Returns the path or None."""
    plt = _pyplot()
    if plt is None:
        return None
    colours = plt.get_cmap("viridis" if num_classes > 10 else "tab10")
    fig, ax = plt.subplots(figsize=(6, 5))
    for c in range(num_classes):
        r = real_2d[real_labels == c]
        ax.scatter(r[:, 0], r[:, 1], s=8, alpha=0.5, color=colours(c), label=f"real {c}")
    for c in range(num_classes):  # after every real class, so no class's dots hide another's crosses
        f = fake_2d[fake_labels == c]
        ax.scatter(f[:, 0], f[:, 1], s=14, alpha=0.8, marker="x", color=colours(c), label=f"generated {c}")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2, markerscale=1.5)
    return _save(plt, fig, path)


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
    plt = _pyplot()
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
    return _save(plt, fig, path)
