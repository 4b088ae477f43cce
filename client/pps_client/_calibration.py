"""Recalibrating predicted default probabilities where the labels are — at the bank, moving no record.

Two corrections, both a map ``p -> sigmoid(slope * logit(p) + shift)``:

* :meth:`Recalibration.platt` (Platt scaling): fitted on a *held-out* split of the bank's own labelled
  applicants, scored by the model (joint or not); the labels never leave the bank, and nothing is retrained.
* :meth:`Recalibration.prior_shift` (intercept / prior correction): for a model trained on a sample whose
  default rate differs from the portfolio's (rare defaults over-sampled, or a cohort selected by consent),
  ``shift = logit(population rate) - logit(training rate)``, ``slope = 1`` (King & Zeng 2001).

Neither changes the ranking (AUC, KS); both change what a probability means (Brier, ECE, the expected loss).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

EPS = 1e-12


def _logit(p: Any) -> np.ndarray[Any, Any]:
    import numpy as np

    q = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.asarray(np.log(q) - np.log1p(-q))


def _checked(probabilities: Any, name: str = "probabilities") -> np.ndarray[Any, Any]:
    import numpy as np

    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"{name}: expected a non-empty vector, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"{name}: every value must be a probability in [0, 1]")
    return p


@dataclass(frozen=True)
class Recalibration:
    """``p -> sigmoid(slope * logit(p) + shift)``; :meth:`apply` maps a model's probabilities."""

    slope: float = 1.0
    shift: float = 0.0

    def apply(self, probabilities: Any) -> np.ndarray[Any, Any]:
        import numpy as np

        z = self.slope * _logit(_checked(probabilities)) + self.shift
        return np.asarray(1.0 / (1.0 + np.exp(-z)))

    @classmethod
    def prior_shift(cls, training_rate: float, population_rate: float) -> Recalibration:
        """The intercept correction for a model trained at default rate ``training_rate`` and used where the
        rate is ``population_rate`` (both in (0, 1))."""
        for name, rate in (("training_rate", training_rate), ("population_rate", population_rate)):
            if not (isinstance(rate, int | float) and 0 < rate < 1):
                raise ValueError(f"{name} must be a default rate in (0, 1), got {rate!r}")
        shift = math.log(population_rate / (1 - population_rate)) - math.log(
            training_rate / (1 - training_rate)
        )
        return cls(1.0, shift)

    @classmethod
    def platt(cls, probabilities: Any, labels: Any, *, iterations: int = 50) -> Recalibration:
        """Platt scaling fitted on a held-out split: ``probabilities`` the model gave the bank's held-out
        applicants, ``labels`` their outcomes (0/1, both present). Fitted here; nothing is sent."""
        import numpy as np

        p = _checked(probabilities)
        y = np.asarray(labels, dtype=np.float64)
        if y.shape != p.shape:
            raise ValueError(f"labels: expected {p.size} values (one per probability), got shape {y.shape}")
        if not np.all((y == 0) | (y == 1)) or y.min() == y.max():
            raise ValueError("labels: 0 or 1, and both classes present in the held-out split")
        if p.size < 50:
            raise ValueError(
                f"a held-out split of {p.size} rows is too small to recalibrate on (at least 50)"
            )
        x = np.column_stack([_logit(p), np.ones(p.size)])
        w = np.array([1.0, 0.0])
        ridge = 1e-6 * np.eye(2)
        for _ in range(iterations):
            q = 1.0 / (1.0 + np.exp(-(x @ w)))
            grad = x.T @ (q - y) / p.size + ridge @ (w - np.array([1.0, 0.0]))
            hess = (x * (q * (1 - q))[:, None]).T @ x / p.size + ridge
            step = np.linalg.solve(hess, grad)
            w -= step
            if float(np.max(np.abs(step))) < 1e-10:
                break
        return cls(float(w[0]), float(w[1]))
