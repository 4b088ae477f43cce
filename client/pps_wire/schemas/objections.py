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
