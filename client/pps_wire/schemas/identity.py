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
