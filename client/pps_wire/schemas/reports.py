"""The credit report and authorised queries (issue 23): requests and the signed documents they return."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from pps_wire.schemas.common import Request, Response


class ReportRequest(Request):
    subject_uscc: str = Field(min_length=18, max_length=18)
    purpose: str = Field(max_length=64)


class QueryRequest(Request):
    subjects: list[str] = Field(min_length=1, max_length=1000, description="USCCs; each decided on its own")
    fields: dict[str, list[str]] = Field(
        min_length=1,
        max_length=20,
        description="dataset id -> field names (each leaves only through its mode)",
    )
    purpose: str = Field(max_length=64)
    months: int = Field(12, ge=1, le=36, description="for monthly data: the last N months")


class SignedDocumentOut(Response):
    """A report or a query result: ``document`` is what ``note`` signs (canonical JSON, the ledger's key)."""

    id: str
    kind: str
    subject_uscc: str
    expires_at: datetime
    ledger_index: int | None
    document: dict[str, Any]
    note: str


class QueryOut(Response):
    allowed: int
    """subjects with at least one field let out"""
    results: list[SignedDocumentOut]
