"""Horizontal federated training: banks train one model over their own portfolios with secure aggregation.

A bank creates a federation (``POST /v1/federations``), the other participants accept it
(``POST /v1/federations/{id}/accept``, purpose ``joint_model_training``), then each round every bank reads the
round's state and its inbox (``GET /v1/federations/{id}``) and posts its secure-aggregation messages
(``POST /v1/federations/{id}/messages``, base64 frames). ``POST /v1/federations/{id}/advance`` closes the
current phase with the banks heard from: once the phase's deadline has passed (before it, only when every bank
still in the round has posted); a round ends without an aggregate if fewer than three banks remain. The protocol,
its messages and who learns what: :mod:`protocols.secagg`, :mod:`pps.services.federated` and ``docs/protocols.md``.
Only participants see a federation; everyone else gets 404.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter

from api.deps import Caller, RuntimeDep, allow
from api.middleware import current_request_id
from pps.errors import InvalidInput
from pps.infra.storage.tables import Role
from pps.infra.text import check_name
from pps.services.federated import FederationSpec
from pps_wire.schemas import (
    AcceptIn,
    AdvanceIn,
    EnclaveInputIn,
    FederationIn,
    FederationOut,
    FederationSummaryOut,
    MessageIn,
)

router = APIRouter(prefix="/v1", tags=["federated"])

Bank = Annotated[Caller, allow(Role.bank)]


def federation_spec(body: FederationIn) -> FederationSpec:
    check_name(body.name, "the federation name")
    return FederationSpec(
        name=body.name,
        participants=tuple(body.participants),
        kind=body.kind,
        feature_schema=tuple(body.feature_schema),
        rounds=body.rounds,
        threshold=body.threshold,
        local_epochs=body.local_epochs,
        clip_norm=body.clip_norm,
        learning_rate=body.learning_rate,
        l2=body.l2,
        batch_size=body.batch_size,
        hidden=body.hidden,
        seed=body.seed,
        phase_timeout_s=body.phase_timeout_s,
        standardise=body.standardise,
        validation_fraction=body.validation_fraction,
        patience=body.patience,
        min_delta=body.min_delta,
        aggregation=body.aggregation,
        purpose=body.purpose,
    )


def _out(view: dict[str, Any]) -> FederationOut:
    inbox = view.get("inbox")
    return FederationOut.model_validate(
        {**view, "inbox": base64.b64encode(inbox).decode() if inbox else None}
    )


@router.post("/federations", status_code=201, summary="start a horizontal training with other banks")
def create(body: FederationIn, caller: Bank, rt: RuntimeDep) -> FederationOut:
    with rt.db.transaction() as session:
        fed = rt.federated.create(
            session, federation_spec(body), actor=caller.actor, request_id=current_request_id()
        )
        view = rt.federated.view(session, fed.id, caller.org_id)
    return _out(view)


@router.get("/federations", summary="the federations I take part in")
def list_mine(caller: Bank, rt: RuntimeDep) -> list[FederationSummaryOut]:
    with rt.db.transaction(write=False) as session:
        feds = rt.federated.list_for(session, caller.org_id)
        return [
            FederationSummaryOut(
                id=f.id,
                name=f.name,
                kind=f.kind,
                state=f.state.value,
                initiator_org_id=f.initiator_org_id,
                current_round=f.current_round,
                rounds=f.rounds,
                model_id=f.model_id,
                created_at=f.created_at,
            )
            for f in feds
        ]


@router.get(
    "/federations/{federation_id}", summary="a federation: its round, phase, global model and my inbox"
)
def get(federation_id: str, caller: Bank, rt: RuntimeDep) -> FederationOut:
    with rt.db.transaction(write=False) as session:
        return _out(rt.federated.view(session, federation_id, caller.org_id))


@router.post(
    "/federations/{federation_id}/accept", summary="join a federation (purpose joint_model_training)"
)
def accept(federation_id: str, body: AcceptIn, caller: Bank, rt: RuntimeDep) -> FederationOut:
    with rt.db.transaction() as session:
        rt.federated.accept(
            session, federation_id, purpose=body.purpose, actor=caller.actor, request_id=current_request_id()
        )
        return _out(rt.federated.view(session, federation_id, caller.org_id))


@router.post(
    "/federations/{federation_id}/messages", summary="post my secure-aggregation message of this phase"
)
def post_message(federation_id: str, body: MessageIn, caller: Bank, rt: RuntimeDep) -> FederationOut:
    try:
        data = base64.b64decode(body.message, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("message must be base64") from None
    with rt.db.transaction() as session:
        rt.federated.submit(session, federation_id, data, actor=caller.actor, request_id=current_request_id())
        return _out(rt.federated.view(session, federation_id, caller.org_id))


@router.post(
    "/federations/{federation_id}/advance",
    summary="close the current phase with the banks heard from (drop-outs); aborts below the threshold",
)
def advance(federation_id: str, body: AdvanceIn, caller: Bank, rt: RuntimeDep) -> FederationOut:
    with rt.db.transaction() as session:
        rt.federated.advance(session, federation_id, actor=caller.actor, request_id=current_request_id())
        return _out(rt.federated.view(session, federation_id, caller.org_id))


def _sealed(part: Any, what: str) -> tuple[bytes, bytes]:
    try:
        return bytes.fromhex(part.quote_hash), base64.b64decode(part.ciphertext, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{what}: ciphertext must be base64") from None


@router.post(
    "/federations/{federation_id}/enclave-input",
    summary="provision my update to the enclave aggregator (enclave-mode federations)",
)
def enclave_input(federation_id: str, body: EnclaveInputIn, caller: Bank, rt: RuntimeDep) -> FederationOut:
    update = _sealed(body.update, "update")
    terms = _sealed(body.terms, "terms") if body.terms is not None else None
    rt.enclave.host()  # started outside the transaction: a start is a ledger entry of its own
    with rt.db.transaction() as session:
        rt.federated.submit_enclave(
            session,
            federation_id,
            update=update,
            terms=terms,
            actor=caller.actor,
            request_id=current_request_id(),
        )
        return _out(rt.federated.view(session, federation_id, caller.org_id))
