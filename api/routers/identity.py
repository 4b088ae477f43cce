"""Organisations and API tokens.

Platform admins manage every organisation; every other organisation sees only itself and manages only its
own tokens. Another organisation's ids are answered with 404, as if they did not exist.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, status

from api.deps import Caller, PageLimit, RuntimeDep, allow
from api.middleware import current_request_id
from api.schemas import (
    Me,
    OrgCreate,
    OrgDisable,
    OrgPublic,
    Page,
    TokenIssue,
    TokenIssued,
    TokenPublic,
    org_public,
    token_public,
)
from pps.errors import NotFound
from pps.infra.storage.tables import Role, utcnow
from pps.runtime import Runtime

router = APIRouter(prefix="/v1", tags=["identity"])

AnyRole = Annotated[Caller, allow()]
Admin = Annotated[Caller, allow(Role.platform_admin)]


def _own_or_admin(caller: Caller, org_id: str) -> None:
    if caller.role is not Role.platform_admin and org_id != caller.org_id:
        raise NotFound(f"organisation {org_id} does not exist")


@router.get("/me", summary="who am I (the organisation behind this token)")
def me(caller: AnyRole, rt: RuntimeDep) -> Me:
    with rt.db.transaction(write=False) as session:
        return Me(org=org_public(rt.identity.get_org(session, caller.org_id)), token_id=caller.token_id)


@router.post("/orgs", status_code=status.HTTP_201_CREATED, summary="onboard an organisation")
def create_org(body: OrgCreate, caller: Admin, rt: RuntimeDep) -> OrgPublic:
    with rt.db.transaction() as session:
        org = rt.identity.create_org(
            session,
            name=body.name,
            role=body.role,
            uscc=body.uscc,
            actor=caller.actor,
            request_id=current_request_id(),
        )
        return org_public(org)


@router.get("/orgs", summary="list organisations")
def list_orgs(
    caller: Admin,
    rt: RuntimeDep,
    limit: PageLimit,
    role: Role | None = None,
    after: Annotated[str | None, Query(max_length=40)] = None,
) -> Page[OrgPublic]:
    with rt.db.transaction(write=False) as session:
        orgs = rt.identity.list_orgs(session, role=role, after=after, limit=limit)
    return Page(items=[org_public(o) for o in orgs], next_after=orgs[-1].id if len(orgs) == limit else None)


@router.get("/orgs/{org_id}", summary="one organisation (your own, or any for a platform admin)")
def get_org(org_id: str, caller: AnyRole, rt: RuntimeDep) -> OrgPublic:
    _own_or_admin(caller, org_id)
    with rt.db.transaction(write=False) as session:
        return org_public(rt.identity.get_org(session, org_id))


@router.post("/orgs/{org_id}/disable", summary="offboard an organisation (its tokens stop working)")
def disable_org(org_id: str, body: OrgDisable, caller: Admin, rt: RuntimeDep) -> OrgPublic:
    with rt.db.transaction() as session:
        org = rt.identity.get_org(session, org_id)
        rt.identity.disable_org(
            session, org, reason=body.reason, actor=caller.actor, request_id=current_request_id()
        )
        return org_public(org)


@router.post(
    "/orgs/{org_id}/tokens",
    status_code=status.HTTP_201_CREATED,
    summary="issue an API token (shown once)",
)
def issue_token(org_id: str, body: TokenIssue, caller: AnyRole, rt: RuntimeDep) -> TokenIssued:
    return issue_token_until(org_id, body, caller, rt, expires_by=None)


def issue_token_until(
    org_id: str, body: TokenIssue, caller: Caller, rt: Runtime, *, expires_by: datetime | None
) -> TokenIssued:
    """:func:`issue_token`, the new token expiring no later than ``expires_by`` if given.

    Not a route: the web pages call it behind :func:`issue_token`'s guard, capping a token minted from a
    browser session at the expiry of the token that session was opened with.
    """
    _own_or_admin(caller, org_id)
    ttl = timedelta(days=body.ttl_days or rt.settings.token_ttl_days)
    with rt.db.transaction() as session:
        org = rt.identity.get_org(session, org_id)
        now = utcnow()
        if expires_by is not None:
            ttl = min(ttl, expires_by - now)
        issued = rt.identity.issue_token(
            session,
            org=org,
            label=body.label,
            ttl=ttl,
            actor=caller.actor,
            request_id=current_request_id(),
            now=now,
        )
        public = token_public(issued.token, utcnow())
        return TokenIssued(**public.model_dump(), token=issued.secret)


@router.get("/orgs/{org_id}/tokens", summary="list an organisation's tokens (never their secrets)")
def list_tokens(org_id: str, caller: AnyRole, rt: RuntimeDep) -> list[TokenPublic]:
    _own_or_admin(caller, org_id)
    with rt.db.transaction(write=False) as session:
        rt.identity.get_org(session, org_id)
        now = utcnow()
        return [token_public(t, now) for t in rt.identity.list_tokens(session, org_id)]


@router.delete("/tokens/{token_id}", summary="revoke a token (takes effect at once)")
def revoke_token(token_id: str, caller: AnyRole, rt: RuntimeDep) -> TokenPublic:
    with rt.db.transaction() as session:
        token = rt.identity.get_token(session, token_id)
        if caller.role is not Role.platform_admin and token.org_id != caller.org_id:
            raise NotFound(f"token {token_id} does not exist")
        revoked = rt.identity.revoke_token(
            session, token, actor=caller.actor, request_id=current_request_id()
        )
        return token_public(revoked, utcnow())
