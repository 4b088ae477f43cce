"""Discrimination metrics for binary risk models: ROC, AUC and the Kolmogorov-Smirnov statistic.

Labels are 1 for the positive class (default, "bad") and 0 otherwise; a higher score means more likely
positive. Ties in the scores are handled as scikit-learn does: one ROC point per distinct score, so the AUC
is the probability that a random positive outscores a random negative, counting ties as one half.

* :func:`roc_curve` -> :class:`RocCurve` (``fpr``, ``tpr``, ``thresholds``: arrays for plotting, from
  ``(0, 0)`` at threshold ``+inf`` to ``(1, 1)``);
* :func:`auc` -> the area under it (trapezoids);
* :func:`ks` -> ``max |TPR - FPR|`` over thresholds; :func:`ks_curve` -> :class:`KSCurve` with both
  cumulative rates and their gap per threshold, and the threshold where the gap is largest;
* :func:`brier`, :func:`ece` and :func:`calibration` -> :class:`Calibration`: whether predicted default
  probabilities match observed default rates (AUC and KS cannot see a model that ranks well but predicts
  13 % where 3 % default);
* :func:`evaluate` -> :class:`Evaluation`: what a model registry keeps of a held-out evaluation (AUC, KS,
  the confusion matrix at a cut-off, both curves thinned to at most :data:`CURVE_POINTS` points, and the
  calibration when the scores are probabilities), as JSON-ready numbers — never the labels or the scores
  themselves.

Bad input (shapes, NaN/inf scores, labels other than 0/1, a single class) raises :class:`InvalidMetricInput`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np


class InvalidMetricInput(ValueError):
    """Labels or scores that no metric can be computed from."""


CALIBRATION_BINS = 10
"""Bins of the expected calibration error (equal width on [0, 1], as Guo et al. 2017) and of the
reliability diagram (equal mass: the same number of applicants per point, so that a low-default portfolio
is not all in the first bin)."""


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


CURVE_POINTS = 201
"""The most points an :class:`Evaluation` keeps per curve (enough to draw it; too few to rebuild the data)."""


def _probabilities(y_true: Any, probabilities: Any) -> tuple[np.ndarray, np.ndarray]:
    y, p = _check(y_true, probabilities)
    if np.any(p < 0) or np.any(p > 1):
        raise InvalidMetricInput("calibration needs probabilities in [0, 1]")
    return y, p


def brier(y_true: Any, probabilities: Any) -> float:
    """Mean squared difference between predicted probability and outcome (0 is perfect)."""
    y, p = _probabilities(y_true, probabilities)
    return float(np.mean((p - y) ** 2))


def ece(y_true: Any, probabilities: Any, bins: int = CALIBRATION_BINS) -> float:
    """Expected calibration error: the applicant-weighted mean of |mean predicted - observed rate| over
    ``bins`` equal-width probability bins."""
    y, p = _probabilities(y_true, probabilities)
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(which):
        mask = which == b
        total += mask.sum() * abs(float(p[mask].mean()) - float(y[mask].mean()))
    return total / y.size


@dataclass(frozen=True)
class Calibration:
    """How well predicted default probabilities match what happened, on held-out applicants.

    ``reliability`` holds ``(mean predicted, observed rate, applicants)`` per equal-mass bin, for the
    reliability diagram; ``mean_predicted`` against ``observed_rate`` is the calibration-in-the-large.
    """

    brier: float
    ece: float
    mean_predicted: float
    observed_rate: float
    reliability: tuple[tuple[float, float, int], ...]


def calibration(y_true: Any, probabilities: Any, bins: int = CALIBRATION_BINS) -> Calibration:
    y, p = _probabilities(y_true, probabilities)
    order = np.argsort(p, kind="stable")
    points: list[tuple[float, float, int]] = []
    for chunk in np.array_split(order, min(bins, y.size)):
        if chunk.size:
            points.append((float(p[chunk].mean()), float(y[chunk].mean()), int(chunk.size)))
    return Calibration(
        brier=brier(y, p),
        ece=ece(y, p, bins),
        mean_predicted=float(p.mean()),
        observed_rate=float(y.mean()),
        reliability=tuple(points),
    )


@dataclass(frozen=True)
class Confusion:
    """Counts at a cut-off: a score ``>= cutoff`` predicts the positive class (default)."""

    cutoff: float
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def accuracy(self) -> float:
        return (self.tp + self.tn) / (self.tp + self.fp + self.tn + self.fn)


@dataclass(frozen=True)
class Evaluation:
    """A held-out evaluation of a binary risk model.

    ``roc`` holds ``(fpr, tpr)`` points from ``(0, 0)`` to ``(1, 1)``; ``ks_points`` holds ``(share, tpr,
    fpr)``: the share of the population scored at or above each threshold, with both cumulative rates (the
    credit-risk team's KS chart). Both are thinned to at most :data:`CURVE_POINTS` points, keeping the ends and
    the KS point.
    """

    n: int
    positives: int
    auc: float
    ks: float
    ks_share: float
    confusion: Confusion
    roc: tuple[tuple[float, float], ...]
    ks_points: tuple[tuple[float, float, float], ...]
    calibration: Calibration | None = None
    """present when the scores were probabilities (a logistic model's), absent for points or logits"""
    baseline: Evaluation | None = None
    """the same held-out rows scored by the model the bank trained alone on its own features (locally: its
    data never leaves), to show what joining is worth; absent if the bank did not post one"""

    def with_baseline(self, baseline: Evaluation) -> Evaluation:
        """This evaluation with the bank-alone model's on the same rows beside it."""
        if baseline.n != self.n or baseline.positives != self.positives:
            raise InvalidMetricInput(
                f"the bank-alone evaluation must score the same held-out rows ({baseline.n} rows, "
                f"{baseline.positives} defaults against {self.n}, {self.positives})"
            )
        if baseline.baseline is not None:
            raise InvalidMetricInput("a bank-alone evaluation has no baseline of its own")
        return replace(self, baseline=baseline)

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(replace(self, baseline=None))
        del doc["baseline"]
        if self.baseline is not None:
            doc["baseline"] = self.baseline.to_dict()
        c = self.confusion
        doc["confusion"].update(precision=c.precision, recall=c.recall, accuracy=c.accuracy)
        doc["roc"] = [list(p) for p in self.roc]
        doc["ks_points"] = [list(p) for p in self.ks_points]
        if self.calibration is None:
            del doc["calibration"]
        else:
            doc["calibration"]["reliability"] = [list(p) for p in self.calibration.reliability]
        return doc

    @classmethod
    def from_dict(cls, doc: Any) -> Evaluation:
        """Read an evaluation back, checking every number (it may come from a client)."""
        if not isinstance(doc, dict):
            raise InvalidMetricInput("an evaluation must be an object")
        try:
            n, pos = _count(doc["n"], "n"), _count(doc["positives"], "positives")
            c = doc["confusion"]
            confusion = Confusion(
                _unit(c["cutoff"], "confusion.cutoff", lo=-math.inf, hi=math.inf),
                *(_count(c[k], f"confusion.{k}") for k in ("tp", "fp", "tn", "fn")),
            )
            roc = tuple((_unit(p[0], "roc"), _unit(p[1], "roc")) for p in doc["roc"])
            ks_points = tuple(
                (_unit(p[0], "ks_points"), _unit(p[1], "ks_points"), _unit(p[2], "ks_points"))
                for p in doc["ks_points"]
            )
            out = cls(
                n,
                pos,
                _unit(doc["auc"], "auc"),
                _unit(doc["ks"], "ks"),
                _unit(doc["ks_share"], "ks_share"),
                confusion,
                roc,
                ks_points,
                _calibration_from(doc.get("calibration"), n),
            )
            baseline = doc.get("baseline")
            if baseline is not None:
                if not isinstance(baseline, dict) or "baseline" in baseline:
                    raise InvalidMetricInput("baseline must be one evaluation object, without a baseline")
                out = out.with_baseline(cls.from_dict(baseline))
        except (KeyError, TypeError, IndexError) as exc:
            raise InvalidMetricInput(
                f"an evaluation needs n, positives, auc, ks, ks_share, confusion, roc and ks_points ({exc!r})"
            ) from None
        if not 0 < pos < n:
            raise InvalidMetricInput("positives must be between 1 and n - 1")
        if (
            confusion.tp + confusion.fp + confusion.tn + confusion.fn != n
            or confusion.tp + confusion.fn != pos
        ):
            raise InvalidMetricInput("the confusion counts must add up to n and positives")
        if not 2 <= len(roc) <= CURVE_POINTS or not 2 <= len(ks_points) <= CURVE_POINTS:
            raise InvalidMetricInput(f"each curve needs 2 to {CURVE_POINTS} points")
        for curve in (roc, ks_points):
            for k in range(len(curve[0])):
                column = [p[k] for p in curve]
                if any(b < a for a, b in itertools.pairwise(column)):
                    raise InvalidMetricInput("curve points must be in increasing order")
        return out


def _calibration_from(doc: Any, n: int) -> Calibration | None:
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise InvalidMetricInput("calibration must be an object")
    points = tuple(
        (_unit(p[0], "calibration.reliability"), _unit(p[1], "calibration.reliability"), _count(p[2], "bin"))
        for p in doc["reliability"]
    )
    if not 1 <= len(points) <= CURVE_POINTS or sum(p[2] for p in points) != n:
        raise InvalidMetricInput("the reliability bins must hold every applicant once")
    return Calibration(
        _unit(doc["brier"], "calibration.brier"),
        _unit(doc["ece"], "calibration.ece"),
        _unit(doc["mean_predicted"], "calibration.mean_predicted"),
        _unit(doc["observed_rate"], "calibration.observed_rate"),
        points,
    )


def _count(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise InvalidMetricInput(f"{name} must be a count")
    return v


def _unit(v: Any, name: str, lo: float = 0.0, hi: float = 1.0) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not lo <= v <= hi:
        raise InvalidMetricInput(f"{name} must be a finite number in [{lo}, {hi}]")
    return float(v)


def _thin(length: int, keep: int) -> np.ndarray:
    """At most :data:`CURVE_POINTS` indices from ``range(length)``: evenly spread, the ends and ``keep``."""
    if length <= CURVE_POINTS:
        return np.arange(length)
    return np.unique(np.r_[np.linspace(0, length - 1, CURVE_POINTS - 1).round().astype(int), keep])


def _clip(a: Any) -> np.ndarray:
    """Into [0, 1] (float rounding at the ends of the curves)."""
    return np.asarray(np.clip(a, 0.0, 1.0))


def evaluate(y_true: Any, scores: Any, cutoff: float = 0.5) -> Evaluation:
    """AUC, KS, the confusion matrix at ``cutoff``, both curves and (for probabilities in [0, 1]) the
    calibration, for the registry and the report."""
    if not math.isfinite(cutoff):
        raise InvalidMetricInput("the cut-off must be finite")
    y, s = _check(y_true, scores)
    curve = ks_curve(y, s)
    n, pos = int(y.size), int(y.sum())
    predicted = s >= cutoff
    tp = int(np.sum(predicted & (y == 1)))
    fp = int(np.sum(predicted & (y == 0)))
    confusion = Confusion(float(cutoff), tp, fp, n - pos - fp, pos - tp)
    share = (curve.tpr * pos + curve.fpr * (n - pos)) / n
    k = int(np.argmax(curve.gap))
    idx = _thin(len(share), k)
    return Evaluation(
        n=n,
        positives=pos,
        auc=auc(y, s),
        ks=curve.ks,
        ks_share=float(_clip(share[k])),
        confusion=confusion,
        roc=tuple(zip(_clip(curve.fpr[idx]).tolist(), _clip(curve.tpr[idx]).tolist(), strict=True)),
        ks_points=tuple(
            zip(
                _clip(share[idx]).tolist(),
                _clip(curve.tpr[idx]).tolist(),
                _clip(curve.fpr[idx]).tolist(),
                strict=True,
            )
        ),
        calibration=calibration(y, s) if np.all((s >= 0) & (s <= 1)) else None,
    )
