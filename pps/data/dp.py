"""Differentially private releases of cohort statistics, built from OpenDP measurements.

The unit of privacy is one **subject** (an enterprise). Each function takes the per-subject contributions of
one cohort — one value per subject, already summed over that subject's rows (months) — so adding or removing
one subject changes the input by one row (symmetric distance 1). OpenDP then clamps, aggregates and adds
noise, and computes the sensitivity itself (including the slack its float sums need for rounding); every
measurement is checked with its own privacy map to cost at most the ``epsilon`` it was given (pure ε-DP,
``MaxDivergence``). Nothing here samples noise by hand.

===========  =================================================  ===============================  =============
statistic    OpenDP pipeline on the per-subject vector           sensitivity (d_in = 1 subject)   noise scale
===========  =================================================  ===============================  =============
count        count → discrete Laplace                            1                                1/ε
sum          clamp [L, U] → sum → Laplace                        Δ = max(|L|, |U|) (+ float        Δ/ε
                                                                 slack); U − L if L < 0 < U
mean         (count, sum) composed, ε/2 each; sum / count        as above                         2/ε, 2Δ/ε
histogram    clamp → bin (equal width) → count by bin → d. Lap.  1 (L1: a subject is in one bin)   1/ε
===========  =================================================  ===============================  =============

Post-processing (free): counts are rounded up to 0, a mean is clamped into [L, U]. ``dp.enable_features
("contrib")`` is set on import: OpenDP marks these constructors as contributed (peer review pending).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@functools.cache
def _dp() -> Any:
    """OpenDP, imported on first use: it pulls in heavy modules every ``pps`` command would otherwise pay for."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


MECHANISM = "laplace"
"""Discrete Laplace for counts, continuous (OpenDP's float) Laplace for sums."""

FloatArray = npt.NDArray[np.float64]
_SLACK = 1.0 + 1e-9  # scale a hair above Δ/ε so the privacy map stays <= ε after float rounding


@dataclass(frozen=True)
class Noisy:
    """A released statistic and the scale of the Laplace noise in it (for the caller's error bars)."""

    value: Any
    scale: float


def _then_sum() -> Any:
    return _dp().t.then_sum()


def _then_find_bin(edges: list[float]) -> Any:
    return _dp().t.then_find_bin(edges=edges)


def _space() -> tuple[Any, Any]:
    return _dp().vector_domain(_dp().atom_domain(T=float, nan=False)), _dp().symmetric_distance()


def _check(meas: Any, epsilon: float) -> Any:
    spent = float(meas.map(1))
    if spent > epsilon * (1 + 1e-12):
        raise AssertionError(f"measurement costs {spent} > epsilon {epsilon}")  # a bug, never input
    return meas


def _with_scale(transformation: Any, epsilon: float) -> tuple[Any, float]:
    """Append Laplace noise at the scale that makes the whole pipeline cost ``epsilon``."""
    sensitivity = float(transformation.map(1))
    scale = max(sensitivity, 1e-300) / epsilon * _SLACK
    return _check(transformation >> _dp().m.then_laplace(scale=scale), epsilon), scale


def _checked_input(values: FloatArray) -> FloatArray:
    values = np.ascontiguousarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError("per-subject contributions must be finite")
    return values


def count(values: FloatArray, epsilon: float) -> Noisy:
    """How many subjects (rows of ``values``), with discrete Laplace noise."""
    meas, scale = _with_scale(_space() >> _dp().t.then_count(), epsilon)
    return Noisy(max(0, int(meas(_checked_input(values)))), scale)


def total(values: FloatArray, lower: float, upper: float, epsilon: float) -> Noisy:
    """The sum of the contributions clamped to ``[lower, upper]``, with Laplace noise."""
    meas, scale = _with_scale(_space() >> _dp().t.then_clamp((lower, upper)) >> _then_sum(), epsilon)
    return Noisy(float(meas(_checked_input(values))), scale)


def mean(values: FloatArray, lower: float, upper: float, epsilon: float) -> tuple[float, Noisy, Noisy]:
    """(mean, count, sum): noisy sum / noisy count, each at ε/2, composed (OpenDP checks the total)."""
    half = epsilon / 2
    count_meas, count_scale = _with_scale(_space() >> _dp().t.then_count(), half)
    sum_meas, sum_scale = _with_scale(_space() >> _dp().t.then_clamp((lower, upper)) >> _then_sum(), half)
    both = _check(_dp().c.make_composition([count_meas, sum_meas]), epsilon)
    noisy_count, noisy_sum = both(_checked_input(values))
    n = max(0, int(noisy_count))
    m = min(max(float(noisy_sum) / max(n, 1), lower), upper)
    return m, Noisy(n, count_scale), Noisy(float(noisy_sum), sum_scale)


def bin_edges(lower: float, upper: float, bins: int) -> list[float]:
    """The ``bins + 1`` edges of equal-width bins over ``[lower, upper]``."""
    return [float(x) for x in np.linspace(lower, upper, bins + 1)]


def histogram(values: FloatArray, lower: float, upper: float, bins: int, epsilon: float) -> Noisy:
    """Counts of subjects per equal-width bin of the clamped contribution, discrete Laplace on each bin."""
    inner = bin_edges(lower, upper, bins)[1:-1]  # OpenDP's find_bin: k inner edges → k + 1 bins
    transformation = (
        _space()
        >> _dp().t.then_clamp((lower, upper))
        >> _then_find_bin(inner)
        >> _dp().t.then_count_by_categories(categories=list(range(bins)), null_category=False)
    )
    meas, scale = _with_scale(transformation, epsilon)
    return Noisy([max(0, int(c)) for c in meas(_checked_input(values))], scale)
