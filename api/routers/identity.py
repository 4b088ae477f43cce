"""Organisations, API tokens, enrolment, subject keys and break-glass.

Platform admins onboard organisations; every other organisation sees only itself and manages only its own
tokens. Another organisation's ids are answered with 404, as if they did not exist.

The operator's powers are bounded (issue 24): onboarding a bank or a subject yields a one-time *enrolment
code*, delivered out of band, from which the organisation mints its own first token (``POST /v1/enrol``); the
operator cannot mint, and cannot revoke alone, another organisation's credentials. A refused attempt is a
ledger entry the organisation sees in its own history. Emergency actions on another organisation
(``/v1/break-glass``) need two operators and only ever take credentials away.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, status

from api.deps import PUBLIC, Caller, PageLimit, RuntimeDep, allow
from api.middleware import current_request_id
from api.schemas import (
    BreakGlassIn,
    BreakGlassPublic,
    EnrolIn,
    Enrolled,
    Me,
    OrgCreate,
    OrgCreated,
    OrgDisable,
    OrgPublic,
    Page,
    SubjectKeyEnrol,
    SubjectKeyPublic,
    TokenIssue,
    TokenIssued,
    TokenPublic,
    org_public,
    token_public,
)
from pps.errors import InvalidInput, NotFound, OperatorBounded
from pps.identity.keys import Endorsement, NewKey
from pps.identity.realname import Representative
from pps.identity.service import SELF_CREDENTIALED
from pps.infra.storage.tables import BreakGlass, Role, SubjectKey, utcnow
from pps.ledger.entry import Actor
from pps.runtime import Runtime
from pps_wire.errors import ProofVerificationError
from pps_wire.subject_sign import b64, unb64

router = APIRouter(prefix="/v1", tags=["identity"])

AnyRole = Annotated[Caller, allow()]
Admin = Annotated[Caller, allow(Role.platform_admin)]
Subject = Annotated[Caller, allow(Role.subject)]


def _refused(rt: Runtime, actor: Actor, org_id: str | None, action: str, exc: OperatorBounded) -> None:
    """Record a refused operator power in its own transaction (the request's was rolled back)."""
    with rt.db.transaction() as session:
        rt.identity.record_refusal(
            session,
            action="operator.refused",
            actor=actor,
            org_id=org_id,
            reason=f"{action}: {exc.message}",
            request_id=current_request_id(),
        )


def _own_or_admin(caller: Caller, org_id: str) -> None:
    if caller.role is not Role.platform_admin and org_id != caller.org_id:
        raise NotFound(f"organisation {org_id} does not exist")


@router.get("/me", summary="who am I (the organisation behind this token)")
def me(caller: AnyRole, rt: RuntimeDep) -> Me:
    with rt.db.transaction(write=False) as session:
        return Me(org=org_public(rt.identity.get_org(session, caller.org_id)), token_id=caller.token_id)


@router.post(
    "/orgs",
    status_code=status.HTTP_201_CREATED,
    summary="onboard an organisation (returns its one-time enrolment code, to deliver out of band)",
)
def create_org(body: OrgCreate, caller: Admin, rt: RuntimeDep) -> OrgCreated:
    with rt.db.transaction() as session:
        org = rt.identity.create_org(
            session,
            name=body.name,
            role=body.role,
            uscc=body.uscc,
            actor=caller.actor,
            request_id=current_request_id(),
        )
        code = rt.identity.issue_enrolment_code(
            session, org=org, actor=caller.actor, request_id=current_request_id()
        )
        return OrgCreated(**org_public(org).model_dump(), enrolment_code=code.secret)


@router.post(
    "/enrol",
    status_code=status.HTTP_201_CREATED,
    dependencies=[PUBLIC],
    openapi_extra={"x-pps-credential-in-body": True},
    summary="redeem a one-time enrolment code for the organisation's first API token (shown once)",
)
def enrol(body: EnrolIn, rt: RuntimeDep) -> Enrolled:
    ttl = timedelta(days=body.ttl_days or rt.settings.token_ttl_days)
    with rt.db.transaction() as session:
        org, issued = rt.identity.redeem_enrolment_code(
            session, code=body.code, label=body.label, ttl=ttl, request_id=current_request_id()
        )
        public = token_public(issued.token, utcnow())
        return Enrolled(org=org_public(org), token=TokenIssued(**public.model_dump(), token=issued.secret))


def key_public(k: SubjectKey) -> SubjectKeyPublic:
    return SubjectKeyPublic(
        key_id=k.key_id,
        algorithm=k.algorithm,
        public_key=b64(k.public_key),
        label=k.label,
        verification_ref=k.verification_ref,
        enrolled_at=k.enrolled_at,
        revoked_at=k.revoked_at,
    )


def _bytes(text: str, what: str) -> bytes:
    try:
        return unb64(text, what)
    except ProofVerificationError as exc:
        raise InvalidInput(str(exc)) from None


@router.post(
    "/subject-keys",
    status_code=status.HTTP_201_CREATED,
    summary="enrol your consent-signing key after the real-name step (a subject)",
)
def enrol_key(body: SubjectKeyEnrol, caller: Subject, rt: RuntimeDep) -> SubjectKeyPublic:
    endorsement = None
    if body.endorsement_key_id or body.endorsement:
        if not (body.endorsement_key_id and body.endorsement):
            raise InvalidInput("an endorsement names the endorsing key and carries its signature")
        endorsement = Endorsement(body.endorsement_key_id, _bytes(body.endorsement, "endorsement"))
    with rt.db.transaction() as session:
        key = rt.keys.enrol(
            session,
            org=rt.identity.get_org(session, caller.org_id),
            key=NewKey(
                body.algorithm, _bytes(body.public_key, "public_key"), _bytes(body.proof, "proof"), body.label
            ),
            representative=Representative(body.representative_name, body.representative_id),
            endorsement=endorsement,
            actor=caller.actor,
            request_id=current_request_id(),
        )
        return key_public(key)


@router.get("/subject-keys", summary="your enrolled consent-signing keys (a subject)")
def list_keys(caller: Subject, rt: RuntimeDep) -> list[SubjectKeyPublic]:
    with rt.db.transaction(write=False) as session:
        return [key_public(k) for k in rt.keys.keys(session, caller.uscc or "")]


@router.delete("/subject-keys/{key_id}", summary="revoke one of your signing keys (a subject)")
def revoke_key(key_id: str, caller: Subject, rt: RuntimeDep) -> SubjectKeyPublic:
    with rt.db.transaction() as session:
        key = rt.keys.get(session, key_id)
        if key.org_id != caller.org_id:
            raise NotFound(f"key {key_id} does not exist")
        return key_public(rt.keys.revoke(session, key, actor=caller.actor, request_id=current_request_id()))


def break_glass_public(b: BreakGlass) -> BreakGlassPublic:
    return BreakGlassPublic(
        id=b.id,
        org_id=b.org_id,
        action=b.action,
        reason=b.reason,
        proposed_by=b.proposed_by,
        proposed_at=b.proposed_at,
        approved_by=b.approved_by,
        done_at=b.done_at,
    )


@router.post(
    "/break-glass",
    status_code=status.HTTP_201_CREATED,
    summary="propose an emergency action on another organisation (a second operator must approve it)",
)
def propose_break_glass(body: BreakGlassIn, caller: Admin, rt: RuntimeDep) -> BreakGlassPublic:
    with rt.db.transaction() as session:
        row = rt.identity.propose_break_glass(
            session,
            org=rt.identity.get_org(session, body.org_id),
            action=body.action,
            reason=body.reason,
            actor=caller.actor,
            request_id=current_request_id(),
        )
        return break_glass_public(row)


@router.post(
    "/break-glass/{bg_id}/approve", summary="approve and so perform a break-glass action (a second operator)"
)
def approve_break_glass(bg_id: str, caller: Admin, rt: RuntimeDep) -> BreakGlassPublic:
    try:
        with rt.db.transaction() as session:
            row = rt.identity.get_break_glass(session, bg_id)
            org_id = row.org_id
            return break_glass_public(
                rt.identity.approve_break_glass(
                    session, row, actor=caller.actor, request_id=current_request_id()
                )
            )
    except OperatorBounded as exc:
        _refused(rt, caller.actor, org_id, f"approve break-glass {bg_id}", exc)
        raise


@router.get(
    "/break-glass", summary="break-glass actions: all (operators, auditors) or those on your organisation"
)
def list_break_glass(caller: AnyRole, rt: RuntimeDep) -> list[BreakGlassPublic]:
    with rt.db.transaction(write=False) as session:
        rows = rt.identity.break_glass_for(session, None if caller.sees_everything else caller.org_id)
        return [break_glass_public(b) for b in rows]


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
    try:
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
    except OperatorBounded as exc:
        _refused(rt, caller.actor, org_id, "issue a token", exc)
        raise


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
        if token.org_id != caller.org_id:
            if caller.role is not Role.platform_admin:
                raise NotFound(f"token {token_id} does not exist")
            if token.org.role in SELF_CREDENTIALED:
                refusal = OperatorBounded(
                    f"the operator cannot revoke {token.org_id}'s credentials alone: propose a break-glass "
                    "'revoke_tokens' (POST /v1/break-glass) for a second operator to approve",
                    details={"org": token.org_id},
                )
                org_id = token.org_id
            else:
                refusal = None
        else:
            refusal = None
        if refusal is None:
            revoked = rt.identity.revoke_token(
                session, token, actor=caller.actor, request_id=current_request_id()
            )
            return token_public(revoked, utcnow())
    _refused(rt, caller.actor, org_id, f"revoke token {token_id}", refusal)
    raise refusal
