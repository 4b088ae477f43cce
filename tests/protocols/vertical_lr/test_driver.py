"""The three parties driven in-process (``protocols.vertical_lr.driver``) follow their plaintext reference
(``reference.py``) and match a centralised fit on real data."""

from __future__ import annotations

import numpy as np
import pytest

from models import datasets
from protocols import paillier_fast as pf
from protocols import vertical_lr as vl
from tests.protocols.vertical_lr.common import compare_with_centralised, run, small_data


def test_breast_cancer_matches_reference_and_centralised(
    breast: datasets.VerticalSplit, coordinator_key: pf.PrivateKey
) -> None:
    n = len(breast.y_train)
    config = vl.VerticalLRConfig(epochs=10, batch_size=64, learning_rate=0.1, l2=1 / n)
    report = run(breast.guest_train, breast.host_train, breast.y_train, coordinator_key, config)
    ref_g, ref_h, ref_losses = vl.reference_fit(breast.guest_train, breast.host_train, breast.y_train, config)
    np.testing.assert_allclose(report.guest_model.weights, ref_g.weights, atol=1e-6)
    np.testing.assert_allclose(report.host_model.weights, ref_h.weights, atol=1e-6)
    assert report.guest_model.intercept == pytest.approx(ref_g.intercept, abs=1e-6)
    np.testing.assert_allclose(report.losses, ref_losses, atol=1e-5)
    assert report.losses[-1] < report.losses[0]
    auc_fed, auc_central, ks_fed, ks_central = compare_with_centralised(breast, report)
    print(
        f"breast cancer: AUC fed {auc_fed:.4f} central {auc_central:.4f}; KS fed {ks_fed:.4f} central {ks_central:.4f}"
    )
    assert abs(auc_fed - auc_central) <= 0.01
    assert abs(ks_fed - ks_central) <= 0.05


@pytest.mark.slow
def test_german_credit_matches_centralised(coordinator_key: pf.PrivateKey) -> None:
    split = datasets.german_credit_vertical()
    assert split.guest_train.shape == (700, 6) and split.host_train.shape == (700, 56)
    assert all(f.startswith(("credit_history", "number_of_existing")) for f in split.guest_features)
    n = len(split.y_train)
    config = vl.VerticalLRConfig(epochs=10, batch_size=100, learning_rate=0.3, l2=1 / n, tol=1e-5)
    report = run(split.guest_train, split.host_train, split.y_train, coordinator_key, config)
    auc_fed, auc_central, ks_fed, ks_central = compare_with_centralised(split, report)
    print(
        f"German credit: AUC fed {auc_fed:.4f} central {auc_central:.4f}; KS fed {ks_fed:.4f} central {ks_central:.4f}"
    )
    assert abs(auc_fed - auc_central) <= 0.01


def test_datasets_are_aligned_and_preprocessed(breast: datasets.VerticalSplit) -> None:
    assert breast.guest_train.shape[1] == 10 and breast.host_train.shape[1] == 20
    assert len(breast.y_train) + len(breast.y_test) == 569
    x_train, _ = breast.centralised()
    np.testing.assert_allclose(x_train.mean(axis=0), 0, atol=1e-12)
    assert abs(breast.y_train.mean() - breast.y_test.mean()) < 0.01  # stratified


def test_early_stopping_and_lr_schedule(coordinator_key: pf.PrivateKey) -> None:
    xg, xh, y = small_data()
    config = vl.VerticalLRConfig(epochs=8, batch_size=40, learning_rate=0.2, lr_decay=0.5, tol=0.05)
    report = run(xg, xh, y, coordinator_key, config)
    assert report.stopped_early and report.epochs < 8 and len(report.losses) == report.epochs
    _, _, ref_losses = vl.reference_fit(xg, xh, y, config)
    assert len(ref_losses) == report.epochs
    assert config.learning_rate_at(2) == pytest.approx(0.1)
    sqrt = vl.VerticalLRConfig(learning_rate=0.2, lr_decay=0.5, lr_decay_sqrt=True)
    assert sqrt.learning_rate_at(2) == pytest.approx(0.2 / np.sqrt(2))


def test_full_obfuscators_and_prefill_work_alike(coordinator_key: pf.PrivateKey) -> None:
    xg, xh, y = small_data(60)
    config = vl.VerticalLRConfig(epochs=2, batch_size=None, obfuscators="full", early_stopping=False)
    report = run(xg, xh, y, coordinator_key, config, prefill_workers=1)
    _, ref_h, _ = vl.reference_fit(xg, xh, y, config)
    np.testing.assert_allclose(report.host_model.weights, ref_h.weights, atol=1e-6)
    assert "obfuscator precompute" in report.seconds
