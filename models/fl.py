"""A non-IID split of platform-like data across banks, for horizontal federated training.

:func:`non_iid_banks` splits synthetic platform data (:mod:`models.synth`, features from :mod:`models.features`)
across banks by portfolio mix: each bank favours some industries, size classes and regions (Dirichlet-drawn
affinities), so the banks' data differ in distribution and size. The models the banks train (and FedAvg) are the
federation's contract with the server: :mod:`pps_wire.federated`.

Features are standardised with statistics of a separate reference sample (another seed of the generator) — the
"published normalisation" of the shared feature schema — so no bank's statistics leak into another's model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models import features as feat
from models import synth

F64 = npt.NDArray[np.float64]


# --- non-IID split ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BankData:
    name: str
    x_train: F64
    y_train: F64
    x_test: F64
    y_test: F64

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])


@dataclass(frozen=True)
class FederatedSplit:
    feature_names: list[str]
    banks: list[BankData]

    def pooled_train(self) -> tuple[F64, F64]:
        return (
            np.concatenate([b.x_train for b in self.banks]),
            np.concatenate([b.y_train for b in self.banks]),
        )

    def pooled_test(self) -> tuple[F64, F64]:
        return np.concatenate([b.x_test for b in self.banks]), np.concatenate([b.y_test for b in self.banks])


def _features_labels(n: int, seed: int) -> tuple[F64, F64, dict[str, npt.NDArray[Any]], list[str]]:
    data = synth.generate(n, seed)
    keys, f = feat.enterprise_features(data)
    x = feat.feature_matrix(f)
    label_of = dict(zip(data.labels.columns["uscc"], data.labels.columns["defaulted"], strict=True))
    y = np.array([label_of[k] for k in keys], dtype=np.float64)
    reg = data.registry.columns
    order = {k: i for i, k in enumerate(reg["uscc"])}
    rows = np.array([order[k] for k in keys])
    attrs = {a: np.asarray(reg[a], dtype=object)[rows] for a in ("industry", "size_class", "region")}
    return x, y, attrs, list(f)


def non_iid_banks(
    n: int = 15_000, *, banks: int = 5, seed: int = 7, test_fraction: float = 0.3, alpha: float = 0.6
) -> FederatedSplit:
    """``n`` synthetic enterprises split across ``banks`` by portfolio mix (industry, size class, region).

    Each bank draws Dirichlet(``alpha``) affinities over industries, size classes and regions and a market
    share; an enterprise goes to a bank with probability proportional to share × the product of its
    affinities. Each bank keeps ``test_fraction`` of its portfolio as held-out data. Deterministic per seed.
    """
    if banks < 2 or n < 100 * banks:
        raise ValueError("need at least 2 banks and 100 enterprises per bank")
    x, y, attrs, names = _features_labels(n, seed)
    ref, _, _, _ = _features_labels(max(2000, n // 5), seed + 10_000)
    mu, sd = ref.mean(axis=0), ref.std(axis=0)
    x = (x - mu) / np.where(sd > 0, sd, 1.0)
    rng = np.random.default_rng(seed)
    score = np.tile(rng.dirichlet(np.full(banks, 2.0)), (n, 1))
    for values in attrs.values():
        levels = sorted(set(values))
        aff = rng.dirichlet(np.full(banks, alpha), size=len(levels))  # level -> affinity per bank
        index = np.searchsorted(np.array(levels, dtype=object), values)
        score *= aff[index]
    score /= score.sum(axis=1, keepdims=True)
    u = rng.random(n)[:, None]
    owner = (u > np.cumsum(score, axis=1)).sum(axis=1).clip(0, banks - 1)
    out = []
    for b in range(banks):
        idx = rng.permutation(np.flatnonzero(owner == b))
        cut = round(len(idx) * (1 - test_fraction))
        tr, te = idx[:cut], idx[cut:]
        out.append(BankData(f"bank{b + 1}", x[tr], y[tr], x[te], y[te]))
    return FederatedSplit(names, out)
