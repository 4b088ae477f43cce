"""The standard credit report and authorised queries (issue 23): thin routes over :mod:`pps.services.reports`.

A bank asks for an enterprise's report (``POST /v1/reports``) or queries a portfolio (``POST /v1/queries``); every
field leaves only through its disclosure mode, as the policy engine decides, and each release is a ledger entry in
the enterprise's access history. The enterprise reads its own report free (``GET /v1/me/report``). A stored
document is read back by the bank it was released to or the enterprise it is about until it expires (then 410).
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Path, status
from fastapi.responses import HTMLResponse

from api.deps import Caller, RuntimeDep, allow
from api.middleware import current_request_id
from api.web.report_view import render_report
from pps.errors import InvalidInput
from pps.infra.storage.tables import DisclosureDocument, Role
from pps.services.reports import Issued
from pps_wire.schemas.reports import QueryOut, QueryRequest, ReportRequest, SignedDocumentOut

router = APIRouter(prefix="/v1", tags=["reports"])

Bank = Annotated[Caller, allow(Role.bank)]
Subject = Annotated[Caller, allow(Role.subject)]
Reader = Annotated[Caller, allow(Role.bank, Role.subject)]
DocId = Annotated[str, Path(max_length=40)]


def _out(issued: Issued) -> SignedDocumentOut:
    return SignedDocumentOut(
        id=issued.row.id,
        kind=issued.row.kind,
        subject_uscc=issued.row.subject_uscc,
        expires_at=issued.row.expires_at,
        ledger_index=issued.ledger_index,
        document=issued.document,
        note=issued.note,
    )


def _stored(row: DisclosureDocument) -> SignedDocumentOut:
    assert row.body is not None
    body = row.body.split("\n\n", 1)[0] + "\n"
    return SignedDocumentOut(
        id=row.id,
        kind=row.kind,
        subject_uscc=row.subject_uscc,
        expires_at=row.expires_at,
        ledger_index=None,
        document=json.loads(body),
        note=row.body,
    )


@router.post(
    "/reports",
    status_code=status.HTTP_201_CREATED,
    summary="an enterprise's standard credit report: public records always, masked histories under its consent",
)
def create_report(body: ReportRequest, caller: Bank, rt: RuntimeDep) -> SignedDocumentOut:
    with rt.db.transaction() as session:
        issued = rt.reports.report(
            session,
            subject_uscc=body.subject_uscc,
            bank_org_id=caller.org_id,
            purpose=body.purpose,
            actor=caller.actor,
            request_id=current_request_id(),
        )
        return _out(issued)


@router.get("/me/report", summary="your own credit report, free and unmasked (not shown to anyone)")
def own_report(caller: Subject, rt: RuntimeDep) -> SignedDocumentOut:
    if not caller.uscc:
        raise InvalidInput("only an enterprise has a credit report here")
    with rt.db.transaction() as session:
        issued = rt.reports.report(
            session, subject_uscc=caller.uscc, bank_org_id=None, purpose=None, actor=caller.actor
        )
        return _out(issued)


@router.get("/me/report.html", response_class=HTMLResponse, summary="your own credit report, printable")
def own_report_html(caller: Subject, rt: RuntimeDep) -> HTMLResponse:
    out = own_report(caller, rt)
    return HTMLResponse(render_report(out.document, out.note))


@router.get(
    "/reports/{doc_id}", summary="a report or query result released to you or about you, until it expires"
)
def get_document(doc_id: DocId, caller: Reader, rt: RuntimeDep) -> SignedDocumentOut:
    with rt.db.transaction(write=False) as session:
        row = rt.reports.get(
            session,
            doc_id,
            bank_org_id=caller.org_id if caller.role is Role.bank else None,
            uscc=caller.uscc if caller.role is Role.subject else None,
        )
        return _stored(row)


@router.get("/reports/{doc_id}/html", response_class=HTMLResponse, summary="the printable view of a document")
def get_document_html(doc_id: DocId, caller: Reader, rt: RuntimeDep) -> HTMLResponse:
    out = get_document(doc_id, caller, rt)
    return HTMLResponse(render_report(out.document, out.note))


@router.post(
    "/queries",
    summary="query subjects' records through the disclosure modes; per-subject decisions and reasons",
)
def run_query(body: QueryRequest, caller: Bank, rt: RuntimeDep) -> QueryOut:
    with rt.db.transaction() as session:
        issued = rt.reports.query(
            session,
            bank_org_id=caller.org_id,
            subjects=body.subjects,
            fields=body.fields,
            purpose=body.purpose,
            months=body.months,
            actor=caller.actor,
            request_id=current_request_id(),
        )
        results = [_out(i) for i in issued]
    return QueryOut(allowed=sum(1 for r in results if r.document.get("allowed")), results=results)
