"""The model a horizontal federation trains: its parameter layout, its initial weights, one bank's local training.

Server and banks must agree on all three — the server draws the initial global weights from the federation's
seed and checks the size of every update; each bank sets the round's global weights and trains locally — so the
model is defined once, here (numpy only, the ``federated`` extra of the client):

* :class:`FedLogisticRegression` and :class:`FedMLP` are binary classifiers (``fit``, ``predict_proba``,
  ``predict``, ``decision_function``; hyper-parameters via ``get_params``, as scikit-learn's) that train *from
  their current weights* for ``epochs`` epochs of minibatch SGD with L2 — what a bank runs between two rounds.
  Both expose their weights as one flat float64 vector (``get_flat`` / ``set_flat``), which is what secure
  aggregation (:mod:`protocols.secagg`) sums;
* :data:`MODEL_KINDS` and :func:`model_hyper` map a federation's kind and configuration to a model;
* :func:`fedavg` is the plaintext FedAvg step (weights by sample counts); the secure path computes the same
  weighted mean without the server seeing any single update.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from typing import Any, Final

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
KINDS: Final = ("lr", "mlp")
MODEL_KINDS: Final = {"horizontal_lr": "lr", "horizontal_mlp": "mlp"}
"""A federation's kind -> the model kind of :func:`make_model`."""


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


class FedModelBase(ABC):
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

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The hyper-parameters (the constructor's arguments), as scikit-learn's estimators give them."""
        names = [n for n in inspect.signature(type(self).__init__).parameters if n != "self"]
        return {n: getattr(self, n) for n in names}

    def get_flat(self) -> F64:
        """The model's weights as one flat float64 vector (a copy)."""
        self._ensure()
        return self._w.copy()

    def set_flat(self, flat: Any) -> FedModelBase:
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

    def fit(self, X: Any, y: Any) -> FedModelBase:
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


class FedLogisticRegression(FedModelBase):
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


class FedMLP(FedModelBase):
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


def make_model(kind: str, n_features: int, **hyper: Any) -> FedModelBase:
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


def model_hyper(kind: str, config: dict[str, Any], local_epochs: int) -> dict[str, Any]:
    """The keyword arguments of :func:`make_model` for a federation (what every bank trains with)."""
    hyper = {
        "learning_rate": config["learning_rate"],
        "l2": config["l2"],
        "batch_size": config["batch_size"],
        "epochs": local_epochs,
        "seed": config["seed"],
    }
    if kind == "horizontal_mlp":
        hyper["hidden"] = config["hidden"]
    return hyper


def federation_model(kind: str, n_features: int, config: dict[str, Any], local_epochs: int) -> FedModelBase:
    """The model of a federation of ``kind`` (``horizontal_lr``, ``horizontal_mlp``) and ``config``."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"kind must be one of {', '.join(MODEL_KINDS)}, got {kind!r}")
    return make_model(MODEL_KINDS[kind], n_features, **model_hyper(kind, config, local_epochs))


# --- federated standardisation and the secure validation loss ---------------------------------------------------
#
# Both travel as the exact-integer *tail* of a secure-aggregation round (``protocols.secagg``: summed exactly,
# neither clipped nor weighted), so the server learns only their sums over the round's banks. Values are fixed
# point with FRAC_BITS fractional bits.

FRAC_BITS: Final = 20
FIXED_LIMIT: Final = 2**89
"""largest fixed-point magnitude a bank sends (the tail carries integers below 2^90)"""
MAX_ROW_LOSS: Final = 1e6
"""a row's log-loss is capped here before summing (a diverged model's loss stays a finite, huge figure)"""
CONSTANT_RTOL: Final = 1e-12
"""a column whose joint variance is below this fraction of ``max(1, mean^2)`` is constant: centred, not scaled"""


def _fixed(v: float, what: str) -> int:
    f = round(float(v) * (1 << FRAC_BITS))
    if abs(f) >= FIXED_LIMIT:
        raise ValueError(
            f"{what} is too large to aggregate ({float(v):.3g}): rescale the feature (e.g. amounts in thousands)"
        )
    return f


def moments_tail_length(n_features: int) -> int:
    """Exact integers a bank sends in the statistics round: its row count and positives, then per feature the
    sum and the sum of squares."""
    return 2 + 2 * n_features


def local_moments(x: Any, y: Any, n_features: int) -> list[int]:
    """This bank's ``[rows, positives, sum x_1 .. sum x_k, sum x_1^2 .. sum x_k^2]`` (sums in fixed point): its
    part of the statistics round."""
    xa, ya = _check_xy(x, y, n_features)
    assert ya is not None
    sums, squares = xa.sum(axis=0), (xa * xa).sum(axis=0)
    names = range(1, n_features + 1)
    return (
        [int(xa.shape[0]), int(ya.sum())]
        + [_fixed(v, f"the sum of feature {j}") for j, v in zip(names, sums, strict=True)]
        + [_fixed(v, f"the sum of squares of feature {j}") for j, v in zip(names, squares, strict=True)]
    )


def joint_standardisation(total: list[int], n_features: int) -> dict[str, Any]:
    """Means and scales from the summed moments (exact integer arithmetic until the last division):
    ``{"rows", "positives", "mean", "scale", "constant"}``; a constant column gets scale 1 (it becomes all
    zeros)."""
    k = n_features
    if len(total) != moments_tail_length(k) or total[0] < 2:
        raise ValueError("the statistics round needs the summed moments of at least two rows")
    n, positives, one = total[0], total[1], 1 << FRAC_BITS
    if not 0 < positives < n:
        raise ValueError(f"the banks' rows hold {positives} positives of {n}: both labels are needed")
    mean, scale, constant = [], [], []
    for j in range(k):
        s1, s2 = total[2 + j], total[2 + k + j]
        mu = s1 / (n * one)
        var = max(0.0, (n * s2 * one - s1 * s1) / (n * n * one * one))  # exact numerator
        mean.append(mu)
        if var <= CONSTANT_RTOL * max(1.0, mu * mu):
            scale.append(1.0)
            constant.append(j)
        else:
            scale.append(math.sqrt(var))
    return {"rows": n, "positives": positives, "mean": mean, "scale": scale, "constant": constant}


def with_prior_bias(flat: Any, stats: dict[str, Any]) -> F64:
    """The initial weights with the output bias (the last parameter of both models) at the joint base rate's
    log-odds: the first rounds learn the features, not the intercept (at 3 % positives, starting from
    probability 0.5 costs FedAvg tens of rounds)."""
    w = np.asarray(flat, dtype=np.float64).copy()
    p = stats["positives"] / stats["rows"]
    w[-1] = math.log(p / (1.0 - p))
    return w


def standardise(x: Any, stats: dict[str, Any]) -> F64:
    """``(x - mean) / scale`` with the joint statistics."""
    xa = np.asarray(x, dtype=np.float64)
    out: F64 = (xa - np.asarray(stats["mean"])) / np.asarray(stats["scale"])
    return out


def fold_standardisation(model: FedModelBase, stats: dict[str, Any]) -> FedModelBase:
    """The same model on raw features: ``f((x - mean) / scale)`` folded into the first layer's weights."""
    mu, s = np.asarray(stats["mean"], dtype=np.float64), np.asarray(stats["scale"], dtype=np.float64)
    w = model.get_flat()
    if isinstance(model, FedMLP):
        k, h = model.n_features, model.hidden
        w1 = w[: k * h].reshape(k, h) / s[:, None]
        b1 = w[k * h : k * h + h] - (mu @ w1)
        flat = np.concatenate([w1.ravel(), b1, w[k * h + h :]])
    else:
        coef = w[:-1] / s
        flat = np.append(coef, w[-1] - float(mu @ coef))
    out = type(model)(**model.get_params())
    return out.set_flat(flat)


