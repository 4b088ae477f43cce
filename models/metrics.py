"""Discrimination metrics for binary risk models: ROC, AUC and the Kolmogorov-Smirnov statistic.

Labels are 1 for the positive class (default, "bad") and 0 otherwise; a higher score means more likely
positive. Ties in the scores are handled as scikit-learn does: one ROC point per distinct score, so the AUC
is the probability that a random positive outscores a random negative, counting ties as one half.

* :func:`roc_curve` -> :class:`RocCurve` (``fpr``, ``tpr``, ``thresholds``: arrays for plotting, from
  ``(0, 0)`` at threshold ``+inf`` to ``(1, 1)``);
* :func:`auc` -> the area under it (trapezoids);
* :func:`ks` -> ``max |TPR - FPR|`` over thresholds; :func:`ks_curve` -> :class:`KSCurve` with both
  cumulative rates and their gap per threshold, and the threshold where the gap is largest.

Bad input (shapes, NaN/inf scores, labels other than 0/1, a single class) raises :class:`InvalidMetricInput`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


class InvalidMetricInput(ValueError):
    """Labels or scores that no metric can be computed from."""


@dataclass(frozen=True)
class RocCurve:
    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


@dataclass(frozen=True)
class KSCurve:
    thresholds: np.ndarray
    tpr: np.ndarray
    fpr: np.ndarray
    gap: np.ndarray
    ks: float
    ks_threshold: float


def _check(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1 or y.shape != s.shape:
        raise InvalidMetricInput(
            f"labels and scores must be 1-D of equal length, got {y.shape} and {s.shape}"
        )
    if y.size == 0:
        raise InvalidMetricInput("no samples")
    if not np.all(np.isfinite(s)):
        raise InvalidMetricInput("scores must be finite (NaN or inf found)")
    try:
        yf = y.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidMetricInput("labels must be 0 or 1") from exc
    if not np.all((yf == 0) | (yf == 1)):
        raise InvalidMetricInput("labels must be 0 or 1")
    if yf.min() == yf.max():
        raise InvalidMetricInput("both classes must be present")
    return yf, s


def roc_curve(y_true: Any, scores: Any) -> RocCurve:
    """One point per distinct score, highest first, preceded by ``(0, 0)`` at ``+inf``."""
    y, s = _check(y_true, scores)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each run of equal scores
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return RocCurve(fpr=fpr, tpr=tpr, thresholds=np.r_[np.inf, s[last]])


def auc(y_true: Any, scores: Any) -> float:
    """Area under the ROC curve."""
    curve = roc_curve(y_true, scores)
    return float(np.sum(np.diff(curve.fpr) * (curve.tpr[1:] + curve.tpr[:-1]) / 2))


def ks_curve(y_true: Any, scores: Any) -> KSCurve:
    """Cumulative TPR and FPR per threshold, their gap, and the largest gap with its threshold."""
    curve = roc_curve(y_true, scores)
    gap = np.abs(curve.tpr - curve.fpr)
    k = int(np.argmax(gap))
    return KSCurve(
        thresholds=curve.thresholds,
        tpr=curve.tpr,
        fpr=curve.fpr,
        gap=gap,
        ks=float(gap[k]),
        ks_threshold=float(curve.thresholds[k]),
    )


def ks(y_true: Any, scores: Any) -> float:
    """The Kolmogorov-Smirnov statistic ``max |TPR - FPR|`` over thresholds."""
    return ks_curve(y_true, scores).ks
