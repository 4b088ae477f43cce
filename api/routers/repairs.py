"""Dishonesty records, credit repair (信用修复), statements and the third objection outcome.

A subject lists its own dishonesty records with their periods and status, applies for repair, objects to a
denial and attaches statements to its negative records; the designated authority (the provider of the records
source) decides the applications on its records; admins and auditors see every application (not the proofs)
and the overdue list; a bank lists its repair notices. Another organisation's applications answer 404. The
flow and who learns what: :mod:`pps.governance.repair`.
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
from pps.governance.records import RecordBook
from pps.governance.records import status as record_status
from pps.governance.repair import OPEN_STATES, Proof, commitment_text, is_overdue
from pps.infra.storage.tables import (
    Organization,
    RecordStatement,
    RepairApplication,
    RepairNotice,
    RepairState,
    Role,
    utcnow,
)
from pps.runtime import Runtime
from pps_wire.schemas import (
    DishonestyRecordPublic,
    RepairApprove,
    RepairCreate,
    RepairDeny,
    RepairNoticePublic,
    RepairObject,
    RepairPublic,
    StatementCreate,
    StatementPublic,
)

router = APIRouter(prefix="/v1", tags=["repair"])

REPAIRS_PATH = "/v1/repairs"

Subject = Annotated[Caller, allow(Role.subject)]
Provider = Annotated[Caller, allow(Role.data_provider)]
Bank = Annotated[Caller, allow(Role.bank)]
Reader = Annotated[Caller, allow(Role.subject, Role.data_provider, Role.platform_admin, Role.auditor)]
Party = Annotated[Caller, allow(Role.subject, Role.data_provider)]
Operator = Annotated[Caller, allow(Role.platform_admin)]


def body_limit(proof_max_bytes: int) -> int:
    """The request body limit of ``POST /v1/repairs``: five proofs in base64 plus room for the rest."""
    return 5 * (-(-proof_max_bytes // 3) * 4) + (64 << 10)


def repair_public(rt: Runtime, session: Session, a: RepairApplication, now: datetime) -> RepairPublic:
    return RepairPublic.model_validate(
        {
            "id": a.id,
            "subject_uscc": a.subject_uscc,
            "dataset_id": a.dataset_id,
            "dataset_version": a.dataset_version,
            "record_id": a.record_id,
            "authority_org_id": a.authority_org_id,
            "state": a.state.value,
            "checks": json.loads(a.checks_json),
            "proofs": rt.repairs.proofs_info(session, a),
            "created_at": a.created_at,
            "due_at": a.due_at,
            "overdue": is_overdue(a, now),
            "decided_at": a.decided_at,
            "reasons": json.loads(a.reasons_json) if a.reasons_json else [],
            "objection": a.objection_text,
        }
    )


def notice_public(n: RepairNotice) -> RepairNoticePublic:
    return RepairNoticePublic.model_validate(
        {
            "id": n.id,
            "application_id": n.application_id,
            "subject_uscc": n.subject_uscc,
            "dataset_id": n.dataset_id,
            "record_id": n.record_id,
            "result": {"kind": n.result_kind, "id": n.result_id},
            "operation": n.operation,
            "purpose": n.purpose,
            "ledger_index": n.ledger_index,
            "released_at": n.released_at,
            "created_at": n.created_at,
        }
    )


def my_records(rt: Runtime, session: Session, uscc: str, now: datetime) -> list[DishonestyRecordPublic]:
    """The subject's dishonesty records with their status and what it may do (the portal uses this too)."""
    book = rt.repairs.records
    where = book.bound(session)
    if where is None:
        return []
    excluded = RecordBook.excluded(session, where[0], [uscc])
    open_apps = {
        a.record_id
        for a in rt.repairs.list_applications(session, subject_uscc=uscc, limit=1000)
        if a.state in OPEN_STATES
    }
    statements = {s.record_key: s.text for s in rt.statements.mine(session, uscc) if s.dataset_id == where[0]}
    out = []
    for r in book.of_subject(session, uscc):
        state = record_status(r, excluded, now.date())
        why_not = None
        if state != "in_use":
            why_not = f"no longer used ({state})"
        elif now.date() < r.eligible_from:
            why_not = f"minimum publicity period: apply from {r.eligible_from.isoformat()}"
        elif r.record_id in open_apps:
            why_not = "an application is open"
        out.append(
            DishonestyRecordPublic.model_validate(
                {
                    **r.as_dict(),
                    "dataset_id": where[0],
                    "status": state,
                    "can_apply": why_not is None,
                    "why_not": why_not,
                    "commitment": commitment_text(uscc, r.record_id),
                    "statement": statements.get(r.record_id),
                }
            )
        )
    return out


