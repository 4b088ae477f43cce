"""Consent: subjects grant, approve, deny and revoke; banks request and check; everyone verifies receipts.

A subject sees and acts on its own consents only; a bank sees the consents granted to it (or requested by it);
platform admins and auditors see all. Other consents answer 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from fastapi.responses import PlainTextResponse
from sqlalchemy.orm import Session

from api.deps import PUBLIC, Caller, PageLimit, RuntimeDep, allow
from api.middleware import current_request_id
from api.schemas import (
    ConsentDecision,
    ConsentGrant,
    ConsentPublic,
    ConsentRequestIn,
    ConsentSigned,
    DecisionOut,
    Page,
    PolicyCheck,
    PolicyCheckOut,
    SubjectSignatureIn,
    consent_public,
    consent_terms,
)
from pps.errors import InvalidInput, NotFound
from pps.governance.consent import OPERATIONS, PURPOSES
from pps.governance.policy import Request as PolicyRequest
from pps.governance.signatures import SignedAction
from pps.identity.uscc import validate_uscc
from pps.infra.storage.tables import Consent, ConsentState, Organization, Role, utcnow
from pps.ledger.entry import ObjectRef
from pps.runtime import Runtime

router = APIRouter(prefix="/v1", tags=["consent"])

Subject = Annotated[Caller, allow(Role.subject)]
Bank = Annotated[Caller, allow(Role.bank)]
Party = Annotated[Caller, allow(Role.subject, Role.bank, Role.platform_admin, Role.auditor)]
AnyRole = Annotated[Caller, allow()]


def _visible(rt: Runtime, session: Session, caller: Caller, consent_id: str) -> Consent:
    consent = rt.consents.get(session, consent_id)
    mine = (caller.role is Role.subject and consent.subject_uscc == caller.uscc) or (
        caller.role is Role.bank and consent.bank_org_id == caller.org_id
    )
    if not (mine or caller.sees_everything):
        raise NotFound(f"consent {consent_id} does not exist")
    return consent


def signed_action(sig: SubjectSignatureIn | None) -> SignedAction | None:
    return None if sig is None else SignedAction(text=sig.text, key_id=sig.key_id, signature=sig.signature)


def _own(rt: Runtime, session: Session, caller: Caller, consent_id: str) -> Consent:
    consent = rt.consents.get(session, consent_id)
    if caller.uscc is None or consent.subject_uscc != caller.uscc:
        raise NotFound(f"consent {consent_id} does not exist")
    return consent


@router.get("/purposes", summary="the purpose catalogue and the operations consent can cover")
def purposes(caller: AnyRole) -> dict[str, object]:
    return {"purposes": PURPOSES, "operations": sorted(OPERATIONS)}


@router.post("/consents", status_code=status.HTTP_201_CREATED, summary="grant consent to a bank (a subject)")
def grant(body: ConsentGrant, caller: Subject, rt: RuntimeDep) -> ConsentPublic:
    with rt.db.transaction() as session:
        subject = session.get(Organization, caller.org_id)
        if subject is None:
            raise NotFound("your organisation does not exist")
        consent = rt.consents.grant(
            session,
            subject=subject,
            bank_org_id=body.bank_org_id,
            terms=consent_terms(body),
            signed=signed_action(body.signature),
            actor=caller.actor,
            request_id=current_request_id(),
        )
        return consent_public(consent, utcnow())


@router.post(
    "/consent-requests", status_code=status.HTTP_201_CREATED, summary="ask an enterprise for consent"
)
def request_consent(body: ConsentRequestIn, caller: Bank, rt: RuntimeDep) -> ConsentPublic:
    with rt.db.transaction() as session:
        bank = session.get(Organization, caller.org_id)
        if bank is None:
            raise NotFound("your organisation does not exist")
        consent = rt.consents.request(
            session,
            bank=bank,
            subject_uscc=validate_uscc(body.subject_uscc),
            terms=consent_terms(body),
            actor=caller.actor,
            request_id=current_request_id(),
        )
        return consent_public(consent, utcnow())


@router.get("/consents", summary="consents: a subject's own, a bank's received, or all (admins, auditors)")
def list_consents(
    caller: Party,
    rt: RuntimeDep,
    limit: PageLimit,
    state: ConsentState | None = None,
    after: Annotated[str | None, Query(max_length=40)] = None,
) -> Page[ConsentPublic]:
    with rt.db.transaction(write=False) as session:
        found = rt.consents.list_consents(
            session,
            subject_uscc=caller.uscc if caller.role is Role.subject else None,
            bank_org_id=caller.org_id if caller.role is Role.bank else None,
            state=state,
            after=after,
            limit=limit,
        )
    if caller.sees_everything and found:  # an overseer paging through consents: noted, written in batches
        rt.reads.note(
            actor=caller.actor,
            what="consents.list",
            objects=[ObjectRef("consent", c.id) for c in found],
            subjects=[c.subject_uscc for c in found],
            request_id=current_request_id(),
        )
    now = utcnow()
    return Page(
        items=[consent_public(c, now) for c in found],
        next_after=found[-1].id if len(found) == limit else None,
    )


@router.get("/consents/{consent_id}", summary="one consent")
def get_consent(consent_id: str, caller: Party, rt: RuntimeDep) -> ConsentPublic:
    with rt.db.transaction() as session:
        consent = _visible(rt, session, caller, consent_id)
        if caller.uscc != consent.subject_uscc:  # someone else reading the subject's consent: on its record
            rt.reads.record(
                session,
                actor=caller.actor,
                action="read.consent",
                objects=(ObjectRef("consent", consent.id),),
                subjects=(consent.subject_uscc,),
                request_id=current_request_id(),
            )
        return consent_public(consent, utcnow())


@router.get(
    "/consents/{consent_id}/receipt",
    summary="the signed consent receipt (a signed note over canonical JSON)",
    response_class=PlainTextResponse,
)
def receipt(consent_id: str, caller: Party, rt: RuntimeDep) -> PlainTextResponse:
    with rt.db.transaction() as session:
        consent = _visible(rt, session, caller, consent_id)
        if consent.receipt is None:
            raise NotFound(f"consent {consent_id} has no receipt: it was never granted")
        rt.reads.record(
            session,
            actor=caller.actor,
            action="read.consent_receipt",
            objects=(ObjectRef("consent", consent.id),),
            subjects=(consent.subject_uscc,),
            request_id=current_request_id(),
        )
        return PlainTextResponse(consent.receipt)


@router.get("/consent/public-key", dependencies=[PUBLIC], summary="the key that verifies consent receipts")
def receipt_key(rt: RuntimeDep) -> dict[str, str]:
    return {
        "verifier_key": rt.consents.signer.verifier_key,
        "public_key_pem": rt.consents.signer.public_key_pem,
    }


@router.post(
    "/consents/{consent_id}/approve", summary="approve a bank's request, signed by your own key (the subject)"
)
def approve(
    consent_id: str, caller: Subject, rt: RuntimeDep, body: ConsentSigned | None = None
) -> ConsentPublic:
    with rt.db.transaction() as session:
        consent = rt.consents.approve(
            session,
            _own(rt, session, caller, consent_id),
            signed=signed_action(body.signature if body else None),
            actor=caller.actor,
            request_id=current_request_id(),
        )
        return consent_public(consent, utcnow())


@router.post("/consents/{consent_id}/deny", summary="deny a bank's request (the subject)")
def deny(consent_id: str, body: ConsentDecision, caller: Subject, rt: RuntimeDep) -> ConsentPublic:
    with rt.db.transaction() as session:
        consent = rt.consents.deny(
            session,
            _own(rt, session, caller, consent_id),
            reason=body.reason,
            actor=caller.actor,
            request_id=current_request_id(),
        )
        return consent_public(consent, utcnow())


@router.post("/consents/{consent_id}/revoke", summary="withdraw consent, effective at once (the subject)")
def revoke(
    consent_id: str, caller: Subject, rt: RuntimeDep, body: ConsentSigned | None = None
) -> ConsentPublic:
    with rt.db.transaction() as session:
        consent = rt.consents.revoke(
            session,
            _own(rt, session, caller, consent_id),
            signed=signed_action(body.signature if body else None),
            actor=caller.actor,
            request_id=current_request_id(),
        )
        return consent_public(consent, utcnow())


@router.post("/policy/check", summary="which of these subjects may I use, for what, and if not, why (a bank)")
def policy_check(body: PolicyCheck, caller: Bank, rt: RuntimeDep) -> PolicyCheckOut:
    if body.operation not in OPERATIONS:
        raise InvalidInput(f"operation must be one of {', '.join(sorted(OPERATIONS))}")
    subjects = tuple(dict.fromkeys(validate_uscc(s) for s in body.subjects))
    req = PolicyRequest(
        bank_org_id=caller.org_id,
        subjects=subjects,
        fields={k: tuple(v) for k, v in body.fields.items()},
        operation=body.operation,
        purpose=body.purpose,
    )
    with rt.db.transaction() as session:
        decisions = rt.policy.admit(
            session,
            req,
            job=ObjectRef("policy_check", current_request_id() or "none"),
            actor=caller.actor,
            request_id=current_request_id(),
        )
    denied: dict[str, int] = {}
    for d in decisions:
        if d.reason is not None:
            denied[d.reason.value] = denied.get(d.reason.value, 0) + 1
    return PolicyCheckOut(
        allowed=sum(d.allowed for d in decisions),
        denied=denied,
        decisions=[
            DecisionOut(
                subject=d.subject,
                allowed=d.allowed,
                consent_id=d.consent_id,
                reason=d.reason.value if d.reason else None,
                detail=d.detail,
            )
            for d in decisions
        ],
    )
