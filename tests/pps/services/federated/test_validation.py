"""Federated standardisation, the secure validation loss, early stopping and the refusal of useless models,
over the real API and database (issue 16's horizontal half)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from models.metrics import auc
from pps.runtime import Runtime
from pps_client import Client
from pps_wire.federated import FRAC_BITS
from pps_wire.schemas import FederationOut
from protocols.errors import TrainingDiverged
from tests.conftest import OrgHandle
from tests.pps.services.federated.test_service import entries, step_all

pytestmark = pytest.mark.db


def raw_scale(split: Any) -> Any:
    """The split as banks hold it before anyone standardised: registered capital as an amount in currency
    units (~5e5, replacing its log) and a constant column of 1000 appended."""
    j = split.feature_names.index("log_registered_capital")

    def amounts(x: Any) -> Any:
        return np.column_stack([x[:, :j], 5e5 + 1e5 * x[:, j], x[:, j + 1 :], np.full(len(x), 1000.0)])

    return replace(
        split,
        feature_names=[*split.feature_names[:j], "amount", *split.feature_names[j + 1 :], "constant"],
        banks=[
            replace(
                b,
                x_train=amounts(b.x_train),
                x_test=amounts(b.x_test),
            )
            for b in split.banks
        ],
    )


def run(clients: list[Client], banks: list[OrgHandle], split: Any, **over: Any) -> FederationOut:
    body = {
        "name": "raw portfolio model",
        "participants": [b.id for b in banks],
        "kind": "horizontal_lr",
        "feature_schema": split.feature_names,
        "rounds": 8,
        "threshold": 2,
        "local_epochs": 2,
        "clip_norm": 5.0,
        **over,
    }
    fed = clients[0].federations.create(**body)
    for c in clients[1:]:
        c.federations.accept(fed.id)
    for _ in range(4 * (body["rounds"] + 1)):
        views = step_all(clients, fed.id, split)
        if views[-1].state in ("done", "aborted"):
            break
    return clients[0].federations.get(fed.id)


def test_raw_amounts_and_a_constant_column_train_a_good_model_with_joint_statistics(
    clients: list[Client], banks: list[OrgHandle], split: Any, runtime: Runtime
) -> None:
    """Unstandardised amounts and a constant column of 1000: round 0 sums the banks' moments securely, every
    bank standardises with the joint statistics, and the registered model (folded onto raw features) scores as
    well as the same federation on pre-standardised data."""
    raw = raw_scale(split)
    view = run(clients, banks, raw)
    assert view.state == "done" and view.model_id is not None, view.abort_reason
    # the joint statistics are those of all banks' rows pooled, to the fixed point's precision
    x_all = np.concatenate([b.x_train for b in raw.banks])
    stats = view.standardisation
    assert stats is not None and stats["rows"] == len(x_all)
    assert np.allclose(stats["mean"], x_all.mean(axis=0), rtol=1e-9, atol=2.0**-FRAC_BITS)
    std = x_all.std(axis=0)
    varying = std > 0
    assert np.allclose(np.array(stats["scale"])[varying], std[varying], rtol=1e-6)
    assert "constant" in stats["constant"]  # centred to zeros, never divided by a zero variance
    # round 1 starts from the joint base rate (its loss is the constant prediction's); the securely aggregated
    # validation loss then falls well below it
    assert stats["positives"] == int(sum(b.y_train.sum() for b in raw.banks))
    losses = [v["loss"] for v in view.validation]
    assert len(losses) >= 2 and abs(losses[0] - view.validation[0]["prior_loss"]) < 0.01
    assert min(losses) < view.validation[0]["prior_loss"] - 0.02
    # the model on raw features scores held-out rows like the pooled logistic regression
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_test, y_test = raw.pooled_test()
    fed_auc = auc(y_test, clients[0].federations.model(view).decision_function(x_test))
    pooled = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(*raw.pooled_train())
    pooled_auc = auc(y_test, pooled.decision_function(x_test))
    assert fed_auc > pooled_auc - 0.02, (fed_auc, pooled_auc)
    # the registry records how training ended; the artifact carries the statistics and raw-feature weights
    model = clients[0].models.get(view.model_id)
    training = model.training
    assert training["standardised"] is True and training["rounds_run"] == len(view.validation)
    assert training["stopped"] in ("early_stopping", "round_limit")
    assert training["converged"] is (training["stopped"] == "early_stopping")
    assert [v["loss"] for v in training["validation_loss"]] == losses
    assert view.outcome is not None and view.outcome["rounds_run"] == training["rounds_run"]
    # the ledger says round 0 was the statistics round, with integers only
    done = [e for e in entries(runtime, view.id) if e["action"] == "federation.round.done"]
    assert done[0]["detail"]["round"] == 0 and done[0]["detail"]["statistics"] is True
    assert "constant" in done[0]["detail"]["constant_features"]
    assert "amount" not in done[0]["detail"]["constant_features"]
    assert all(
        not isinstance(v, float)
        for e in entries(runtime, view.id)
        for v in json.loads(json.dumps(e["detail"])).values()
    )


def test_early_stopping_keeps_the_best_round_and_says_it_converged(
    clients: list[Client], banks: list[OrgHandle], split: Any
) -> None:
    view = run(
        clients, banks, split, rounds=20, patience=1, min_delta=0.02, learning_rate=0.5, local_epochs=3
    )
    assert view.state == "done", view.abort_reason
    assert view.outcome is not None and view.outcome["stopped"] == "early_stopping"
    assert view.outcome["converged"] is True and view.outcome["rounds_run"] < 20
    best = view.outcome["best_round"]
    losses = {v["round"]: v["loss"] for v in view.validation}
    # the kept round is the last that improved by at least min_delta: later rounds did not beat it by as much
    assert losses[best] <= min(losses.values()) + 0.02
    assert all(losses[r] > losses[best] - 0.02 for r in losses if r > best)
    assert "did not improve for 1 rounds" in view.outcome["reason"]


def test_a_model_no_better_than_the_base_rate_is_refused_not_registered(
    clients: list[Client], banks: list[OrgHandle], split: Any
) -> None:
    """Ten times too few steps (a learning rate of 1e-4): the last measured validation loss is above the loss of
    predicting the base rate, so the federation stops with the cause and the fix and registers nothing."""
    view = run(clients, banks, split, rounds=3, learning_rate=1e-4)
    assert view.state == "aborted" and view.model_id is None
    assert view.abort_reason is not None and "no better than predicting the base rate" in view.abort_reason
    assert view.outcome is not None and view.outcome["code"] == "training_diverged"
    assert clients[0].models.list() == []
    # train() says so with the error vertical training raises, naming the cause and the fix
    with pytest.raises(TrainingDiverged, match="no better than predicting the base rate"):
        clients[1].federations.train(view.id, split.banks[1].x_train, split.banks[1].y_train, timeout=5)


def test_a_rising_validation_loss_stops_training_as_divergent(
    clients: list[Client], banks: list[OrgHandle], split: Any
) -> None:
    view = run(clients, banks, split, rounds=6, learning_rate=200.0, clip_norm=1e5, local_epochs=3)
    assert view.state == "aborted" and view.model_id is None
    assert view.abort_reason is not None and "validation loss rose" in view.abort_reason
    assert "standardise" in view.abort_reason
