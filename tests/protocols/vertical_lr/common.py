"""Helpers of the vertical-LR tests: small data, a run of the three parties, a set-up session.

Coordinator keys are 1024-bit here for speed (the default is 2048).
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from models import datasets, metrics
from protocols import paillier_fast as pf
from protocols import vertical_lr as vl

KEY_BITS = 1024  # test-only size


def small_data(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xg, xh = rng.normal(size=(n, 3)), rng.normal(size=(n, 4))
    y = (xg[:, 0] - xh[:, 1] + rng.normal(size=n) > 0).astype(float)
    return xg, xh, y


def run(
    xg: np.ndarray,
    xh: np.ndarray,
    y: np.ndarray,
    key: pf.PrivateKey,
    config: vl.VerticalLRConfig,
    **kw: object,
) -> vl.TrainingReport:
    return vl.train_vertical_lr(vl.Guest(xg, y), vl.Host(xh), vl.Coordinator(key), config, **kw)  # type: ignore[arg-type]


def compare_with_centralised(
    split: datasets.VerticalSplit, report: vl.TrainingReport
) -> tuple[float, float, float, float]:
    x_train, x_test = split.centralised()
    central = LogisticRegression(C=1.0, max_iter=5000).fit(x_train, split.y_train)
    z_central = central.decision_function(x_test)
    z_fed = report.guest_model.partial_logit(split.guest_test) + report.host_model.partial_logit(
        split.host_test
    )
    return (
        metrics.auc(split.y_test, z_fed),
        metrics.auc(split.y_test, z_central),
        metrics.ks(split.y_test, z_fed),
        metrics.ks(split.y_test, z_central),
    )


def set_up(
    key: pf.PrivateKey, n_guest: int = 60, n_host: int = 60, batch: int = 20
) -> tuple[vl.Guest, vl.Host, vl.Coordinator, bytes]:
    xg, xh, y = small_data(max(n_guest, n_host))
    guest, host, coord = vl.Guest(xg[:n_guest], y[:n_guest]), vl.Host(xh[:n_host]), vl.Coordinator(key)
    pk_msg = coord.public_key_message()
    guest.receive_public_key(pk_msg)
    host.receive_public_key(pk_msg)
    setup = guest.setup(vl.VerticalLRConfig(epochs=2, batch_size=batch))
    coord.receive_setup(setup)
    return guest, host, coord, setup
