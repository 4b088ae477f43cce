"""Local models for horizontal federated training, FedAvg weighting, and a non-IID split of platform-like data.

* :class:`FedLogisticRegression` and :class:`FedMLP` are scikit-learn-compatible binary classifiers
  (``fit``, ``predict_proba``, ``predict``, ``decision_function``; hyper-parameters via ``get_params``) that
  train *from their current weights* for ``epochs`` epochs of minibatch SGD with L2 — what a bank runs between
  two rounds. Both expose their weights as one flat float64 vector (``get_flat`` / ``set_flat``), which is what
  secure aggregation sums.
* :func:`fedavg` is the plaintext FedAvg step (weights by sample counts); the secure path computes the same
  weighted mean without the server seeing any single update (:mod:`protocols.secagg`).
* :func:`non_iid_banks` splits synthetic platform data (:mod:`models.synth`, features from
  :mod:`models.features`) across banks by portfolio mix: each bank favours some industries, size classes and
  regions (Dirichlet-drawn affinities), so the banks' data differ in distribution and size.

Features are standardised with statistics of a separate reference sample (another seed of the generator) — the
"published normalisation" of the shared feature schema — so no bank's statistics leak into another's model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, ClassifierMixin

from models import features as feat
from models import synth

F64 = npt.NDArray[np.float64]
KINDS: Final = ("lr", "mlp")


def _sigmoid(z: F64) -> F64:
    out: F64 = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


def _check_xy(x: Any, y: Any | None, n_features: int) -> tuple[F64, F64 | None]:
    xa = np.asarray(x, dtype=np.float64)
    if xa.ndim != 2 or xa.shape[1] != n_features:
        raise ValueError(f"X must have shape (n, {n_features}), got {xa.shape}")
    if not np.all(np.isfinite(xa)):
        raise ValueError("X contains NaN or inf")
    if y is None:
        return xa, None
    ya = np.asarray(y, dtype=np.float64)
    if ya.shape != (xa.shape[0],) or not np.all((ya == 0) | (ya == 1)):
        raise ValueError("y must be 0/1 labels, one per row of X")
    return xa, ya


class _FedModel(ClassifierMixin, BaseEstimator, ABC):  # type: ignore[misc]
    """Shared minibatch SGD loop; subclasses give the parameter layout, forward and gradient."""

    n_features: int
    learning_rate: float
    l2: float
    epochs: int
    batch_size: int
    seed: int
    _w: F64

    @abstractmethod
    def _init_flat(self) -> F64:
        """The initial flat parameter vector."""

    @abstractmethod
    def _scores(self, x: F64, w: F64) -> F64:
        """Logits of the rows ``x`` under parameters ``w``."""

    @abstractmethod
    def _grad(self, x: F64, y: F64, w: F64) -> F64:
        """The mean loss gradient over ``(x, y)`` at ``w`` (without the L2 term)."""

    def _ensure(self) -> None:
        if not hasattr(self, "_w"):
            self._w = self._init_flat()
            self.classes_ = np.array([0, 1])

    def get_flat(self) -> F64:
        """The model's weights as one flat float64 vector (a copy)."""
        self._ensure()
        return self._w.copy()

    def set_flat(self, flat: Any) -> _FedModel:
        w = np.asarray(flat, dtype=np.float64)
        self._ensure()
        if w.shape != self._w.shape:
            raise ValueError(f"flat parameters have shape {w.shape}, expected {self._w.shape}")
        if not np.all(np.isfinite(w)):
            raise ValueError("flat parameters contain NaN or inf")
        self._w = w.copy()
        return self

    @property
    def n_params(self) -> int:
        self._ensure()
        return int(self._w.size)

    def fit(self, X: Any, y: Any) -> _FedModel:
        """``epochs`` epochs of minibatch SGD with L2, starting from the current weights."""
        x, ya = _check_xy(X, y, self.n_features)
        assert ya is not None
        self._ensure()
        rng = np.random.default_rng(self.seed)
        w = self._w.copy()
        n = x.shape[0]
        for _ in range(self.epochs):
            order = rng.permutation(n)
            for start in range(0, n, self.batch_size):
                idx = order[start : start + self.batch_size]
                w -= self.learning_rate * (self._grad(x[idx], ya[idx], w) + self.l2 * w)
        self._w = w
        return self

    def decision_function(self, X: Any) -> F64:
        x, _ = _check_xy(X, None, self.n_features)
        self._ensure()
        return self._scores(x, self._w)

    def predict_proba(self, X: Any) -> F64:
        p = _sigmoid(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> npt.NDArray[np.int64]:
        return (self.decision_function(X) > 0).astype(np.int64)


class FedLogisticRegression(_FedModel):
    """Logistic regression; flat parameters are ``[w_1..w_k, bias]``."""

    def __init__(
        self,
        n_features: int,
        *,
        learning_rate: float = 0.1,
        l2: float = 1e-4,
        epochs: int = 1,
        batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        self.n_features = n_features
        self.learning_rate = learning_rate
        self.l2 = l2
        self.epochs = epochs
        self.batch_size = batch_size
        self.seed = seed

    def _init_flat(self) -> F64:
        return np.zeros(self.n_features + 1)

    def _scores(self, x: F64, w: F64) -> F64:
        out: F64 = x @ w[:-1] + w[-1]
        return out

    def _grad(self, x: F64, y: F64, w: F64) -> F64:
        r = (_sigmoid(self._scores(x, w)) - y) / len(y)
        return np.append(x.T @ r, r.sum())


class FedMLP(_FedModel):
    """One hidden layer of ``hidden`` tanh units and a logistic output; flat parameters are
    ``[W1 (k x h) row-major, b1 (h), w2 (h), b2]``. The initial weights are drawn from ``seed``, so every bank
    that builds the model with the same seed starts from the same point."""

    def __init__(
        self,
        n_features: int,
        *,
        hidden: int = 16,
        learning_rate: float = 0.05,
        l2: float = 1e-4,
        epochs: int = 1,
        batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        self.n_features = n_features
        self.hidden = hidden
        self.learning_rate = learning_rate
        self.l2 = l2
        self.epochs = epochs
        self.batch_size = batch_size
        self.seed = seed

    def _split(self, w: F64) -> tuple[F64, F64, F64, float]:
        k, h = self.n_features, self.hidden
        return w[: k * h].reshape(k, h), w[k * h : k * h + h], w[k * h + h : k * h + 2 * h], float(w[-1])

    def _init_flat(self) -> F64:
        rng = np.random.default_rng(self.seed)
        k, h = self.n_features, self.hidden
        w1 = rng.normal(0.0, 1.0 / np.sqrt(k), size=(k, h))
        w2 = rng.normal(0.0, 1.0 / np.sqrt(h), size=h)
        return np.concatenate([w1.ravel(), np.zeros(h), w2, [0.0]])

    def _scores(self, x: F64, w: F64) -> F64:
        w1, b1, w2, b2 = self._split(w)
        out: F64 = np.tanh(x @ w1 + b1) @ w2 + b2
        return out

    def _grad(self, x: F64, y: F64, w: F64) -> F64:
        w1, b1, w2, b2 = self._split(w)
        a = np.tanh(x @ w1 + b1)
        r = (_sigmoid(a @ w2 + b2) - y) / len(y)
        da = np.outer(r, w2) * (1.0 - a * a)
        return np.concatenate([(x.T @ da).ravel(), da.sum(axis=0), a.T @ r, [r.sum()]])


def make_model(kind: str, n_features: int, **hyper: Any) -> _FedModel:
    """``lr`` -> :class:`FedLogisticRegression`, ``mlp`` -> :class:`FedMLP`."""
    if kind == "lr":
        return FedLogisticRegression(n_features, **hyper)
    if kind == "mlp":
        return FedMLP(n_features, **hyper)
    raise ValueError(f"model kind must be one of {', '.join(KINDS)}, got {kind!r}")


def fedavg(vectors: list[F64], counts: list[int]) -> F64:
    """Plaintext FedAvg: the mean of the vectors weighted by their sample counts."""
    if not vectors or len(vectors) != len(counts) or any(c <= 0 for c in counts):
        raise ValueError("need one positive sample count per vector")
    total = float(sum(counts))
    out: F64 = sum((v * (c / total) for v, c in zip(vectors, counts, strict=True)), np.zeros_like(vectors[0]))
    return out


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
