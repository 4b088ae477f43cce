"""Horizontal training over the real API and database: drop-outs, restarts, refusals, ledger entries."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import numpy as np
import pytest

from api.app import create_app
from api.live import running_server
from pps.infra.settings import Settings
from pps.infra.storage.tables import FederationMessage, FederationRound, Role, utcnow
from pps.ledger.store import EntryFilter
from pps.runtime import Runtime
from pps_client import Client, Conflict, InvalidRequest
from pps_wire.schemas import FederationOut
from protocols.secagg import SecAggAborted, Stage
from tests.conftest import OrgFactory, OrgHandle

pytestmark = pytest.mark.db


def past_the_deadline(rt: Runtime) -> None:
    """The service's clock moves past any phase deadline (the default timeout is 600 s)."""
    rt.federated.clock = lambda: utcnow() + timedelta(hours=1)


def create(fc: Client, banks: list[OrgHandle], split: Any, **over: Any) -> FederationOut:
    body = {
        "name": "sme default model",
        "participants": [b.id for b in banks],
        "kind": "horizontal_lr",
        "feature_schema": split.feature_names,
        "rounds": 2,
        "threshold": 2,
        "local_epochs": 1,
        "clip_norm": 5.0,
        # these tests exercise the secure-aggregation rounds; round 0 (statistics) and validation have their own
        "standardise": False,
        "validation_fraction": 0.0,
        **over,
    }
    return fc.federations.create(**body)


def started(clients: list[Client], banks: list[OrgHandle], split: Any, **over: Any) -> str:
    fed = create(clients[0], banks, split, **over)
    assert fed.state == "inviting" and fed.round is None
    for c in clients[1:]:
        view = c.federations.accept(fed.id)
    assert view.state == "running" and view.round is not None and view.round.phase == "advertise_keys"
    return fed.id


def step_all(
    clients: list[Client], fed_id: str, split: Any, skip: set[int] = frozenset()
) -> list[FederationOut]:  # type: ignore[assignment]
    return [
        c.federations.step(fed_id, split.banks[i].x_train, split.banks[i].y_train)
        for i, c in enumerate(clients)
        if i not in skip
    ]


def _phase(view: FederationOut) -> str:
    assert view.round is not None
    return view.round.phase


def entries(rt: Runtime, fed_id: str) -> list[dict[str, Any]]:
    with rt.db.transaction(write=False) as s:
        found = rt.ledger.entries(s, EntryFilter(object=("federation", fed_id)), limit=1000)
    return [json.loads(e.entry) for e in found]


def test_four_banks_train_with_one_dropping_out_mid_round(
    clients4: list[Client], banks4: list[OrgHandle], split4: Any, runtime: Runtime
) -> None:
    clients, banks, split = clients4, banks4, split4
    fed_id = started(clients, banks, split, threshold=3)
    start = np.array(clients[0].federations.get(fed_id).global_weights)
    step_all(clients, fed_id, split)  # keys advertised
    step_all(clients, fed_id, split)  # shares sent
    assert _phase(clients[0].federations.get(fed_id)) == "masked_input"
    views = step_all(clients, fed_id, split, skip={3})  # bank 4 goes away before sending its update
    assert _phase(views[-1]) == "masked_input"
    # before the deadline nobody, the initiator included, closes the phase without bank 4
    for c in clients[:2]:
        with pytest.raises(Conflict, match="have not posted") as err:
            c.federations.advance(fed_id)
        assert err.value.details["waiting_for"] == [banks[3].id]
    saved = runtime.federated.clock
    past_the_deadline(runtime)
    assert _phase(clients[1].federations.advance(fed_id)) == "unmask"  # after it, any participant may
    runtime.federated.clock = saved
    step_all(clients, fed_id, split, skip={3})
    view = clients[0].federations.get(fed_id)
    assert view.current_round == 2 and _phase(view) == "advertise_keys"
    # round 1's result is the weighted mean of banks 1 to 3's local updates (up to quantisation)
    deltas, weights = [], []
    for i in (0, 1, 2):
        b = split.banks[i]
        m = clients[0].federations.model(view.model_copy(update={"global_weights": start.tolist()}))
        deltas.append(m.fit(b.x_train, b.y_train).get_flat() - start)
        weights.append(len(b.y_train))
    want = start + sum(w * d for w, d in zip(weights, deltas, strict=True)) / sum(weights)
    assert np.allclose(np.array(view.global_weights), want, atol=1e-4)
    # round 2: bank 4 is back with fresh keys
    for _ in range(4):
        views = step_all(clients, fed_id, split)
    done = clients[3].federations.get(fed_id)
    assert done.state == "done" and done.model_id is not None
    actions = [e["action"] for e in entries(runtime, fed_id)]
    assert actions.count("federation.round.done") == 2 and actions.count("federation.accept") == 3
    assert actions.count("federation.round.submit") == 4 + 4 + 3 + 3 + 4 * 4
    first = next(e for e in entries(runtime, fed_id) if e["action"] == "federation.round.done")
    assert first["detail"]["dropped"] == [banks[3].id]
    assert first["detail"]["total_weight"] == sum(weights)
    model = clients[0].models.get(done.model_id)
    assert model.kind == "horizontal_lr"


