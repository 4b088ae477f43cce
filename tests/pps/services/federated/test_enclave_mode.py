"""Enclave-mode federations (issue 24 item 5) over the real API: every bank provisions its update to the
attested ``fedavg_aggregate`` job, which refuses off-terms updates and clips the rest; honest rounds give the
model secure aggregation gives, and a poisoning bank moves it by at most its clipped share."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest

from pps.runtime import Runtime
from pps_client import Client
from pps_wire.quote import Quote
from pps_wire.schemas import FederationOut
from tests.conftest import OrgHandle
from tests.pps.services.federated.test_service import entries

pytestmark = pytest.mark.db


def create(clients: list[Client], banks: list[OrgHandle], split: Any, **over: Any) -> str:
    body: dict[str, Any] = {
        "name": "enclave-aggregated model",
        "participants": [b.id for b in banks],
        "kind": "horizontal_lr",
        "feature_schema": split.feature_names,
        "rounds": 2,
        "threshold": 2,
        "clip_norm": 5.0,
        "standardise": False,
        "validation_fraction": 0.0,
        **over,
    }
    fed = clients[0].federations.create(**body)
    for c in clients[1:]:
        c.federations.accept(fed.id)
    return fed.id


def drive(
    clients: list[Client], fed_id: str, split: Any, runtime: Runtime, skip: set[int] = frozenset()
) -> FederationOut:  # type: ignore[assignment]
    key = runtime.enclave.vendor_public_key
    for _ in range(20):
        views = [
            c.federations.step(fed_id, split.banks[i].x_train, split.banks[i].y_train, vendor_key=key)
            for i, c in enumerate(clients)
            if i not in skip
        ]
        if views[-1].state in ("done", "aborted"):
            break
    return clients[0].federations.get(fed_id)


def test_an_honest_enclave_round_gives_the_secure_aggregation_model(
    clients: list[Client], banks: list[OrgHandle], split: Any, runtime: Runtime
) -> None:
    enclave = drive(clients, create(clients, banks, split, aggregation="enclave"), split, runtime)
    secagg = drive(clients, create(clients, banks, split), split, runtime)
    assert enclave.state == "done" and secagg.state == "done", (enclave.abort_reason, secagg.abort_reason)
    assert enclave.current_round == 2 and enclave.model_id is not None
    # the same local training, averaged in the enclave or under masks (up to SecAgg's 2^-20 quantisation)
    assert np.allclose(enclave.global_weights, secagg.global_weights, atol=1e-4)
    done = [e for e in entries(runtime, enclave.id) if e["action"] == "federation.round.done"]
    assert [d["detail"]["aggregation"] for d in done] == ["enclave", "enclave"]
    assert all(d["detail"]["clipped"] == 0 and d["detail"]["refused"] == [] for d in done)
    submits = [e for e in entries(runtime, enclave.id) if e["action"] == "federation.round.submit"]
    assert len(submits) == 2 * 3 and all(e["detail"]["stage"] == "enclave_input" for e in submits)


def poisoned_input(
    c: Client, fed_id: str, runtime: Runtime, shift: float, terms_over: dict[str, Any]
) -> None:
    """A malicious bank: a verified quote, then an update with ``shift`` on coordinate 0 (or other terms)."""
    view = c.federations.get(fed_id)
    assert view.enclave_terms is not None
    terms = {**view.enclave_terms, **terms_over}
    update = np.zeros(terms["dim"])
    update[0] = shift
    body = {"terms": terms, "update": update.tolist(), "weight": 500, "tail": []}
    q, ct = c.enclave.provision(
        job="fedavg_aggregate",
        slot=f"bank{view.my_position}",
        body=json.dumps(body).encode(),
        output=None,
        vendor_key=runtime.enclave.vendor_public_key,
    )
    sealed = {"quote_hash": Quote.parse(q).quote_hash.hex(), "ciphertext": base64.b64encode(ct).decode()}
    c._call("POST", f"/v1/federations/{fed_id}/enclave-input", FederationOut, json_body={"update": sealed})


def test_a_poisoning_bank_is_clipped_and_an_off_terms_one_refused_and_rounds_complete(
    clients4: list[Client], banks4: list[OrgHandle], split4: Any, runtime: Runtime
) -> None:
    clients, banks, split = clients4, banks4, split4
    fed_id = create(clients, banks, split, aggregation="enclave", rounds=2, threshold=3)
    start = np.array(clients[0].federations.get(fed_id).global_weights)
    # round 1: bank 4 sends the payload (+419,430 on one coordinate)
    poisoned_input(clients[3], fed_id, runtime, 419_430.0, {})
    view = drive(clients[:3], fed_id, split, runtime, skip=set())
    assert view.current_round == 2 or view.state == "done"
    r1 = next(e for e in entries(runtime, fed_id) if e["action"] == "federation.round.done")
    assert r1["detail"]["clipped"] >= 1 and r1["detail"]["survivors"] == sorted(b.id for b in banks)
    with runtime.db.transaction(write=False) as s:
        from pps.infra.storage.tables import FederationRound

        rnd = s.get(FederationRound, (fed_id, 1))
        assert rnd is not None and rnd.result_weights is not None and rnd.total_weight is not None
        moved = np.frombuffer(rnd.result_weights, dtype="<f8") - start
        assert abs(moved[0]) <= 5.0  # not +419,430: at most the clip norm, weighted by the bank's share
        assert (
            abs(moved[0]) <= 500 * 5.0 / rnd.total_weight + 5.0 * (rnd.total_weight - 500) / rnd.total_weight
        )
    # round 2: bank 4 claims a looser clip norm: refused and named, the three others are summed
    poisoned_input(clients[3], fed_id, runtime, 419_430.0, {"clip_norm": 1e6})
    view = drive(clients[:3], fed_id, split, runtime)
    assert view.state == "done" and view.model_id is not None, view.abort_reason
    r2 = [e for e in entries(runtime, fed_id) if e["action"] == "federation.round.done"][1]
    assert r2["detail"]["refused"] == [banks[3].id] and banks[3].id in r2["detail"]["dropped"]