def validation_split(
    n: int, y: Any, fraction: float, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Row indices ``(train, validation)``: ``fraction`` of each label held out, the same every round."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError("validation fraction must be in [0, 1)")
    ya = np.asarray(y)
    rng = np.random.default_rng(seed)
    val: list[npt.NDArray[np.int64]] = []
    for label in (0, 1):
        idx = np.flatnonzero(ya == label)
        take = round(fraction * len(idx))
        if fraction > 0 and len(idx) >= 2:
            take = max(1, take)
        val.append(rng.permutation(idx)[:take])
    held = np.sort(np.concatenate(val)).astype(np.int64)
    mask = np.ones(n, dtype=bool)
    mask[held] = False
    return np.flatnonzero(mask).astype(np.int64), held


VALIDATION_TAIL: Final = 3
"""``[sum of row log-losses (fixed point), rows, positives]``: what a bank sends each training round"""


def validation_tail(model: FedModelBase, x: Any, y: Any) -> list[int]:
    """The log-loss sum of ``model`` over this bank's validation rows, their number and positives."""
    xa, ya = _check_xy(x, y, model.n_features)
    assert ya is not None
    if len(ya) == 0:
        return [0, 0, 0]
    with np.errstate(over="ignore", invalid="ignore"):
        z = model.decision_function(xa)
        loss = np.logaddexp(0.0, z) - ya * z
    loss = np.where(np.isfinite(loss), np.minimum(loss, MAX_ROW_LOSS), MAX_ROW_LOSS)
    return [_fixed(float(loss.sum()), "the validation loss"), len(ya), int(ya.sum())]


def mean_loss(tail: list[int]) -> float:
    """The mean validation log-loss from a summed :func:`validation_tail`."""
    return tail[0] / (1 << FRAC_BITS) / tail[1]


def prior_loss(tail: list[int]) -> float:
    """The log-loss of predicting every row's probability as the validation rows' base rate: the loss a model
    must beat to be worth anything."""
    p = tail[2] / tail[1]
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


MIN_VALIDATION_CLASS: Final = 10
"""fewest validation positives (and negatives), summed over the banks, for the validation loss to stop training
early or to judge it underfit: below, the loss over a handful of positives is noise (German credit at 3 %: three)"""


def judges(validation_rows: int, validation_positives: int) -> bool:
    """Whether a summed validation loss over these rows may stop training early or refuse an underfit model."""
    return min(validation_positives, validation_rows - validation_positives) >= MIN_VALIDATION_CLASS


def best_round(losses: list[tuple[int, float]], min_delta: float) -> tuple[int, float]:
    """``(round, loss)`` of the best validation loss so far: a later round counts as better only if it improves
    on the best by more than ``min_delta`` (relative). The early-stopping rule of a federation: stop when the
    current round is ``patience`` rounds past it."""
    best_r, best = losses[0]
    for r, v in losses[1:]:
        if v < best * (1.0 - min_delta):
            best_r, best = r, v
    return best_r, best


def round_tail(n_features: int, round_no: int, config: dict[str, Any]) -> int:
    """How many exact integers each bank appends in ``round_no`` (server and banks build the same
    ``SecAggParams``): round 0 (federated standardisation) its moments, a training round its validation loss
    (when the federation holds out validation rows)."""
    if round_no == 0:
        return moments_tail_length(n_features)
    return VALIDATION_TAIL if float(config.get("validation_fraction", 0.0)) > 0 else 0
