"""Objections and corrections: subjects dispute their records, providers accept or reject, banks are told.

A subject sees and files its own objections; a provider sees and resolves the objections on its own datasets;
platform admins and auditors see every objection (not the evidence); a bank lists its correction notices.
Another organisation's objections answer 404. The flow and who learns what: :mod:`pps.governance.objections`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from sqlalchemy.orm import Session

from api.deps import Caller, PageLimit, RuntimeDep, allow
from api.middleware import current_request_id
from api.routers._cases import attachment, base64_file, check_owner, check_visible, page
from api.schemas import Page
from pps.errors import NotFound
from pps.governance.objections import Evidence, is_overdue
from pps.infra.storage.tables import CorrectionNotice, Objection, ObjectionState, Organization, Role, utcnow
from pps.ledger.entry import ObjectRef
from pps.runtime import Runtime
from pps_wire.schemas import (
    CorrectionPublic,
    ObjectionAccept,
    ObjectionCreate,
    ObjectionPublic,
    ObjectionReject,
    ObjectionUnverifiable,
)

router = APIRouter(prefix="/v1", tags=["objections"])

OBJECTIONS_PATH = "/v1/objections"

Subject = Annotated[Caller, allow(Role.subject)]
Provider = Annotated[Caller, allow(Role.data_provider)]
Bank = Annotated[Caller, allow(Role.bank)]
Reader = Annotated[Caller, allow(Role.subject, Role.data_provider, Role.platform_admin, Role.auditor)]
Party = Annotated[Caller, allow(Role.subject, Role.data_provider)]


def body_limit(evidence_max_bytes: int) -> int:
    """The request body limit of ``POST /v1/objections``: the evidence in base64 plus room for the rest."""
    return -(-evidence_max_bytes // 3) * 4 + (64 << 10)


# --- schemas -------------------------------------------------------------------------------------------


def correction_public(n: CorrectionNotice) -> CorrectionPublic:
    return CorrectionPublic.model_validate(
        {
            "id": n.id,
            "objection_id": n.objection_id,
            "subject_uscc": n.subject_uscc,
            "dataset_id": n.dataset_id,
            "fields": json.loads(n.fields_json),
            "result": {"kind": n.result_kind, "id": n.result_id},
            "operation": n.operation,
            "purpose": n.purpose,
            "ledger_index": n.ledger_index,
            "released_at": n.released_at,
            "old_version": n.old_version,
            "new_version": n.new_version,
            "created_at": n.created_at,
        }
    )


def _public(rt: Runtime, session: Session, o: Objection, now: datetime) -> ObjectionPublic:
    texts = rt.objections.sealed(o)
    return ObjectionPublic(
        id=o.id,
        subject_uscc=o.subject_uscc,
        dataset_id=o.dataset_id,
        provider_org_id=o.provider_org_id,
        record_key=texts.record_key,
        fields=json.loads(o.fields_json),
        reason=texts.reason,
        state=o.state.value,
        filed_version=o.filed_version,
        created_at=o.created_at,
        due_at=o.due_at,
        overdue=is_overdue(o, now),
        resolved_at=o.resolved_at,
        resolution_note=texts.note,
        corrected_version=o.corrected_version,
        corrected_fields=json.loads(o.corrected_fields_json) if o.corrected_fields_json else None,
        evidence=rt.objections.evidence_info(session, o),
    )


def _visible(
    rt: Runtime, session: Session, caller: Caller, objection_id: str, *, oversight: bool
) -> Objection:
    """The objection if the caller is its subject or its dataset's provider (or, with ``oversight``, an admin
    or auditor); otherwise 404, as if it did not exist."""
    o = rt.objections.get(session, objection_id)
    check_visible(
        caller,
        subject_uscc=o.subject_uscc,
        owner_org_id=o.provider_org_id,
        oversight=oversight,
        missing=f"objection {objection_id} does not exist",
    )
    return o


def _provider_owns(rt: Runtime, session: Session, caller: Caller, objection_id: str) -> Objection:
    o = rt.objections.get(session, objection_id)
    check_owner(caller, o.provider_org_id, f"objection {objection_id} does not exist")
    return o


# --- routes --------------------------------------------------------------------------------------------


@router.post(
    "/objections", status_code=status.HTTP_201_CREATED, summary="dispute fields of one of your records"
)
def file_objection(body: ObjectionCreate, caller: Subject, rt: RuntimeDep) -> ObjectionPublic:
    evidence = None
    if body.evidence is not None:
        evidence = Evidence(body.evidence.media_type, base64_file(body.evidence.content, "evidence.content"))
    with rt.db.transaction() as session:
        subject = session.get(Organization, caller.org_id)
        if subject is None:
            raise NotFound("your organisation does not exist")
        objection = rt.objections.file(
            session,
            subject=subject,
            dataset_id=body.dataset_id,
            record_key=body.record_key,
            fields=body.fields,
            reason=body.reason,
            evidence=evidence,
            actor=caller.actor,
            request_id=current_request_id(),
        )
        return _public(rt, session, objection, utcnow())


@router.get(
    "/objections",
    summary="objections: a subject's own, a provider's on its datasets, or all (admins, auditors)",
)
def list_objections(
    caller: Reader,
    rt: RuntimeDep,
    limit: PageLimit,
    state: ObjectionState | None = None,
    overdue: Annotated[bool | None, Query(description="only open objections past their deadline")] = None,
    after: Annotated[str | None, Query(max_length=40)] = None,
) -> Page[ObjectionPublic]:
    now = utcnow()
    with rt.db.transaction(write=False) as session:
        found = rt.objections.list_objections(
            session,
            subject_uscc=caller.uscc if caller.role is Role.subject else None,
            provider_org_id=caller.org_id if caller.role is Role.data_provider else None,
            state=state,
            overdue=overdue,
            now=now,
            after=after,
            limit=limit,
        )
        items = [_public(rt, session, o, now) for o in found]
    listed = page(found, items, limit)
    if caller.role is not Role.subject and found:  # reasons shown to a provider or overseer: noted, batched
        rt.reads.note(
            actor=caller.actor,
            what="objections.list",
            objects=[ObjectRef("objection", o.id) for o in found],
            subjects=[o.subject_uscc for o in found],
            request_id=current_request_id(),
        )
    return listed


@router.get("/objections/{objection_id}", summary="one objection")
def get_objection(objection_id: str, caller: Reader, rt: RuntimeDep) -> ObjectionPublic:
    with rt.db.transaction() as session:
        o = _visible(rt, session, caller, objection_id, oversight=True)
        if (
            caller.uscc != o.subject_uscc
        ):  # the enterprise's reason, decrypted for someone else: on its record
            rt.reads.record(
                session,
                actor=caller.actor,
                action="read.objection",
                objects=(ObjectRef("objection", o.id), ObjectRef("dataset", o.dataset_id)),
                subjects=(o.subject_uscc,),
                request_id=current_request_id(),
            )
        return _public(rt, session, o, utcnow())


@router.get(
    "/objections/{objection_id}/evidence",
    summary="the evidence file (the subject and the dataset's provider only); the reading is on the record",
    response_class=Response,
)
def get_evidence(objection_id: str, caller: Party, rt: RuntimeDep) -> Response:
    with rt.db.transaction() as session:
        o = _visible(rt, session, caller, objection_id, oversight=False)
        evidence = rt.objections.evidence(session, o, actor=caller.actor, request_id=current_request_id())
    return attachment(evidence.data, evidence.media_type, f"evidence-{o.id}")


@router.post(
    "/objections/{objection_id}/accept",
    summary="accept with corrected values: a new dataset version; banks that used the old value are told",
)
def accept(objection_id: str, body: ObjectionAccept, caller: Provider, rt: RuntimeDep) -> ObjectionPublic:
    with rt.db.transaction() as session:
        resolution = rt.objections.accept(
            session,
            _provider_owns(rt, session, caller, objection_id),
            corrected=body.corrected,
            note=body.note,
            actor=caller.actor,
            request_id=current_request_id(),
        )
        return _public(rt, session, resolution.objection, utcnow())


@router.post("/objections/{objection_id}/reject", summary="reject with a reason (the dataset's provider)")
def reject(objection_id: str, body: ObjectionReject, caller: Provider, rt: RuntimeDep) -> ObjectionPublic:
    with rt.db.transaction() as session:
        o = rt.objections.reject(
            session,
            _provider_owns(rt, session, caller, objection_id),
            reason=body.reason,
            actor=caller.actor,
            request_id=current_request_id(),
        )
        return _public(rt, session, o, utcnow())


@router.post(
    "/objections/{objection_id}/unverifiable",
    summary="the value cannot be verified (the dataset's provider): kept, annotated in every result using it",
)
def unverifiable(
    objection_id: str, body: ObjectionUnverifiable, caller: Provider, rt: RuntimeDep
) -> ObjectionPublic:
    with rt.db.transaction() as session:
        o = rt.objections.unverifiable(
            session,
            _provider_owns(rt, session, caller, objection_id),
            note=body.note,
            actor=caller.actor,
            request_id=current_request_id(),
        )
        return _public(rt, session, o, utcnow())


@router.get(
    "/corrections",
    summary="results you were released that used a value later corrected: which, whose, which fields (a bank)",
)
def corrections(
    caller: Bank,
    rt: RuntimeDep,
    limit: PageLimit,
    after: Annotated[str | None, Query(max_length=40)] = None,
) -> Page[CorrectionPublic]:
    with rt.db.transaction(write=False) as session:
        found = rt.objections.corrections(session, caller.org_id, after=after, limit=limit)
        items = [correction_public(n) for n in found]
    return page(found, items, limit)
