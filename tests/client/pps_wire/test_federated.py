"""The horizontal model's shared pieces: joint statistics from summed moments, folding standardisation into
the weights, the validation split and loss, and the early-stopping rule (``pps_wire.federated``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pps_wire.federated import (
    FRAC_BITS,
    FedLogisticRegression,
    FedMLP,
    best_round,
    fold_standardisation,
    joint_standardisation,
    local_moments,
    mean_loss,
    prior_loss,
    standardise,
    validation_split,
    validation_tail,
    with_prior_bias,
)


def _banks(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    rng = np.random.default_rng(seed)
    n = 900
    x = np.column_stack([rng.normal(5e5, 1e5, n), np.full(n, 1000.0), rng.random(n), rng.integers(0, 2, n)])
    y = (rng.random(n) < 0.1).astype(float)
    return x, y, [(x[:200], y[:200]), (x[200:550], y[200:550]), (x[550:], y[550:])]


def test_summed_moments_give_the_pooled_mean_and_standard_deviation() -> None:
    x, y, banks = _banks()
    total = [sum(v) for v in zip(*(local_moments(bx, by, 4) for bx, by in banks), strict=True)]
    stats = joint_standardisation(total, 4)
    assert stats["rows"] == len(x) and stats["positives"] == int(y.sum())
    assert np.allclose(stats["mean"], x.mean(axis=0), rtol=1e-12, atol=2.0**-FRAC_BITS)
    assert np.allclose(np.array(stats["scale"])[[0, 2, 3]], x.std(axis=0)[[0, 2, 3]], rtol=1e-9)
    assert stats["constant"] == [1] and stats["scale"][1] == 1.0  # centred, never divided by zero
    z = standardise(x, stats)
    assert np.allclose(z[:, 1], 0.0)


def test_a_value_too_large_to_aggregate_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="rescale the feature"):
        local_moments(np.array([[1e30], [1.0]]), np.array([0, 1]), 1)
    with pytest.raises(ValueError, match="both labels"):
        joint_standardisation([10, 0, 5 << FRAC_BITS, 5 << FRAC_BITS], 1)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["lr", "mlp"]))
def test_folded_weights_score_raw_rows_like_the_model_on_standardised_rows(seed: int, kind: str) -> None:
    x, _, _ = _banks(seed % 100)
    stats = {"mean": list(x.mean(axis=0)), "scale": [float(s) or 1.0 for s in x.std(axis=0)]}
    model = FedLogisticRegression(4) if kind == "lr" else FedMLP(4, hidden=3)
    model.set_flat(np.random.default_rng(seed).normal(size=model.n_params))
    folded = fold_standardisation(model, stats)
    assert np.allclose(folded.decision_function(x), model.decision_function(standardise(x, stats)), atol=1e-8)


def test_the_validation_split_holds_out_each_label_the_same_way_every_round() -> None:
    y = np.array([1] * 10 + [0] * 90)
    train, held = validation_split(100, y, 0.2, seed=3)
    again = validation_split(100, y, 0.2, seed=3)
    assert np.array_equal(held, again[1]) and len(set(train) & set(held)) == 0
    assert len(train) + len(held) == 100 and y[held].sum() == 2 and len(held) == 20
    assert len(validation_split(100, y, 0.0, seed=3)[1]) == 0


def test_the_validation_tail_is_the_log_loss_and_the_prior_loss_the_base_rate_one() -> None:
    x, y, _ = _banks()
    model = FedLogisticRegression(4).set_flat(
        with_prior_bias(np.zeros(5), {"rows": len(y), "positives": y.sum()})
    )
    tail = validation_tail(model, x, y)
    p = y.mean()
    assert tail[1:] == [len(y), int(y.sum())]
    assert mean_loss(tail) == pytest.approx(
        prior_loss(tail), rel=1e-6
    )  # the base-rate model scores the prior
    assert prior_loss(tail) == pytest.approx(-(p * math.log(p) + (1 - p) * math.log(1 - p)))
    blown = FedLogisticRegression(4).set_flat([1e300, 0, 0, 0, 0])
    assert math.isfinite(mean_loss(validation_tail(blown, x, y)))  # capped per row, never inf


def test_best_round_counts_only_improvements_beyond_min_delta() -> None:
    losses = [(1, 0.30), (2, 0.25), (3, 0.2499), (4, 0.26)]
    assert best_round(losses, 1e-3) == (2, 0.25)
    assert best_round(losses, 0.0) == (3, 0.2499)


def test_a_validation_loss_over_few_positives_does_not_judge() -> None:
    from pps_wire.federated import MIN_VALIDATION_CLASS, judges

    assert judges(1000, MIN_VALIDATION_CLASS) and not judges(1000, MIN_VALIDATION_CLASS - 1)
    assert not judges(MIN_VALIDATION_CLASS + 5, 10)  # too few negatives
