"""The task metrics the paper reports: accuracy, Matthews correlation (CoLA), F1 (MRPC, QQP), Pearson and Spearman
(STS-B). Plain numpy, so the package needs no scipy/scikit-learn at run time; tests check them against both."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _pair(y_true: Sequence, y_pred: Sequence) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(y_true), np.asarray(y_pred)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"metrics need two 1-D sequences of the same length; got shapes {a.shape} and {b.shape}.")
    if a.size == 0:
        raise ValueError("metrics need at least one example; got none.")
    return a, b


def accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    """Share of predictions equal to the label."""
    a, b = _pair(y_true, y_pred)
    return float(np.mean(a == b))


def matthews_corrcoef(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Matthews correlation (multi-class form, as scikit-learn); 0 when either side is constant."""
    a, b = _pair(y_true, y_pred)
    classes, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    k = len(classes)
    conf = np.zeros((k, k), dtype=np.float64)
    np.add.at(conf, (inv[: a.size], inv[a.size :]), 1)
    t, p = conf.sum(1), conf.sum(0)
    c, s = np.trace(conf), conf.sum()
    cov_yp = c * s - t @ p
    cov_yy, cov_pp = s * s - t @ t, s * s - p @ p
    if cov_yy == 0 or cov_pp == 0:
        return 0.0
    return float(cov_yp / math.sqrt(cov_yy * cov_pp))


def f1_score(y_true: Sequence[int], y_pred: Sequence[int], positive: int = 1) -> float:
    """F1 of the positive class (binary, as GLUE reports for MRPC and QQP); 0 when there are no true positives."""
    a, b = _pair(y_true, y_pred)
    tp = float(np.sum((a == positive) & (b == positive)))
    fp = float(np.sum((a != positive) & (b == positive)))
    fn = float(np.sum((a == positive) & (b != positive)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; NaN when either side is constant (as scipy)."""
    a, b = _pair(x, y)
    a, b = a.astype(np.float64) - np.mean(a), b.astype(np.float64) - np.mean(b)
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b / denom) if denom > 0 else float("nan")


def rankdata(x: Sequence[float]) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (scipy's default 'average' method)."""
    a = np.asarray(x, dtype=np.float64)
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    # Start of each run of equal values, and the average of the ranks the run spans.
    starts = np.flatnonzero(np.r_[True, sorted_a[1:] != sorted_a[:-1]])
    ends = np.r_[starts[1:], a.size]
    avg = (starts + ends + 1) / 2.0
    ranks = np.empty(a.size, dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation: Pearson of the average-tie ranks."""
    a, b = _pair(x, y)
    return pearson(rankdata(a), rankdata(b))


METRICS = {
    "accuracy": accuracy,
    "mcc": matthews_corrcoef,
    "f1": f1_score,
    "pearson": pearson,
    "spearman": spearman,
}


def compute_metrics(names: Sequence[str], y_true: Sequence, y_pred: Sequence) -> dict[str, float]:
    """The named metrics of predictions against labels, in the given order."""
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"Unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)}.")
    return {n: METRICS[n](y_true, y_pred) for n in names}
