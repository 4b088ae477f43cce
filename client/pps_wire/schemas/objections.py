"""Objections and corrections: subjects dispute their records, providers resolve them, banks are told."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from pps_wire.schemas.common import Request, Response


class EvidenceIn(Request):
    media_type: str = Field(
        description="application/pdf, image/png or image/jpeg (checked against the bytes)"
    )
    content: str = Field(description="the file, base64")


class ObjectionCreate(Request):
    dataset_id: str = Field(min_length=1, max_length=40)
    record_key: str | None = Field(
        None,
        max_length=4000,
        description="the record's period or record key value (as in GET /v1/me/records); omit for a dataset "
        "with one record per enterprise",
    )
    fields: list[str] = Field(min_length=1, max_length=50, description="the disputed non-key fields")
    reason: str = Field(min_length=1, max_length=2000)
    evidence: EvidenceIn | None = None


class ObjectionAccept(Request):
    corrected: dict[str, Any] = Field(
        description="field -> corrected value, for exactly the disputed fields (typed as the schema says)"
    )
    note: str | None = Field(None, max_length=2000)


class ObjectionReject(Request):
    reason: str = Field(min_length=1, max_length=2000)


class EvidenceInfo(Response):
    media_type: str
    bytes: int
    sha256: str


class ObjectionPublic(Response):
    id: str
    subject_uscc: str
    dataset_id: str
    provider_org_id: str
    record_key: str | None
    fields: list[str]
    reason: str
    state: str
    filed_version: int
    created_at: datetime
    due_at: datetime
    overdue: bool
    resolved_at: datetime | None
    resolution_note: str | None
    corrected_version: int | None
    corrected_fields: list[str] | None
    evidence: EvidenceInfo | None


class ResultRef(Response):
    kind: str
    id: str


class CorrectionPublic(Response):
    id: str
    objection_id: str
    subject_uscc: str
    dataset_id: str
    fields: list[str]
    result: ResultRef
    """the result that used a value later corrected, e.g. ``{"kind": "job", "id": ...}``"""
    operation: str
    purpose: str | None
    ledger_index: int
    released_at: datetime
    old_version: int
    new_version: int
    created_at: datetime


class ObjectionUnverifiable(Request):
    note: str = Field(
        min_length=1, max_length=2000, description="what was checked and why the value could not be verified"
    )


# --- dishonesty records, credit repair and statements (pps.governance.records, .repair, .statements) ---------


class DishonestyRecordPublic(Response):
    """One of the caller's own dishonesty records, its periods and whether it is still used."""

    dataset_id: str
    record_id: str
    kind: str
    authority: str
    decided_on: str
    conduct_ended_on: str
    grade: str
    min_publicity_months: int
    max_publicity_months: int
    eligible_from: str
    publicity_ends: str
    retention_ends: str
    fine_amount: float | None
    fine_paid_on: str | None
    tax_arrears: float | None
    status: str = Field(description="in_use, repaired, expired or retention_ended")
    can_apply: bool
    why_not: str | None
    commitment: str = Field(description="the credit commitment to sign, word for word, to apply for repair")
    statement: str | None


class ProofIn(Request):
    kind: str = Field(
        description="fine_receipt, tax_clearance, rectification_report, annual_report or other", max_length=32
    )
    media_type: str = Field(
        description="application/pdf, image/png or image/jpeg (checked against the bytes)"
    )
    content: str = Field(description="the file, base64")


class RepairCreate(Request):
    record_id: str = Field(min_length=1, max_length=200)
    commitment: str = Field(
        min_length=1, max_length=4000, description="the commitment, as worded by the platform"
    )
    proofs: list[ProofIn] = Field(default_factory=list, max_length=5)


class RepairCheck(Response):
    name: str
    result: str = Field(description="pass, fail, declared (proof given, not corroborated) or not_applicable")
    source: dict[str, Any]
    detail: str


class ProofInfo(Response):
    position: int
    kind: str
    media_type: str
    bytes: int
    sha256: str


class RepairPublic(Response):
    id: str
    subject_uscc: str
    dataset_id: str
    dataset_version: int
    record_id: str
    authority_org_id: str
    state: str
    checks: list[RepairCheck]
    proofs: list[ProofInfo]
    created_at: datetime
    due_at: datetime
    overdue: bool
    decided_at: datetime | None
    reasons: list[str]
    objection: str | None
    fee: int = Field(0, description="always 0: credit repair is free")


class RepairApprove(Request):
    note: str | None = Field(None, max_length=1000)


class RepairDeny(Request):
    reasons: list[str] = Field(min_length=1, max_length=10)


class RepairObject(Request):
    text: str = Field(min_length=1, max_length=1000, description="why the denial is wrong")


class RepairNoticePublic(Response):
    id: str
    application_id: str
    subject_uscc: str
    dataset_id: str
    record_id: str
    result: ResultRef
    operation: str
    purpose: str | None
    ledger_index: int
    released_at: datetime
    created_at: datetime


class StatementCreate(Request):
    dataset_id: str = Field(min_length=1, max_length=40)
    record_key: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1, max_length=500)


class StatementPublic(Response):
    id: str
    dataset_id: str
    record_key: str
    text: str
    created_at: datetime