def _visible(
    rt: Runtime, session: Session, caller: Caller, app_id: str, *, oversight: bool
) -> RepairApplication:
    a = rt.repairs.get(session, app_id)
    check_visible(
        caller,
        subject_uscc=a.subject_uscc,
        owner_org_id=a.authority_org_id,
        oversight=oversight,
        missing=f"repair application {app_id} does not exist",
    )
    return a


def _subject(session: Session, caller: Caller) -> Organization:
    org = session.get(Organization, caller.org_id)
    if org is None:
        raise NotFound("your organisation does not exist")
    return org


# --- records ---------------------------------------------------------------------------------------------


@router.get(
    "/me/dishonesty-records",
    summary="your dishonesty records: grade, periods, whether still used, whether you may apply for repair",
)
def list_my_records(caller: Subject, rt: RuntimeDep) -> list[DishonestyRecordPublic]:
    with rt.db.transaction(write=False) as session:
        assert caller.uscc is not None
        return my_records(rt, session, caller.uscc, utcnow())


@router.post(
    "/records/sweep",
    summary="write down the records whose maximum publicity or retention period ended (the operator)",
)
def sweep(caller: Operator, rt: RuntimeDep) -> dict[str, int]:
    with rt.db.transaction() as session:
        return rt.repairs.records.sweep(session, actor=caller.actor)


# --- repair ----------------------------------------------------------------------------------------------


@router.post(
    REPAIRS_PATH.removeprefix("/v1"), status_code=status.HTTP_201_CREATED, summary="apply for credit repair"
)
def apply(body: RepairCreate, caller: Subject, rt: RuntimeDep) -> RepairPublic:
    proofs = [
        Proof(p.kind, p.media_type, base64_file(p.content, f"proof {n}: content"))
        for n, p in enumerate(body.proofs, 1)
    ]
    with rt.db.transaction() as session:
        app = rt.repairs.apply(
            session,
            subject=_subject(session, caller),
            record_id=body.record_id,
            commitment=body.commitment,
            proofs=proofs,
            actor=caller.actor,
            request_id=current_request_id(),
        )
        return repair_public(rt, session, app, utcnow())


@router.get(
    REPAIRS_PATH.removeprefix("/v1"),
    summary="repair applications: a subject's own, an authority's queue, or all (admins, auditors)",
)
def list_repairs(
    caller: Reader,
    rt: RuntimeDep,
    limit: PageLimit,
    state: RepairState | None = None,
    overdue: Annotated[bool | None, Query(description="only open applications past their deadline")] = None,
    after: Annotated[str | None, Query(max_length=40)] = None,
) -> Page[RepairPublic]:
    now = utcnow()
    with rt.db.transaction(write=False) as session:
        found = rt.repairs.list_applications(
            session,
            subject_uscc=caller.uscc if caller.role is Role.subject else None,
            authority_org_id=caller.org_id if caller.role is Role.data_provider else None,
            state=state,
            overdue=overdue,
            now=now,
            after=after,
            limit=limit,
        )
        items = [repair_public(rt, session, a, now) for a in found]
    return page(found, items, limit)


@router.get(REPAIRS_PATH.removeprefix("/v1") + "/{app_id}", summary="one repair application")
def get_repair(app_id: str, caller: Reader, rt: RuntimeDep) -> RepairPublic:
    with rt.db.transaction(write=False) as session:
        return repair_public(rt, session, _visible(rt, session, caller, app_id, oversight=True), utcnow())


@router.get(
    REPAIRS_PATH.removeprefix("/v1") + "/{app_id}/proofs/{position}",
    summary="a proof file (the subject and the authority only); the reading is on the record",
    response_class=Response,
)
def get_proof(app_id: str, position: int, caller: Party, rt: RuntimeDep) -> Response:
    with rt.db.transaction() as session:
        a = _visible(rt, session, caller, app_id, oversight=False)
        media_type, data = rt.repairs.proof(
            session, a, position, actor=caller.actor, request_id=current_request_id()
        )
    return attachment(data, media_type, f"proof-{app_id}-{position}")


