"""The OpenDP releases: unbiased, with the stated noise scale, clamped and binned as documented."""

from __future__ import annotations

import numpy as np
import pytest

from pps.data import dp

RNG = np.random.default_rng(7)
VALUES = RNG.lognormal(10, 1.2, 500)  # fixed data; only the noise is random
REPEATS = 1500


def test_count_is_unbiased_with_scale_one_over_epsilon() -> None:
    eps = 0.5
    draws = np.array([dp.count(VALUES, eps).value for _ in range(REPEATS)], dtype=float)
    assert dp.count(VALUES, eps).scale == pytest.approx(1 / eps, rel=1e-6)
    # discrete Laplace with scale 2: sd ≈ 2.8; the mean of 1500 draws is within 0.5 of 500 but for 1 in 10^8
    assert abs(draws.mean() - len(VALUES)) < 0.5
    assert 2.0 < draws.std() < 3.6


def test_sum_clamps_each_contribution_and_adds_laplace_noise_of_scale_bound_over_epsilon() -> None:
    lower, upper, eps = 0.0, 50_000.0, 1.0
    exact = float(np.clip(VALUES, lower, upper).sum())
    first = dp.total(VALUES, lower, upper, eps)
    assert first.scale == pytest.approx(upper / eps, rel=1e-6)
    draws = np.array([dp.total(VALUES, lower, upper, eps).value for _ in range(REPEATS)])
    sd = np.sqrt(2) * upper / eps  # Laplace(b): sd = b * sqrt(2)
    assert abs(draws.mean() - exact) < 6 * sd / np.sqrt(REPEATS)
    assert 0.85 * sd < draws.std() < 1.15 * sd
    # bounds of mixed sign: OpenDP bounds the sensitivity by upper - lower
    assert dp.total(VALUES, -80_000.0, 10.0, 2.0).scale == pytest.approx(40_005.0, rel=1e-6)
    assert dp.total(VALUES, -80_000.0, -10.0, 2.0).scale == pytest.approx(40_000.0, rel=1e-6)


def test_mean_spends_half_on_each_part_and_stays_within_the_bounds() -> None:
    lower, upper, eps = 0.0, 50_000.0, 1.0
    m, c, t = dp.mean(VALUES, lower, upper, eps)
    assert c.scale == pytest.approx(2 / eps, rel=1e-6) and t.scale == pytest.approx(2 * upper / eps, rel=1e-6)
    assert lower <= m <= upper
    means = np.array([dp.mean(VALUES, lower, upper, eps)[0] for _ in range(300)])
    assert abs(means.mean() - np.clip(VALUES, lower, upper).mean()) < 1_000
    tiny = dp.mean(np.array([1e9]), lower, upper, 0.01)[0]  # noise swamps one value; still within bounds
    assert lower <= tiny <= upper


def test_histogram_bins_like_numpy_and_is_noisy_per_bin() -> None:
    lower, upper, bins, eps = 0.0, 100_000.0, 5, 1.0
    exact = np.histogram(np.clip(VALUES, lower, upper), bins=bins, range=(lower, upper))[0]
    draws = np.array([dp.histogram(VALUES, lower, upper, bins, eps).value for _ in range(400)], dtype=float)
    assert draws.shape == (400, bins)
    assert np.all(np.abs(draws.mean(axis=0) - exact) < 0.6)
    assert dp.bin_edges(lower, upper, bins) == [0.0, 20_000.0, 40_000.0, 60_000.0, 80_000.0, 100_000.0]
    # the upper bound itself falls in the last bin, values below the lower bound in the first
    edge = dp.histogram(np.array([upper] * 50 + [-5.0] * 50), lower, upper, bins, 10.0).value
    assert abs(edge[-1] - 50) <= 3 and abs(edge[0] - 50) <= 3 and sum(edge[1:-1]) <= 6


def test_released_counts_are_never_negative_and_inputs_must_be_finite() -> None:
    assert all(dp.count(np.empty(0), 0.05).value >= 0 for _ in range(200))
    with pytest.raises(ValueError, match="finite"):
        dp.total(np.array([1.0, np.nan]), 0.0, 1.0, 1.0)
