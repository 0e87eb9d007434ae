"""Binary classification figures of the patch classifiers (NumPy only)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["binary_metrics", "best_threshold", "precision_recall_points"]


def binary_metrics(y_true: NDArray[np.integer], y_pred: NDArray[np.bool_] | NDArray[np.integer]) -> dict[str, Any]:
    """Precision, recall, F1, accuracy and the confusion matrix of binary predictions.

    Parameters
    ----------
    y_true, y_pred : (N,) arrays
        True and predicted classes (1 = peak, 0 = not peak).

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1``, ``accuracy`` (NaN when undefined), ``tp``, ``fp``, ``fn``, ``tn``
        and ``confusion`` = ``[[tn, fp], [fn, tp]]`` (rows: true class 0, 1; columns: predicted class).

    Examples
    --------
    >>> m = binary_metrics(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))
    >>> m["precision"], m["recall"], m["confusion"]
    (0.5, 0.5, [[1, 1], [1, 1]])
    """
    t = np.asarray(y_true).reshape(-1).astype(bool)
    p = np.asarray(y_pred).reshape(-1).astype(bool)
    if t.shape != p.shape:
        raise ValueError(f"{t.size} true labels but {p.size} predictions")
    tp = int((t & p).sum())
    fp = int((~t & p).sum())
    fn = int((t & ~p).sum())
    tn = int((~t & ~p).sum())
    nan = float("nan")
    precision = tp / (tp + fp) if tp + fp else nan
    recall = tp / (tp + fn) if tp + fn else nan
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else nan
    accuracy = (tp + tn) / t.size if t.size else nan
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": accuracy,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "confusion": [[tn, fp], [fn, tp]],
    }


def precision_recall_points(
    y_true: NDArray[np.integer], scores: NDArray[np.floating]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Precision and recall when keeping the scores at or above each distinct score.

    Returns (thresholds, precision, recall) with thresholds in decreasing order.
    """
    t = np.asarray(y_true).reshape(-1).astype(bool)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    tp = np.cumsum(t[order])
    n = np.arange(1, s.size + 1)
    # one point per distinct score: the last index of each run of equal scores
    last = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True]) if s.size else np.empty(0, np.int64)
    precision = tp[last] / n[last]
    recall = tp[last] / max(int(t.sum()), 1)
    return s_sorted[last], precision.astype(np.float64), recall.astype(np.float64)


def best_threshold(y_true: NDArray[np.integer], scores: NDArray[np.floating]) -> tuple[float, float]:
    """The score threshold with the highest F1, and that F1 (0.5 and NaN when there are no peaks).

    Examples
    --------
    >>> best_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.7, 0.9]))
    (0.7, 1.0)
    """
    t = np.asarray(y_true).reshape(-1).astype(bool)
    if not t.any():
        return 0.5, float("nan")
    thresholds, precision, recall = precision_recall_points(t, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    k = int(np.argmax(f1))
    return float(thresholds[k]), float(f1[k])
