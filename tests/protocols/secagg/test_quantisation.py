"""Updates to field elements and back (``protocols.secagg.quantisation``)."""

from __future__ import annotations

import numpy as np
import pytest

from protocols.secagg import (
    SecAggParams,
    dequantise,
    quantise,
)


def test_stochastic_rounding_is_unbiased_and_the_weight_travels_along() -> None:
    p = SecAggParams(n=3, threshold=2, dim=1, clip_norm=1.0, levels=4)
    rng = np.random.default_rng(1)
    vals = [dequantise(quantise([0.3], 1, p, rng), p)[0][0] for _ in range(4000)]
    assert abs(np.mean(vals) - 0.3) < 0.01
    assert set(np.round(vals, 6)) == {0.25, 0.5}
    assert dequantise(quantise([0.3], 7, p, rng), p)[1] == 7


def test_updates_are_clipped_to_the_norm() -> None:
    p = SecAggParams(n=3, threshold=2, dim=3, clip_norm=1.0)
    total, _ = dequantise(quantise([30.0, 40.0, 0.0], 1, p), p)
    assert np.linalg.norm(total) == pytest.approx(1.0, abs=1e-5)
