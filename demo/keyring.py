"""Enterprises' own consent-signing keys, for the demo's scripted enterprises and for the tests.

A real subject generates its key on its own device and enrols it after the real-name step; the demo (and the
tests) play many enterprises at once, so this module keeps each one's key in memory, enrols it through the
same service the API calls (as that enterprise, after the simulated real-name check), and signs consent
actions with it. The platform never sees these private keys.
"""

from __future__ import annotations

import weakref
from typing import Any

REPRESENTATIVE_ID = "11010519491231002X"
"""A well-formed resident ID number (GB 11643 check character) for the simulated real-name step."""

_KEYS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def subject_key(rt: Any, session: Any, uscc: str, algorithm: str = "ed25519") -> Any:
    """The test subject ``uscc``'s own key, enrolled on first use (its organisation created if it has none)."""
    from sqlalchemy import select

    from pps.identity.keys import NewKey
    from pps.identity.realname import Representative
    from pps.infra.storage.tables import Organization, Role
    from pps.ledger.entry import OPERATOR, Actor
    from pps_wire.subject_sign import SubjectKey, action_text, enrolment_document

    keys = _KEYS.setdefault(rt.consents, {})
    if uscc in keys:
        return keys[uscc]
    org = session.execute(select(Organization).where(Organization.uscc == uscc)).scalar_one_or_none()
    if org is None:
        org = rt.identity.create_org(
            session, name=f"subject {uscc}", role=Role.subject, uscc=uscc, actor=OPERATOR
        )
    key = SubjectKey.generate(algorithm)
    text = action_text(
        enrolment_document(org_id=org.id, subject=uscc, algorithm=key.algorithm, public_key=key.public_key)
    )
    actor = Actor(org_id=org.id, role="subject", via="api")
    existing = rt.keys.active_keys(session, uscc)
    endorsement = None
    if (
        existing
    ):  # a key enrolled by the test itself: rotate to ours, endorsed by a key we do not hold? refuse
        raise RuntimeError(f"subject {uscc} already has a key this helper did not make")
    rt.keys.enrol(
        session,
        org=org,
        key=NewKey(key.algorithm, key.public_key, key.sign(text)),
        representative=Representative("Test Representative", REPRESENTATIVE_ID),
        endorsement=endorsement,
        actor=actor,
    )
    keys[uscc] = key
    return key


def remember_key(rt: Any, uscc: str, key: Any) -> None:
    _KEYS.setdefault(rt.consents, {})[uscc] = key


def _separate(separate: Any) -> Any:
    if separate is None or isinstance(separate, dict):
        return separate
    return {
        "provide_to_bank": separate.provide_to_bank,
        "sensitive_fields": dict(separate.sensitive_fields),
        "warning_sha256": separate.warning_sha256,
    }


def signed(rt: Any, session: Any, consent: Any, action: str = "approve", separate: Any = None) -> Any:
    """The subject's signature over approving (or revoking) ``consent``, as the service takes it (a person's
    approval also over its separate grants)."""
    from pps.governance.signatures import SignedAction
    from pps_wire.subject_sign import action_text, b64

    key = subject_key(rt, session, consent.subject_uscc)
    text = action_text(rt.consents.signing_document(consent, action, separate=_separate(separate)))
    return SignedAction(text=text, key_id=key.key_id, signature=b64(key.sign(text)))


def signed_grant(rt: Any, session: Any, uscc: str, bank_org_id: str, terms: Any, separate: Any = None) -> Any:
    """The subject's signature over granting ``terms`` (a :class:`pps.governance.consent.Terms`); a person's
    also over its separate grants (``separate``: a :class:`pps.governance.persons.SeparateGrant` or a mapping)."""
    from pps.governance.signatures import SignedAction
    from pps_wire.subject_sign import action_document, action_text, b64

    key = subject_key(rt, session, uscc)
    text = action_text(
        action_document(
            action="grant",
            subject=uscc,
            bank=bank_org_id,
            purpose=terms.purpose,
            scope=terms.scope,
            operations=terms.operations,
            valid_from=terms.valid_from,
            valid_until=terms.valid_until,
            max_uses=terms.max_uses,
            granularity=terms.granularity,
            separate=_separate(separate),
        )
    )
    return SignedAction(text=text, key_id=key.key_id, signature=b64(key.sign(text)))
