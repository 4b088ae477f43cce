"""The one metric the command line shows a bank about its own rows: ROC AUC (rank statistic, ties averaged)."""

from __future__ import annotations

from typing import Any


def auc(labels: Any, scores: Any) -> float | None:
    """ROC AUC of ``scores`` for 0/1 ``labels``; None when only one class is present."""
    import numpy as np

    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError("labels and scores must have the same length")
    positives = float(y.sum())
    negatives = float(len(y) - positives)
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_scores = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))
