"""Consent: grants, requests and decisions, the consents a party sees, and a bank's policy check."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, ConfigDict, Field

from pps_wire.schemas.common import Request, Response


class ScopeItemIn(Request):
    dataset_id: str = Field(max_length=40)
    fields: list[str] = Field(
        min_length=1, max_length=500, description='field names; "*" means every C1 field (never C2 or C3)'
    )


class ConsentTerms(Request):
    purpose: str = Field(max_length=64)
    scope: list[ScopeItemIn] = Field(min_length=1, max_length=100)
    operations: list[str] = Field(min_length=1, max_length=5)
    valid_from: AwareDatetime | None = Field(None, description="default: now; with a timezone")
    valid_until: AwareDatetime = Field(description="with a timezone, e.g. 2027-01-01T00:00:00Z")
    max_uses: int | None = Field(None, ge=1, le=1_000_000)
    granularity: Literal["decision", "grade", "score"] | None = Field(
        None,
        description="what a score may release about the subject: an approve/decline decision, a grade, or the "
        "score at a stated resolution; default: the coarsest that serves the purpose",
    )


class SubjectSignatureIn(Request):
    """The subject's own signature over a consent action (:mod:`pps_wire.subject_sign`). Sent exactly as
    signed: unlike other requests, its strings are not stripped (the signed text ends with a newline)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    text: str = Field(max_length=20_000, description="the canonical JSON the key signed, with its newline")
    key_id: str = Field(max_length=40, description="the enrolled key that signed")
    signature: str = Field(max_length=4_000, description="base64 signature")


class ConsentGrant(ConsentTerms):
    bank_org_id: str = Field(max_length=40)
    signature: SubjectSignatureIn | None = Field(
        None,
        description="required: the subject's signature over these terms (a grant without one is refused)",
    )


class ConsentSigned(Request):
    signature: SubjectSignatureIn | None = Field(
        None, description="the subject's signature (required to approve; kept as proof when revoking)"
    )


class ConsentRequestIn(ConsentTerms):
    subject_uscc: str = Field(min_length=18, max_length=18)


class ConsentDecision(Request):
    reason: str = Field(min_length=1, max_length=500)


class ScopeItem(Response):
    dataset_id: str
    fields: list[str]


class ConsentPublic(Response):
    id: str
    subject_uscc: str
    bank_org_id: str
    purpose: str
    scope: list[ScopeItem]
    operations: list[str]
    valid_from: datetime
    valid_until: datetime
    max_uses: int | None
    granularity: str = "score"
    uses: int
    state: str
    expired: bool
    requested_by: str
    created_at: datetime
    decided_at: datetime | None
    revoked_at: datetime | None
    decision_note: str | None
    has_receipt: bool


class PolicyCheck(Request):
    subjects: list[str] = Field(min_length=1, max_length=100_000)
    fields: dict[str, list[str]] = Field(description="dataset id → field names")
    operation: str = Field(max_length=16)
    purpose: str = Field(max_length=64)


class DecisionOut(Response):
    subject: str
    allowed: bool
    consent_id: str | None
    reason: str | None
    detail: str


class PolicyCheckOut(Response):
    allowed: int
    denied: dict[str, int]
    decisions: list[DecisionOut]


# --- answers the API gives as plain objects (read by the client) ----------------------------------------------


class PurposesOut(Response):
    """``GET /v1/purposes``: purpose -> what it is for, and the operations consent can cover."""

    purposes: dict[str, str]
    operations: list[str]


class ReceiptKeyOut(Response):
    """``GET /v1/consent/public-key``: the key that verifies consent receipts."""

    verifier_key: str
    public_key_pem: str