def test_the_initiator_cannot_learn_a_bank_update_by_closing_on_two_survivors(
    clients: list[Client], banks: list[OrgHandle], split: Any, runtime: Runtime
) -> None:
    """n=3, t=2. If the initiator could close the masked-input phase as soon as it and one victim had posted,
    the round would publish the new global model and total weight of the two: the initiator, knowing its own
    weight and update, would solve for the victim's. Early closing is refused, and after the deadline (the
    same outcome through natural drop-outs) the round aborts and publishes nothing."""
    fed_id = started(clients, banks, split, rounds=1)
    start = clients[0].federations.get(fed_id).global_weights
    step_all(clients, fed_id, split)
    step_all(clients, fed_id, split)
    step_all(clients, fed_id, split, skip={2})  # the initiator and its victim have posted their updates
    with pytest.raises(Conflict, match="open until its deadline"):
        clients[0].federations.advance(fed_id)
    assert _phase(clients[0].federations.get(fed_id)) == "masked_input"
    past_the_deadline(runtime)
    view = clients[1].federations.advance(fed_id)
    assert view.state == "aborted" and _phase(view) == "aborted"
    assert "at least 3 banks" in (view.abort_reason or "")
    assert view.round is not None and view.round.total_weight is None and view.round.survivors is None
    assert view.global_weights == start and view.model_id is None
    with runtime.db.transaction(write=False) as s:
        rnd = s.get(FederationRound, (fed_id, 1))
        assert rnd is not None and rnd.result_weights is None and rnd.total_weight is None
    actions = [e["action"] for e in entries(runtime, fed_id)]
    assert "federation.round.aborted" in actions and "federation.round.done" not in actions