def _authority_owns(rt: Runtime, session: Session, caller: Caller, app_id: str) -> RepairApplication:
    a = rt.repairs.get(session, app_id)
    check_owner(caller, a.authority_org_id, f"repair application {app_id} does not exist")
    return a


@router.post(
    REPAIRS_PATH.removeprefix("/v1") + "/{app_id}/approve",
    summary="approve (the authority): the record is excluded from every use; banks that used it are told",
)
def approve(app_id: str, body: RepairApprove, caller: Provider, rt: RuntimeDep) -> RepairPublic:
    with rt.db.transaction() as session:
        decision = rt.repairs.approve(
            session,
            _authority_owns(rt, session, caller, app_id),
            note=body.note,
            actor=caller.actor,
            request_id=current_request_id(),
        )
        return repair_public(rt, session, decision.application, utcnow())


@router.post(REPAIRS_PATH.removeprefix("/v1") + "/{app_id}/deny", summary="deny with reasons (the authority)")
def deny(app_id: str, body: RepairDeny, caller: Provider, rt: RuntimeDep) -> RepairPublic:
    with rt.db.transaction() as session:
        a = rt.repairs.deny(
            session,
            _authority_owns(rt, session, caller, app_id),
            reasons=body.reasons,
            actor=caller.actor,
            request_id=current_request_id(),
        )
        return repair_public(rt, session, a, utcnow())


@router.post(
    REPAIRS_PATH.removeprefix("/v1") + "/{app_id}/object",
    summary="object to a denial (the subject, once): the authority decides again",
)
def object_to_denial(app_id: str, body: RepairObject, caller: Subject, rt: RuntimeDep) -> RepairPublic:
    with rt.db.transaction() as session:
        a = _visible(rt, session, caller, app_id, oversight=False)
        a = rt.repairs.object(session, a, text=body.text, actor=caller.actor, request_id=current_request_id())
        return repair_public(rt, session, a, utcnow())


@router.get(
    "/repair-notices",
    summary="results you were released that counted a dishonesty record since repaired (a bank)",
)
def repair_notices(
    caller: Bank,
    rt: RuntimeDep,
    limit: PageLimit,
    after: Annotated[str | None, Query(max_length=40)] = None,
) -> Page[RepairNoticePublic]:
    with rt.db.transaction(write=False) as session:
        found = rt.repairs.notices(session, caller.org_id, after=after, limit=limit)
        items = [notice_public(n) for n in found]
    return page(found, items, limit)


# --- statements and the third objection outcome -------------------------------------------------------------


def _statement_public(s: RecordStatement) -> StatementPublic:
    return StatementPublic(
        id=s.id, dataset_id=s.dataset_id, record_key=s.record_key, text=s.text, created_at=s.created_at
    )


@router.post(
    "/statements",
    status_code=status.HTTP_201_CREATED,
    summary="attach your statement to one of your negative records; banks see it with results using it",
)
def add_statement(body: StatementCreate, caller: Subject, rt: RuntimeDep) -> StatementPublic:
    with rt.db.transaction() as session:
        row = rt.statements.add(
            session,
            subject=_subject(session, caller),
            dataset_id=body.dataset_id,
            record_key=body.record_key,
            text=body.text,
            actor=caller.actor,
            request_id=current_request_id(),
        )
        return _statement_public(row)


@router.get("/statements", summary="your statements")
def list_statements(caller: Subject, rt: RuntimeDep) -> list[StatementPublic]:
    with rt.db.transaction(write=False) as session:
        assert caller.uscc is not None
        return [_statement_public(s) for s in rt.statements.mine(session, caller.uscc)]


@router.delete("/statements/{statement_id}", summary="withdraw a statement")
def withdraw_statement(statement_id: str, caller: Subject, rt: RuntimeDep) -> StatementPublic:
    with rt.db.transaction() as session:
        row = session.get(RecordStatement, statement_id)
        if row is None or row.subject_uscc != caller.uscc:
            raise NotFound(f"statement {statement_id} does not exist")
        withdrawn = rt.statements.withdraw(session, row, actor=caller.actor, request_id=current_request_id())
        return _statement_public(withdrawn)


__all__ = ["REPAIRS_PATH", "body_limit", "router"]
