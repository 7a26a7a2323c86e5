"""GAN-BERT's pictures (training/run_gan.py): the accuracy-vs-labelled-fraction sweep, and real
and generated sentence vectors projected to 2-D. matplotlib is optional (training/engine/curves.py);
the projections (pca_2d) need only numpy."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from training.engine.curves import pyplot, save_figure


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
    plt = pyplot()
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
    return save_figure(plt, fig, path)


def plot_embeddings(real_2d: np.ndarray, real_labels: np.ndarray, fake_2d: np.ndarray, fake_labels: np.ndarray,
                    path: str | Path, title: str, num_classes: int):
    """Real embeddings as dots, generated ones as crosses, one colour per class (the same colour for
    real and generated rows of a class). Returns the path or None."""
    plt = pyplot()
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
    return save_figure(plt, fig, path)
