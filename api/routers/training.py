"""Vertical training sessions: the bank (guest) trains with the safe-room (host); the coordinator is in the enclave.

``POST /v1/training/vertical`` starts a session (after PSI alignment with ``operation="train"`` and a verified
enclave quote); ``POST /v1/training/vertical/{id}/exchange`` carries the protocol's frames (one round trip per
mini-batch; body and answer ``application/vnd.pps.vlr-frames``); ``POST .../finish`` registers the model.
:mod:`pps.services.vertical` says who learns what.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated

from fastapi import APIRouter, Request, Response, status
from starlette.concurrency import run_in_threadpool

from api.deps import Caller, RuntimeDep, allow
from api.middleware import current_request_id
from pps.errors import InvalidInput
from pps.infra.storage.tables import Role, VerticalTraining
from pps.infra.text import check_name
from pps_wire.frames import VLR_FRAMES_MEDIA_TYPE as MEDIA_TYPE
from pps_wire.frames import pack_frames, unpack_frames
from pps_wire.schemas import TrainingPublic, VerticalStarted, VerticalStartIn

router = APIRouter(prefix="/v1", tags=["training"])

Bank = Annotated[Caller, allow(Role.bank)]
Reader = Annotated[Caller, allow(Role.bank, Role.auditor, Role.platform_admin)]


def training_public(row: VerticalTraining) -> TrainingPublic:
    return TrainingPublic(
        id=row.id,
        name=row.name,
        purpose=row.purpose,
        state=row.state.value,
        rows=row.rows,
        features=json.loads(row.features_json),
        epochs_done=row.epochs_done,
        model_id=row.model_id,
        error=row.error,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@router.post(
    "/training/vertical",
    status_code=status.HTTP_201_CREATED,
    summary="start a vertical training with the platform's features (coordinator in the enclave)",
)
def start_vertical(body: VerticalStartIn, caller: Bank, rt: RuntimeDep) -> VerticalStarted:
    try:
        ciphertext = base64.b64decode(body.ciphertext, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("ciphertext must be base64") from None
    check_name(body.name, "the training name")
    started = rt.training.start(
        actor=caller.actor,
        name=body.name,
        purpose=body.purpose,
        subjects=body.subjects,
        features=body.features,
        quote_hash=bytes.fromhex(body.quote_hash),
        ciphertext=ciphertext,
        request_id=current_request_id(),
    )
    return VerticalStarted(
        **training_public(started.training).model_dump(),
        subjects=list(started.rows),
        excluded=started.excluded,
        public_key=base64.b64encode(started.public_key).decode(),
    )


@router.get("/training/vertical", summary="my vertical trainings (all for auditors and platform admins)")
def list_vertical(caller: Reader, rt: RuntimeDep) -> list[TrainingPublic]:
    from sqlalchemy import select

    with rt.db.transaction(write=False) as session:
        q = select(VerticalTraining).order_by(VerticalTraining.created_at.desc())
        if not caller.sees_everything:
            q = q.where(VerticalTraining.bank_org_id == caller.org_id)
        return [training_public(r) for r in session.execute(q).scalars()]


@router.get("/training/vertical/{training_id}", summary="one vertical training's state")
def get_vertical(training_id: str, caller: Reader, rt: RuntimeDep) -> TrainingPublic:
    with rt.db.transaction(write=False) as session:
        row = rt.training.get(
            session, training_id, org_id=caller.org_id, sees_everything=caller.sees_everything
        )
        return training_public(row)


@router.post(
    "/training/vertical/{training_id}/exchange",
    summary="the bank's protocol frames in, the frames for the bank out (one round trip per mini-batch)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def exchange(training_id: str, request: Request, caller: Bank, rt: RuntimeDep) -> Response:
    frames = unpack_frames(await request.body())
    out = await run_in_threadpool(rt.training.exchange, training_id, frames, actor=caller.actor)
    return Response(pack_frames(out), media_type=MEDIA_TYPE)


@router.delete("/training/vertical/{training_id}", summary="cancel a running training: nothing is registered")
def cancel_vertical(training_id: str, caller: Bank, rt: RuntimeDep) -> TrainingPublic:
    return training_public(rt.training.cancel(training_id, actor=caller.actor))


@router.post("/training/vertical/{training_id}/finish", summary="end the training and register the model")
def finish_vertical(training_id: str, caller: Bank, rt: RuntimeDep) -> dict[str, object]:
    record = rt.training.finish(training_id, actor=caller.actor, request_id=current_request_id())
    return record.public()
