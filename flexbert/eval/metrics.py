"""GLUE-style metrics on plain sequences of labels / predictions (no torch needed).

Classification: ``accuracy``, ``f1`` (binary: of the positive class 1, as GLUE's MRPC/QQP; more
than two classes: the macro average over classes), ``matthews_correlation`` (the multi-class
form; CoLA's metric).  Regression: ``pearson`` and ``spearman`` (ranks with ties averaged).
A degenerate input (a constant column) gives 0.0 for the correlations, as scikit-learn does for
Matthews, rather than NaN.
"""

from __future__ import annotations

import math
from typing import Sequence

CLASSIFICATION = ("accuracy", "f1", "matthews_correlation")
REGRESSION = ("pearson", "spearman")


def _check(y_true: Sequence, y_pred: Sequence) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    if not len(y_true):
        raise ValueError("no examples to score")


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    _check(y_true, y_pred)
    return sum(int(t == p) for t, p in zip(y_true, y_pred)) / len(y_true)


def _f1_of(cls: int, y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    tp = sum(1 for t, p in zip(y_true, y_pred) if t == cls and p == cls)
    fp = sum(1 for t, p in zip(y_true, y_pred) if t != cls and p == cls)
    fn = sum(1 for t, p in zip(y_true, y_pred) if t == cls and p != cls)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def f1(y_true: Sequence[int], y_pred: Sequence[int], num_labels: int = 2) -> float:
    _check(y_true, y_pred)
    if num_labels <= 2:
        return _f1_of(1, y_true, y_pred)
    return sum(_f1_of(c, y_true, y_pred) for c in range(num_labels)) / num_labels


def matthews_correlation(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """(c*s - sum_k p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2)), c correct, s samples."""
    _check(y_true, y_pred)
    classes = sorted(set(y_true) | set(y_pred))
    s = len(y_true)
    c = sum(int(t == p) for t, p in zip(y_true, y_pred))
    t_k = [sum(1 for t in y_true if t == k) for k in classes]
    p_k = [sum(1 for p in y_pred if p == k) for k in classes]
    num = c * s - sum(p * t for p, t in zip(p_k, t_k))
    den = math.sqrt((s * s - sum(p * p for p in p_k)) * (s * s - sum(t * t for t in t_k)))
    return num / den if den else 0.0


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    _check(x, y)
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else 0.0


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    _check(x, y)
    return pearson(ranks(x), ranks(y))


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], num_labels: int = 2) -> dict[str, float]:
    return {"accuracy": accuracy(y_true, y_pred), "f1": f1(y_true, y_pred, num_labels),
            "matthews_correlation": matthews_correlation(y_true, y_pred)}


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, float]:
    return {"pearson": pearson(y_true, y_pred), "spearman": spearman(y_true, y_pred)}
