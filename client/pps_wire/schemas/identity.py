"""Organisations, roles and API tokens."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Literal

from pydantic import Field

from pps_wire.schemas.common import Request, Response


class Role(enum.StrEnum):
    platform_admin = "platform_admin"
    data_provider = "data_provider"
    bank = "bank"
    subject = "subject"
    auditor = "auditor"


class OrgCreate(Request):
    name: str = Field(min_length=1, max_length=200)
    role: Role
    uscc: str | None = Field(
        None,
        min_length=18,
        max_length=18,
        description="required for subjects (enterprises), refused otherwise",
    )


class OrgPublic(Response):
    id: str
    name: str
    role: Role
    uscc: str | None
    created_at: datetime
    disabled_at: datetime | None


class OrgDisable(Request):
    reason: str = Field(min_length=1, max_length=500, description="why the organisation is offboarded")


class TokenIssue(Request):
    label: str = Field("default", min_length=1, max_length=100)
    ttl_days: int | None = Field(None, ge=1, le=3650, description="lifetime; default set by the server")


TokenState = Literal["active", "expired", "revoked"]


class TokenPublic(Response):
    id: str
    org_id: str
    label: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    state: TokenState


class TokenIssued(TokenPublic):
    token: str = Field(description="the bearer token; shown only now, store it safely")


class Me(Response):
    org: OrgPublic
    token_id: str


class OrgCreated(OrgPublic):
    enrolment_code: str = Field(
        description="the one-time code for the organisation's first credential: deliver it out of band; shown once"
    )


class EnrolIn(Request):
    code: str = Field(min_length=1, max_length=128, description="the one-time enrolment code (enr_...)")
    label: str = Field("enrolment", min_length=1, max_length=100)
    ttl_days: int | None = Field(None, ge=1, le=3650)


class Enrolled(Response):
    org: OrgPublic
    token: TokenIssued


class SubjectKeyEnrol(Request):
    algorithm: Literal["ed25519", "sm2"]
    public_key: str = Field(
        max_length=200, description="base64: Ed25519 32 bytes, SM2 the 64-byte point x||y"
    )
    proof: str = Field(
        max_length=200, description="base64 signature by the new key over its enrolment document"
    )
    label: str = Field("default", min_length=1, max_length=100)
    representative_name: str = Field(min_length=1, max_length=50, description="the legal representative")
    representative_id: str = Field(
        min_length=18,
        max_length=18,
        description="the representative's resident ID number (checked, never stored)",
    )
    endorsement_key_id: str | None = Field(None, max_length=40, description="rotation: an active key's id")
    endorsement: str | None = Field(None, max_length=200, description="rotation: its base64 signature")


class SubjectKeyPublic(Response):
    key_id: str
    algorithm: str
    public_key: str
    label: str
    verification_ref: str
    enrolled_at: datetime
    revoked_at: datetime | None


class BreakGlassIn(Request):
    org_id: str = Field(max_length=40)
    action: Literal["revoke_tokens", "disable_org"]
    reason: str = Field(min_length=10, max_length=500)


class BreakGlassPublic(Response):
    id: str
    org_id: str
    action: str
    reason: str
    proposed_by: str
    proposed_at: datetime
    approved_by: str | None
    done_at: datetime | None
