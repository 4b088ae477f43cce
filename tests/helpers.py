"""Small helpers for tests."""

from __future__ import annotations

import hashlib
from typing import Any

from demo.keyring import REPRESENTATIVE_ID, remember_key, signed, signed_grant, subject_key
from pps.identity.uscc import ALPHABET, new_uscc


def uscc_for(n: int) -> str:
    """A valid USCC derived from ``n`` (distinct for distinct ``n``)."""
    digest = hashlib.sha256(str(n).encode()).digest()
    org_body = "".join(ALPHABET[b % len(ALPHABET)] for b in digest[:8])
    return new_uscc("91" + "630100", org_body)


# --- subjects' own keys (issue 24): every consent is signed by its subject ---------------------------------

__all__ = [
    "REPRESENTATIVE_ID",
    "first_token",
    "remember_key",
    "signed",
    "signed_body",
    "signed_decision",
    "signed_grant",
    "subject_key",
    "uscc_for",
]


def signed_body(key: Any, subject: str, body: dict[str, Any]) -> dict[str, Any]:
    """A raw ``POST /v1/consents`` body with the subject's signature over its terms (a fresh nonce each call)."""
    from datetime import datetime

    from pps_wire.subject_sign import action_document, signed_action

    def when(v: Any) -> Any:
        return datetime.fromisoformat(v.replace("Z", "+00:00")) if isinstance(v, str) else v

    doc = action_document(
        action="grant",
        subject=subject,
        bank=body["bank_org_id"],
        purpose=body["purpose"],
        scope=body["scope"],
        operations=body["operations"],
        valid_from=when(body.get("valid_from")),
        valid_until=when(body["valid_until"]),
        max_uses=body.get("max_uses"),
        granularity=body.get("granularity"),
        separate=body.get("separate"),
    )
    return {**body, "signature": signed_action(key, doc)}


def signed_decision(key: Any, consent: dict[str, Any], action: str = "approve") -> dict[str, Any]:
    """A raw ``.../approve`` (or ``.../revoke``) body signed over the consent as the API shows it."""
    from datetime import datetime

    from pps_wire.subject_sign import action_document, signed_action

    doc = action_document(
        action=action,  # type: ignore[arg-type]
        consent_id=consent["id"],
        subject=consent["subject_uscc"],
        bank=consent["bank_org_id"],
        purpose=consent["purpose"],
        scope=consent["scope"],
        operations=consent["operations"],
        valid_from=datetime.fromisoformat(consent["valid_from"].replace("Z", "+00:00")),
        valid_until=datetime.fromisoformat(consent["valid_until"].replace("Z", "+00:00")),
        max_uses=consent["max_uses"],
        granularity=consent["granularity"],
    )
    return {"signature": signed_action(key, doc)}


def token_of_subject(rt: Any, uscc: str, label: str = "test") -> str:
    """An API token of the subject ``uscc`` whose organisation exists already (it enrolled its consent-signing key
    to grant): it redeems a fresh enrolment code, as a subject that lost its token would. Returns the secret."""
    from sqlalchemy import select

    from pps.infra.storage.tables import Organization

    with rt.db.transaction() as session:
        org = session.scalars(select(Organization).where(Organization.uscc == uscc)).one()
        return str(first_token(rt, session, org, label=label).secret)


def first_token(rt: Any, session: Any, org: Any, label: str = "test", days: int = 1) -> Any:
    """``org``'s first API token as the service mints it now (issue 24): the operator issues a one-time enrolment
    code and the organisation redeems it itself. Returns the :class:`pps.identity.service.IssuedToken`."""
    from datetime import timedelta

    from pps.ledger.entry import OPERATOR

    code = rt.identity.issue_enrolment_code(session, org=org, actor=OPERATOR)
    _, issued = rt.identity.redeem_enrolment_code(
        session, code=code.secret, label=label, ttl=timedelta(days=days)
    )
    return issued
