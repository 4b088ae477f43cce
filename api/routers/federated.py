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
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import Caller, RuntimeDep, allow
from api.middleware import current_request_id
from api.schemas import Request
from pps.errors import InvalidInput
from pps.infra.storage.tables import Role
from pps.services.federated import PURPOSE, FederationSpec

router = APIRouter(prefix="/v1", tags=["federated"])

Bank = Annotated[Caller, allow(Role.bank)]
MAX_MESSAGE_B64 = 48 * 1024 * 1024


class FederationIn(Request):
    name: str = Field(min_length=1, max_length=200)
    participants: list[str] = Field(
        min_length=2, max_length=50, description="bank organisation ids, the initiating bank included"
    )
    kind: Literal["horizontal_lr", "horizontal_mlp"]
    feature_schema: list[str] = Field(
        min_length=1, max_length=1000, description="the shared feature names, in order"
    )
    rounds: int = Field(ge=1, le=200)
    threshold: int = Field(ge=2, description="banks needed to finish a round (a majority of participants)")
    local_epochs: int = Field(1, ge=1, le=100)
    clip_norm: float = Field(5.0, gt=0, le=1e6, allow_inf_nan=False, description="L2 clip of each update")
    learning_rate: float = Field(0.1, gt=0, le=1e6, allow_inf_nan=False)
    l2: float = Field(1e-4, ge=0, le=1e6, allow_inf_nan=False)
    batch_size: int = Field(64, ge=1, le=100_000)
    hidden: int = Field(16, ge=1, le=1024, description="hidden units (horizontal_mlp)")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the initial model and of local shuffling")
    phase_timeout_s: int = Field(600, ge=1, le=7 * 24 * 3600)
    purpose: Literal["joint_model_training"] = PURPOSE

    def spec(self) -> FederationSpec:
        return FederationSpec(
            name=self.name,
            participants=tuple(self.participants),
            kind=self.kind,
            feature_schema=tuple(self.feature_schema),
            rounds=self.rounds,
            threshold=self.threshold,
            local_epochs=self.local_epochs,
            clip_norm=self.clip_norm,
            learning_rate=self.learning_rate,
            l2=self.l2,
            batch_size=self.batch_size,
            hidden=self.hidden,
            seed=self.seed,
            phase_timeout_s=self.phase_timeout_s,
            purpose=self.purpose,
        )


class AcceptIn(Request):
    purpose: str = Field(max_length=64, description="must be joint_model_training")


class MessageIn(Request):
    message: str = Field(max_length=MAX_MESSAGE_B64, description="a secure-aggregation frame, base64")


class AdvanceIn(Request):
    pass


class ParticipantOut(BaseModel):
    bank_org_id: str
    position: int
    accepted: bool


class RoundOut(BaseModel):
    round_no: int
    phase: str
    phase_deadline: datetime
    posted: bool | None = None
    survivors: list[str] | None = None
    total_weight: int | None = None
    abort_reason: str | None = None


class FederationOut(BaseModel):
    id: str
    name: str
    kind: str
    initiator_org_id: str
    state: str
    feature_schema: list[str]
    n_params: int
    rounds: int
    threshold: int
    local_epochs: int
    config: dict[str, Any]
    participants: list[ParticipantOut]
    my_position: int
    current_round: int
    model_id: str | None
    abort_reason: str | None
    created_at: datetime
    round: RoundOut | None
    global_weights: list[float] | None = Field(
        description="the model the current round trains from (the result, once the round is done)"
    )
    inbox: str | None = Field(description="base64 frame this bank needs for the current phase, if any")


class FederationSummaryOut(BaseModel):
    id: str
    name: str
    kind: str
    state: str
    initiator_org_id: str
    current_round: int
    rounds: int
    model_id: str | None
    created_at: datetime


def _out(view: dict[str, Any]) -> FederationOut:
    inbox = view.get("inbox")
    return FederationOut.model_validate(
        {**view, "inbox": base64.b64encode(inbox).decode() if inbox else None}
    )


@router.post("/federations", status_code=201, summary="start a horizontal training with other banks")
def create(body: FederationIn, caller: Bank, rt: RuntimeDep) -> FederationOut:
    with rt.db.transaction() as session:
        fed = rt.federated.create(session, body.spec(), actor=caller.actor, request_id=current_request_id())
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
