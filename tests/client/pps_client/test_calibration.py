"""Recalibration at the bank (Platt scaling on a held-out split, the prior/intercept correction): it fixes what
a probability means without touching the ranking, on real loan data, and refuses bad input."""

from __future__ import annotations

import numpy as np
import pytest

from models import datasets, metrics
from pps_client import Recalibration
from protocols import vertical_lr as vl


def test_platt_on_a_held_out_split_calibrates_a_taylor_model_without_changing_its_ranking() -> None:
    """The Taylor-loss vertical model over-predicts defaults; Platt scaling fitted on half of the held-out rows
    (the bank's labels, at the bank) brings the other half's ECE near the exact model's, AUC unchanged."""
    split = datasets.credit_data_vertical()
    n = len(split.y_train)
    cfg = vl.VerticalLRConfig(epochs=30, batch_size=64, learning_rate=0.3, l2=1 / n, tol=1e-6, loss="taylor")
    g, h, _ = vl.reference_fit(split.guest_train, split.host_train, split.y_train, cfg)
    p = vl.sigmoid(g.partial_logit(split.guest_test) + h.partial_logit(split.host_test))
    half = np.arange(len(p)) % 2 == 0  # calibration rows / evaluation rows
    fix = Recalibration.platt(p[half], split.y_test[half])
    before, after = p[~half], fix.apply(p[~half])
    y = split.y_test[~half]
    assert metrics.ece(y, after) < 0.5 * metrics.ece(y, before)
    assert metrics.ece(y, after) < 0.04 and metrics.brier(y, after) < metrics.brier(y, before)
    assert metrics.auc(y, after) == pytest.approx(metrics.auc(y, before), abs=1e-12)
    assert abs(float(after.mean()) - float(y.mean())) < abs(float(before.mean()) - float(y.mean()))


def test_prior_shift_moves_an_oversampled_model_to_the_portfolio_rate() -> None:
    """A model trained with defaults over-sampled to 28 % predicts about 28 % on a 3 % portfolio; the intercept
    correction brings its mean prediction to about 3 %."""
    frame, y = datasets.credit_data_frame()
    rare, y_rare = datasets.with_positive_rate(frame, y, 0.03, seed=1)
    train = datasets.split_frame("cd", frame, y, datasets.CREDIT_DATA_BANK, datasets.CREDIT_DATA_PLATFORM)
    test = datasets.split_frame("cd3", rare, y_rare, datasets.CREDIT_DATA_BANK, datasets.CREDIT_DATA_PLATFORM)
    model = vl.local_fit(train.guest_train, train.y_train)
    p = vl.sigmoid(model.partial_logit(test.guest_test))
    fixed = Recalibration.prior_shift(float(train.y_train.mean()), 0.03).apply(p)
    assert float(p.mean()) > 0.15
    assert abs(float(fixed.mean()) - 0.03) < 0.015
    assert metrics.ece(test.y_test, fixed) < metrics.ece(test.y_test, p)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: Recalibration.prior_shift(0.0, 0.03), "training_rate"),
        (lambda: Recalibration.prior_shift(0.2, 1.5), "population_rate"),
        (lambda: Recalibration.platt([0.1] * 60, [0] * 60), "both classes"),
        (lambda: Recalibration.platt([0.1] * 60, [0, 1] * 20), "one per probability"),
        (lambda: Recalibration.platt([0.1, 0.9] * 10, [0, 1] * 10), "too small"),
        (lambda: Recalibration.platt([1.2] * 60, [0, 1] * 30), "probability"),
        (lambda: Recalibration().apply([np.nan]), "probability"),
    ],
)
def test_bad_input_is_refused_by_name(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]
