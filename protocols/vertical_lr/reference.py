"""What the protocol computes, in plaintext floats (same batches, schedule, quantised features in the gradient,
exact or Taylor loss, early stopping): the tests check the protocol against it, a deployment can too."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from protocols import paillier_fast as pf
from protocols.vertical_lr.inputs import VerticalLRConfig, batches_for, check_features, check_labels
from protocols.vertical_lr.scoring import GuestModel, HostModel, sigmoid, standardisation


def reference_fit(
    guest_features: Any, host_features: Any, labels: Any, config: VerticalLRConfig
) -> tuple[GuestModel, HostModel, list[float]]:
    """What :func:`train_vertical_lr` computes, in plaintext floats (same batches, schedule, quantised
    features in the gradient, the exact or Taylor loss, early stopping). For tests and for checking a
    deployment."""
    xg = check_features(guest_features, "guest features")
    xh = check_features(host_features, "host features", xg.shape[0])
    y = check_labels(labels, xg.shape[0])
    fb = config.feature_frac_bits
    xgq = pf.quantize(xg, fb) / 2.0**fb
    xhq = pf.quantize(xh, fb) / 2.0**fb
    wg, wh, b = np.zeros(xg.shape[1]), np.zeros(xh.shape[1]), 0.0
    losses: list[float] = []
    since = 0
    for epoch in range(config.epochs):
        total = 0.0
        lr = config.learning_rate_at(epoch)
        for rows in batches_for(config, xg.shape[0], epoch):
            ug = xg[rows] @ wg + b
            uh = xh[rows] @ wh
            z = ug + uh
            if config.loss == "exact":
                d = 1.0 / (1.0 + np.exp(-z)) - y[rows]
                total += float(np.sum(np.logaddexp(0.0, z) - y[rows] * z))
            else:
                d = z / 4 + 0.5 - y[rows]
                total += float(np.sum(math.log(2.0) + (0.5 - y[rows]) * z + z * z / 8))
            total += len(rows) * config.l2 / 2 * float(wg @ wg + wh @ wh)
            gg = xgq[rows].T @ d / len(rows) + config.l2 * wg
            gh = xhq[rows].T @ d / len(rows) + config.l2 * wh
            b -= lr * float(d.mean())
            wg, wh = wg - lr * gg, wh - lr * gh
        if not config.compute_loss:
            continue
        loss = total / xg.shape[0]
        since = since + 1 if losses and abs(losses[-1] - loss) < config.tol else 0
        losses.append(loss)
        if config.early_stopping and since >= config.patience:
            break
    return GuestModel(wg, b), HostModel(wh), losses


def local_fit(features: Any, labels: Any, *, l2: float | None = None, iterations: int = 100) -> GuestModel:
    """The bank-alone baseline: a logistic regression on the bank's own features only, fitted where the bank's
    data is (nothing is sent anywhere), to the exact optimum (Newton's method) of the mean logistic loss plus
    ``l2/2 |w|^2`` (``None``: ``1/n``, scikit-learn's ``C = 1``). Columns are standardised over these rows and
    the statistics kept in the model, as :meth:`pps_client` training does for the joined model, so that both
    are scored on the same raw features."""
    x = check_features(features, "bank features")
    y = check_labels(labels, x.shape[0])
    n, p = x.shape
    mean, scale = standardisation(x)
    xs = np.hstack([(x - mean) / scale, np.ones((n, 1))])
    lam = 1.0 / n if l2 is None else float(l2)
    penalty = np.full(p + 1, lam)
    penalty[-1] = 0.0  # not on the intercept
    w = np.zeros(p + 1)
    for _ in range(iterations):
        prob = sigmoid(xs @ w)
        grad = xs.T @ (prob - y) / n + penalty * w
        hess = (xs * (prob * (1 - prob))[:, None]).T @ xs / n + np.diag(penalty) + 1e-10 * np.eye(p + 1)
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.max(np.abs(step))) < 1e-10:
            break
    return GuestModel(w[:p].copy(), float(w[p]), mean, scale)
