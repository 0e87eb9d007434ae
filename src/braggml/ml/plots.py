"""Pictures of a trained classifier: confusion matrix, training curves, patch precision-recall, SVM weights."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..io.pictures import new_figure, save_png
from .metrics import precision_recall_points

__all__ = ["plot_confusion", "plot_training_curves", "plot_search_curves", "plot_patch_pr", "plot_coefficient_map"]


def _figure(width: float = 6.0, height: float = 4.5) -> Any:
    return new_figure(width, height)


_save = save_png


def plot_confusion(confusion: Sequence[Sequence[int]], path: str | Path, *, title: str = "") -> Path:
    """The 2x2 confusion matrix ``[[tn, fp], [fn, tp]]`` with counts and row fractions."""
    cm = np.asarray(confusion, dtype=np.int64)
    fig = _figure(4.6, 4.0)
    ax = fig.add_subplot()
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(2):
        for j in range(2):
            ax.text(j, i, f"{cm[i, j]}\n{frac[i, j]:.1%}", ha="center", va="center",
                    color="white" if frac[i, j] > 0.6 else "black", fontsize=11)
    ax.set_xticks([0, 1], ["not peak", "peak"])
    ax.set_yticks([0, 1], ["not peak", "peak"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "held-out patches", fontsize=10)
    return _save(fig, path)


def plot_training_curves(history: Sequence[Any], path: str | Path) -> Path:
    """Training and validation loss, and validation precision / recall / F1, per epoch."""
    epochs = [r.epoch for r in history]
    fig = _figure(8.0, 3.6)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, [r.train_loss for r in history], marker=".", label="training loss")
    ax1.plot(epochs, [r.val_loss for r in history], marker=".", label="validation loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("weighted BCE loss")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.plot(epochs, [r.val_f1 for r in history], marker=".", label="F1")
    ax2.plot(epochs, [r.val_precision for r in history], marker=".", label="precision")
    ax2.plot(epochs, [r.val_recall for r in history], marker=".", label="recall")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation (best threshold)")
    ax2.set_ylim(0, 1.02)
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    return _save(fig, path)


def plot_search_curves(search: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Cross-validated F1 (mean and spread over folds) against C, one line per kernel / gamma."""
    fig = _figure()
    ax = fig.add_subplot()
    keys = sorted({(row["kernel"], row["gamma"]) for row in search})
    for kernel, gamma in keys:
        rows = sorted((r for r in search if (r["kernel"], r["gamma"]) == (kernel, gamma)), key=lambda r: r["C"])
        label = kernel if kernel == "linear" else f"{kernel}, gamma {gamma:.3g}"
        ax.errorbar([r["C"] for r in rows], [r["mean_f1"] for r in rows], yerr=[r["std_f1"] for r in rows],
                    marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("C")
    ax.set_ylabel("cross-validated F1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_patch_pr(
    y_true: NDArray[np.integer], scores: NDArray[np.floating], path: str | Path, *, threshold: float | None = None
) -> Path:
    """Precision-recall curve of the patch scores, with the chosen threshold marked."""
    t, p, r = precision_recall_points(y_true, scores)
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(r, p, label="patches")
    if threshold is not None and t.size:
        k = int(np.argmin(np.abs(t - threshold)))
        ax.scatter([r[k]], [p[k]], color="red", zorder=3, label=f"threshold {threshold:.3f}")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_coefficient_map(weights: NDArray[np.floating], path: str | Path) -> Path:
    """A linear model's weights on each patch pixel, one panel per channel (red: towards peak)."""
    w = np.asarray(weights, dtype=np.float64)
    names = ["normalised value", "validity"] + [f"channel {k}" for k in range(2, w.shape[0])]
    fig = _figure(3.6 * w.shape[0], 3.4)
    axes = np.atleast_1d(fig.subplots(1, w.shape[0]))
    for k, ax in enumerate(axes):
        lim = float(np.abs(w[k]).max()) or 1.0
        im = ax.imshow(w[k], cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_title(names[k], fontsize=9)
        ax.set_xlabel("col offset")
        ax.set_ylabel("row offset")
        fig.colorbar(im, ax=ax, shrink=0.8)
    return _save(fig, path)