def test_the_view_builds_each_inbox_without_reading_masked_inputs(
    clients: list[Client],
    banks: list[OrgHandle],
    split: Any,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A participant polling the round reads the keys and shares it needs, never the (large) masked inputs;
    its inbox is the one the full protocol state would give."""
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    import protocols.secagg.server

    fed_id = started(clients, banks, split, rounds=1)
    step_all(clients, fed_id, split)
    step_all(clients, fed_id, split)
    step_all(clients, fed_id, split, skip={2})  # masked inputs from banks 1 and 2: the phase stays open
    fed = runtime.federated
    loaded: list[int] = []

    def on_load(_: Session, obj: object) -> None:
        if isinstance(obj, FederationMessage):
            loaded.append(obj.stage)

    for phase in ("masked_input", "unmask"):
        with runtime.db.transaction(write=False) as s:
            f, part = fed._load(s, fed_id, banks[0].id)
            rnd = fed._round(s, f)
            assert rnd is not None and rnd.phase.value == phase
            full = fed._server(s, f, rnd).outbox(part.position)
        real = protocols.secagg.server._parse_masked
        monkeypatch.setattr(
            protocols.secagg.server, "_parse_masked", lambda *a: pytest.fail("parsed a masked input")
        )
        event.listen(Session, "loaded_as_persistent", on_load)
        try:
            with runtime.db.transaction(write=False) as s:
                views = {b.id: fed.view(s, fed_id, b.id) for b in banks}
        finally:
            event.remove(Session, "loaded_as_persistent", on_load)
            monkeypatch.setattr(protocols.secagg.server, "_parse_masked", real)
        # keys and shares for SHARES; nothing but who posted what for SURVIVORS
        assert set(loaded) == (
            {int(Stage.ADVERTISE_KEYS), int(Stage.SHARE_KEYS)} if phase == "masked_input" else set()
        )
        loaded.clear()
        assert views[banks[0].id]["inbox"] == full
        if phase == "masked_input":
            assert [views[b.id]["round"]["posted"] for b in banks] == [True, True, False]
            clients[2].federations.step(
                fed_id, split.banks[2].x_train, split.banks[2].y_train
            )  # the phase closes
        else:
            assert not any(views[b.id]["round"]["posted"] for b in banks)
            assert all(views[b.id]["inbox"] == full for b in banks)


def test_a_restarted_server_continues_the_round(
    clients: list[Client], banks: list[OrgHandle], split: Any, settings: Settings
) -> None:
    fed_id = started(clients, banks, split, rounds=1)
    step_all(clients, fed_id, split)
    step_all(clients, fed_id, split)  # keys shared; the process now "dies": only the database is left
    rt2 = Runtime.build(settings)
    try:
        with running_server(create_app(runtime=rt2)) as url:
            for i, b in enumerate(banks):
                moved = Client(url, b.token)
                moved.federations._rounds = clients[i].federations._rounds  # the bank kept its secrets
                clients[i] = moved
            assert _phase(clients[0].federations.get(fed_id)) == "masked_input"
            for _ in range(2):
                step_all(clients, fed_id, split)
            view = clients[1].federations.get(fed_id)
            assert view.state == "done" and view.round is not None
            assert view.round.survivors == sorted(b.id for b in banks)
    finally:
        rt2.close()


def test_a_restart_with_too_few_banks_left_aborts_cleanly_and_averages_nothing(
    clients: list[Client], banks: list[OrgHandle], split: Any, settings: Settings, runtime: Runtime
) -> None:
    fed_id = started(clients, banks, split, rounds=1)
    step_all(clients, fed_id, split)
    step_all(clients, fed_id, split)
    step_all(clients, fed_id, split, skip={1, 2})  # only bank 1 sends its masked update, then the restart
    rt2 = Runtime.build(settings)
    try:
        with running_server(create_app(runtime=rt2)) as url:
            fc = Client(url, banks[0].token)
            with pytest.raises(Conflict, match="open until its deadline") as refused:
                fc.federations.advance(fed_id)
            past_the_deadline(rt2)
            view = fc.federations.advance(fed_id)
            assert view.state == "aborted" and _phase(view) == "aborted"
            assert "only 1 of 3 banks" in (view.abort_reason or "")
            assert view.model_id is None
            late = clients[1].federations.step(fed_id, split.banks[1].x_train, split.banks[1].y_train)
            assert late.state == "aborted"  # a late bank is told, and sends nothing
            with pytest.raises(Conflict, match="was aborted") as refused:
                fc.federations.advance(fed_id)
            assert refused.value.code == SecAggAborted.code
    finally:
        rt2.close()
    actions = [e["action"] for e in entries(runtime, fed_id)]
    assert "federation.round.aborted" in actions and "federation.round.done" not in actions


def test_outsiders_replays_and_bad_messages_are_refused_and_change_nothing(
    clients: list[Client],
    banks: list[OrgHandle],
    split: Any,
    runtime: Runtime,
    make_org: OrgFactory,
    http: Callable[..., httpx.Client],
) -> None:
    fed_id = started(clients, banks, split)
    outsider = http(make_org(Role.bank).token)
    subject = http(make_org(Role.subject).token)
    first = step_all(clients, fed_id, split)
    assert _phase(first[-1]) == "share_keys"
    with runtime.db.transaction(write=False) as s:
        size = runtime.ledger.size(s)
    # a bank not in the federation: not found, for every route
    assert outsider.get(f"/v1/federations/{fed_id}").status_code == 404
    adv_frame = None
    with runtime.db.transaction(write=False) as s:
        from sqlalchemy import select

        from pps.infra.storage.tables import FederationMessage

        stored = s.scalars(select(FederationMessage).where(FederationMessage.federation_id == fed_id)).all()
        adv_frame = next(m.payload for m in stored if m.bank_org_id == banks[0].id)
    body = {"message": base64.b64encode(adv_frame).decode()}
    r = outsider.post(f"/v1/federations/{fed_id}/messages", json=body)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert (
        outsider.post(
            f"/v1/federations/{fed_id}/accept", json={"purpose": "joint_model_training"}
        ).status_code
        == 404
    )
    assert subject.get(f"/v1/federations/{fed_id}").status_code == 403
    # a replay of this round's earlier message, and a message posted under another bank's position
    with pytest.raises(Conflict, match="not accepted now"):
        clients[0].federations.post_message(fed_id, adv_frame)
    with pytest.raises(Conflict, match="you are bank"):
        clients[1].federations.post_message(fed_id, adv_frame)
    # not base64, not a frame, a wrong purpose
    bank1 = http(banks[0].token)
    r = bank1.post(f"/v1/federations/{fed_id}/messages", json={"message": "***"})
    assert r.status_code == 422
    r = bank1.post(
        f"/v1/federations/{fed_id}/messages", json={"message": base64.b64encode(b"hello").decode()}
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_secagg_message"
    with pytest.raises(ValueError, match="purpose"):  # refused here: the request model allows one purpose
        clients[0].federations.create(
            name="x",
            participants=[b.id for b in banks],
            kind="horizontal_lr",
            feature_schema=["a"],
            rounds=1,
            threshold=2,
            purpose="loan_underwriting",
        )
    with runtime.db.transaction(write=False) as s:
        assert runtime.ledger.size(s) == size
    # the round is intact: it finishes, and round 1's messages are refused in round 2 as replays
    for _ in range(3):
        step_all(clients, fed_id, split)
    assert clients[0].federations.get(fed_id).current_round == 2
    with pytest.raises(Conflict, match="round 1, the current round is 2"):
        clients[0].federations.post_message(fed_id, adv_frame)


def test_creation_checks_participants_and_threshold(
    clients: list[Client], banks: list[OrgHandle], split: Any, make_org: OrgFactory
) -> None:
    provider = make_org(Role.data_provider)
    with pytest.raises(InvalidRequest, match="not an active bank"):
        create(clients[0], [*banks[:2], provider], split)
    with pytest.raises(InvalidRequest, match="initiating bank"):
        create(clients[0], [*banks[1:], make_org(Role.bank)], split)
    with pytest.raises(InvalidRequest, match="majority"):
        create(clients[0], [*banks, make_org(Role.bank)], split, threshold=2)
    with pytest.raises(InvalidRequest, match="3 to 50 distinct"):  # two banks would learn each other's
        create(clients[0], banks[:2], split)
    fed = create(clients[0], banks, split)
    with pytest.raises(InvalidRequest, match="purpose"):
        clients[1].federations.accept(fed.id, purpose="loan_underwriting")
    clients[1].federations.accept(fed.id)
    with pytest.raises(Conflict, match="already accepted"):
        clients[1].federations.accept(fed.id)
    assert [f.id for f in clients[2].federations.list()] == [fed.id]


def test_updates_clipped_round_after_round_stop_training_as_divergent(
    clients: list[Client], banks: list[OrgHandle], split: Any, runtime: Runtime
) -> None:
    """Raw amounts (a column in currency units) make every bank's update hit clip_norm: after 3 such rounds the
    federation is aborted with the cause and the fix, and no (useless) model is registered."""
    from dataclasses import replace

    raw = replace(
        split,
        banks=[
            replace(b, x_train=np.column_stack([b.x_train[:, :-1], 5e5 + 1e5 * b.x_train[:, -1]]))
            for b in split.banks
        ],
    )
    fed_id = started(clients, banks, raw, rounds=5, clip_norm=1.0)
    for _ in range(
        4 * 4
    ):  # four rounds of four phases: round 1's updates disagree, rounds 2 to 4 are all clipped
        views = step_all(clients, fed_id, raw)
    view = views[-1]
    assert view.state == "aborted" and view.model_id is None
    assert view.abort_reason is not None and "clipped to clip_norm 1" in view.abort_reason
    assert "Standardise every feature" in view.abort_reason
    # aborted at the third clipped round in a row: after round 3 if round 1's updates were clipped too (the
    # data decides), after round 4 if they disagreed first
    assert [e["action"] for e in entries(runtime, fed_id)].count("federation.round.done") in (2, 3)
    assert clients[0].models.list() == []
