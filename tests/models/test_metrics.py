"""AUC, KS and the curves behind them, against scikit-learn and by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from models import metrics


def test_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.normal(size=500) + y, 1)  # many ties
    assert metrics.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_roc_curve_matches_sklearn_points() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(size=200), 2)
    fpr, tpr, thr = sk_roc_curve(y, s, drop_intermediate=False)
    curve = metrics.roc_curve(y, s)
    np.testing.assert_allclose(curve.fpr, fpr)
    np.testing.assert_allclose(curve.tpr, tpr)
    np.testing.assert_allclose(curve.thresholds[1:], thr[1:])
    assert curve.thresholds[0] == np.inf


def test_ks_by_hand() -> None:
    y = np.array([0, 0, 1, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.8, 0.9])
    # thresholds 0.9, 0.8: TPR 2/3, FPR 0 -> gap 2/3 (at 0.4 TPR 2/3, FPR 1/3; at 0.3 TPR 1, FPR 1/3 -> 2/3)
    assert metrics.ks(y, s) == pytest.approx(2 / 3)
    curve = metrics.ks_curve(y, s)
    assert curve.ks == pytest.approx(float(np.max(np.abs(curve.tpr - curve.fpr))))
    assert curve.ks_threshold in (0.8, 0.3)  # both reach the maximum gap
    assert len(curve.gap) == len(curve.thresholds) == len(curve.tpr) == len(curve.fpr)


def test_perfect_and_inverted_scores() -> None:
    y = np.array([0, 0, 1, 1])
    assert metrics.auc(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert metrics.auc(y, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert metrics.ks(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert metrics.auc(y, [0.5, 0.5, 0.5, 0.5]) == 0.5


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.floats(-1e6, 1e6)), min_size=2, max_size=60))
def test_auc_properties(pairs: list[tuple[int, float]]) -> None:
    y = np.array([p[0] for p in pairs])
    s = np.array([p[1] for p in pairs])
    if y.min() == y.max():
        with pytest.raises(metrics.InvalidMetricInput):
            metrics.auc(y, s)
        return
    a = metrics.auc(y, s)
    assert 0.0 <= a <= 1.0
    assert metrics.auc(y, -s) == pytest.approx(1 - a, abs=1e-9)
    assert a == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    assert 0.0 <= metrics.ks(y, s) <= 1.0


@pytest.mark.parametrize(
    ("y", "s", "match"),
    [
        ([0, 1, 1], [0.1, 0.2], "equal length"),
        ([[0, 1]], [[0.1, 0.2]], "1-D"),
        ([0, 1], [0.1, float("nan")], "finite"),
        ([0, 1], [0.1, float("inf")], "finite"),
        ([0, 2], [0.1, 0.2], "0 or 1"),
        ([1, 1], [0.1, 0.2], "both classes"),
        ([], [], "no samples"),
    ],
)
def test_bad_input(y: list[object], s: list[object], match: str) -> None:
    with pytest.raises(metrics.InvalidMetricInput, match=match):
        metrics.auc(y, s)
    with pytest.raises(ValueError, match=match):
        metrics.ks(y, s)


def test_calibration_sees_what_auc_cannot() -> None:
    """Two models that rank identically: one predicts the observed 3 % rate, the other four times it."""
    from models.metrics import brier, calibration, ece, evaluate

    rng = np.random.default_rng(7)
    p = rng.beta(1, 30, size=20_000)
    y = (rng.random(p.size) < p).astype(int)
    inflated = np.clip(p * 4, 0, 1)
    good, bad = evaluate(y, p), evaluate(y, inflated)
    assert abs(good.auc - bad.auc) < 1e-3  # the ranking is the same
    assert good.calibration is not None and bad.calibration is not None
    assert good.calibration.ece < 0.01 < 0.05 < bad.calibration.ece
    assert abs(good.calibration.mean_predicted - good.calibration.observed_rate) < 0.005
    assert bad.calibration.mean_predicted > 3 * bad.calibration.observed_rate
    assert brier(y, p) < brier(y, inflated)
    assert ece(y, p) == pytest.approx(good.calibration.ece)
    cal = calibration(y, p)
    assert sum(b[2] for b in cal.reliability) == y.size and len(cal.reliability) == 10


def test_calibration_round_trips_and_is_checked() -> None:
    from models.metrics import Evaluation, InvalidMetricInput, evaluate

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    ev = evaluate(y, np.clip(y * 0.3 + rng.random(500) * 0.7, 0, 1))
    doc = ev.to_dict()
    assert Evaluation.from_dict(doc) == ev
    logits = evaluate(y, y * 2.0 - 1 + rng.normal(size=500))  # not probabilities: no calibration
    assert logits.calibration is None and "calibration" not in logits.to_dict()
    assert Evaluation.from_dict(logits.to_dict()) == logits
    doc["calibration"]["reliability"][0][2] += 1  # a bin count that no longer adds up
    with pytest.raises(InvalidMetricInput, match="reliability"):
        Evaluation.from_dict(doc)
    from models.metrics import brier

    with pytest.raises(InvalidMetricInput, match="probabilities"):
        brier(y, y * 2.0)


def test_bank_alone_baseline_rides_with_the_evaluation() -> None:
    """The bank-alone model's evaluation on the same rows travels with the joint one (JSON round trip); one
    on other rows, or a baseline of a baseline, is refused; the report draws the comparison."""
    from models.report import render_html

    rng = np.random.default_rng(4)
    y = (rng.random(400) < 0.2).astype(float)
    joint = metrics.evaluate(y, np.clip(0.2 + 0.3 * (y - 0.2) + rng.normal(0, 0.1, 400), 0.01, 0.99))
    alone = metrics.evaluate(y, np.clip(0.2 + 0.1 * (y - 0.2) + rng.normal(0, 0.1, 400), 0.01, 0.99))
    both = joint.with_baseline(alone)
    back = metrics.Evaluation.from_dict(both.to_dict())
    assert back == both and back.baseline == alone and "baseline" not in joint.to_dict()
    with pytest.raises(metrics.InvalidMetricInput, match="same held-out rows"):
        joint.with_baseline(metrics.evaluate(y[:300], np.full(300, 0.2) + 0.1 * y[:300]))
    with pytest.raises(metrics.InvalidMetricInput, match="no baseline of its own"):
        joint.with_baseline(both)
    doc = both.to_dict()
    doc["baseline"]["baseline"] = alone.to_dict()
    with pytest.raises(metrics.InvalidMetricInput, match="without a baseline"):
        metrics.Evaluation.from_dict(doc)
    page = render_html({"id": "m", "name": "joint"}, both)
    assert "Against the bank alone" in page and f"{alone.auc:.4f}" in page and page.count("<svg") == 4
    assert f"Joining gains {joint.auc - alone.auc:+.4f} AUC" in page
