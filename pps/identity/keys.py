"""Subject-held keys: what signs a subject's consent, enrolled by the subject itself after the real-name step.

* **Enrolment** (:meth:`SubjectKeyService.enrol`): the subject's own credential (its API token, itself from
  a one-time enrolment code) presents a public key it generated, a proof that it holds the private key (a
  signature over :func:`pps_wire.subject_sign.enrolment_document`), and its legal representative for the
  real-name check (:mod:`pps.identity.realname`). The key, the check's reference and a ledger entry are
  written together. Nobody else can enrol a key for a subject: the service refuses any actor but the subject.
* **Rotation**: a subject that already has an active key enrols a new one only with an *endorsement*, a
  signature by one of its active keys over the new key's enrolment document, and passes the real-name check
  again.
* **Revocation**: the subject revokes a key; signatures it made before stay valid, later ones do not.

The platform holds public keys only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from pps.errors import Conflict, InvalidInput, InvalidSubjectSignature, NotFound, OperatorBounded
from pps.identity.realname import RealNameVerifier, Representative, representative_hash
from pps.infra.storage.tables import Organization, Role, SubjectKey, utcnow
from pps.infra.text import check_name
from pps.ledger.entry import Actor, EntryDraft, ObjectRef
from pps.ledger.store import Ledger
from pps_wire.errors import ProofVerificationError
from pps_wire.passkey import ALGORITHM as PASSKEY
from pps_wire.subject_sign import (
    ALGORITHMS,
    action_text,
    b64,
    check_public_key,
    enrolment_document,
    key_id,
    verify_signature,
)


@dataclass(frozen=True)
class NewKey:
    algorithm: str
    public_key: bytes
    proof: bytes
    """the new key's signature over its own enrolment document (proof of possession)"""
    label: str = "default"


@dataclass(frozen=True)
class Endorsement:
    key_id: str
    signature: bytes
    """an active key's signature over the new key's enrolment document"""


class SubjectKeyService:
    def __init__(self, ledger: Ledger, secret_key: bytes, realname: RealNameVerifier) -> None:
        self.ledger = ledger
        self._key = secret_key
        self.realname = realname

    def enrol(
        self,
        session: Session,
        *,
        org: Organization,
        key: NewKey,
        representative: Representative,
        actor: Actor,
        endorsement: Endorsement | None = None,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> SubjectKey:
        if actor.org_id != org.id:
            raise OperatorBounded(
                f"only {org.id} itself can enrol its signing key; the operator cannot enrol a key for a subject"
            )
        if org.role is not Role.subject or org.uscc is None:
            raise InvalidInput("only a subject (an enterprise or a person) enrols a consent-signing key")
        if org.disabled_at is not None:
            raise Conflict(f"organisation {org.id} is disabled")
        if key.algorithm not in ALGORITHMS:
            raise InvalidInput(f"algorithm must be one of {', '.join(ALGORITHMS)}")
        check_name(key.label or "default", "the key's label")
        now = now or utcnow()
        text = action_text(
            enrolment_document(
                org_id=org.id, subject=org.uscc, algorithm=key.algorithm, public_key=key.public_key
            )
        )
        try:
            verify_signature(key.algorithm, key.public_key, text, key.proof)
        except ProofVerificationError as exc:
            raise InvalidSubjectSignature(
                f"the proof of possession does not verify ({exc}); sign the enrolment document with the new key"
            ) from None
        verification = self.realname.verify(org.uscc, representative)  # who is enrolling, first
        active = self.active_keys(session, org.uscc)
        if active:
            if endorsement is None:
                raise InvalidSubjectSignature(
                    "you already have an active key: a new key needs an endorsement, a signature by an active "
                    "key over the new key's enrolment document (key rotation)"
                )
            by_id = {k.key_id: k for k in active}
            endorser = by_id.get(endorsement.key_id)
            if endorser is None:
                raise InvalidSubjectSignature(f"key {endorsement.key_id} is not one of your active keys")
            try:
                verify_signature(endorser.algorithm, endorser.public_key, text, endorsement.signature)
            except ProofVerificationError as exc:
                raise InvalidSubjectSignature(f"the endorsement does not verify ({exc})") from None
        kid = key_id(key.algorithm, key.public_key)
        if session.get(SubjectKey, kid) is not None:
            raise Conflict(f"key {kid} is already enrolled")
        row = SubjectKey(
            key_id=kid,
            org_id=org.id,
            subject_uscc=org.uscc,
            algorithm=key.algorithm,
            public_key=key.public_key,
            credential_id=None,
            label=key.label.strip() or "default",
            verification_ref=verification.reference,
            representative_hash=representative_hash(self._key, representative),
            enrolled_at=now,
            revoked_at=None,
        )
        session.add(row)
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="subject_key.enrol",
                actor=actor,
                objects=(ObjectRef("subject_key", kid[:64]), ObjectRef("org", org.id)),
                subjects=(org.uscc,),
                request_id=request_id,
                detail={
                    "key_id": kid,
                    "algorithm": key.algorithm,
                    "public_key": b64(key.public_key),
                    "real_name": {"reference": verification.reference, "method": verification.method},
                    "rotation_endorsed_by": endorsement.key_id if endorsement else None,
                },
            ),
            now=now,
        )
        return row

    def enrol_passkey(
        self,
        session: Session,
        *,
        org: Organization,
        public_key: bytes,
        credential_id: str,
        representative: Representative,
        actor: Actor,
        label: str = "passkey",
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> SubjectKey:
        """Enrol a passkey the subject registered in the portal (its registration, checked by the web layer
        with py_webauthn against the challenge it issued, is the proof of possession). A subject that already
        has an active key rotates with an endorsement (``pps-client keys enrol --endorse-with``) instead."""
        if actor.org_id != org.id:
            raise OperatorBounded("only the subject itself can enrol its passkey")
        if org.role is not Role.subject or org.uscc is None:
            raise InvalidInput("only a subject (an enterprise or a person) enrols a consent-signing key")
        if org.disabled_at is not None:
            raise Conflict(f"organisation {org.id} is disabled")
        check_name(label or "passkey", "the key's label")
        try:
            check_public_key(PASSKEY, public_key)
        except ProofVerificationError as exc:
            raise InvalidInput(str(exc)) from None
        now = now or utcnow()
        verification = self.realname.verify(org.uscc, representative)
        if self.active_keys(session, org.uscc):
            raise InvalidSubjectSignature(
                "you already have an active key: a further key is enrolled with an endorsement by it "
                "(pps-client keys enrol --endorse-with), or revoke it first"
            )
        kid = key_id(PASSKEY, public_key)
        if session.get(SubjectKey, kid) is not None:
            raise Conflict(f"key {kid} is already enrolled")
        row = SubjectKey(
            key_id=kid,
            org_id=org.id,
            subject_uscc=org.uscc,
            algorithm=PASSKEY,
            public_key=public_key,
            credential_id=credential_id,
            label=label.strip() or "passkey",
            verification_ref=verification.reference,
            representative_hash=representative_hash(self._key, representative),
            enrolled_at=now,
            revoked_at=None,
        )
        session.add(row)
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="subject_key.enrol",
                actor=actor,
                objects=(ObjectRef("subject_key", kid), ObjectRef("org", org.id)),
                subjects=(org.uscc,),
                request_id=request_id,
                detail={
                    "key_id": kid,
                    "algorithm": PASSKEY,
                    "public_key": b64(public_key),
                    "real_name": {"reference": verification.reference, "method": verification.method},
                    "rotation_endorsed_by": None,
                },
            ),
            now=now,
        )
        return row

    def revoke(
        self,
        session: Session,
        key: SubjectKey,
        *,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> SubjectKey:
        if actor.org_id != key.org_id:
            raise OperatorBounded("only the subject itself can revoke its signing key")
        if key.revoked_at is not None:
            raise Conflict(f"key {key.key_id} was already revoked at {key.revoked_at.isoformat()}")
        now = now or utcnow()
        key.revoked_at = now
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="subject_key.revoke",
                actor=actor,
                objects=(ObjectRef("subject_key", key.key_id), ObjectRef("org", key.org_id)),
                subjects=(key.subject_uscc,),
                request_id=request_id,
                detail={"key_id": key.key_id},
            ),
            now=now,
        )
        return key

    def get(self, session: Session, kid: str) -> SubjectKey:
        row = session.get(SubjectKey, kid)
        if row is None:
            raise NotFound(f"key {kid} does not exist")
        return row

    def keys(self, session: Session, uscc: str) -> list[SubjectKey]:
        return list(
            session.execute(
                select(SubjectKey)
                .where(SubjectKey.subject_uscc == uscc)
                .order_by(SubjectKey.enrolled_at, SubjectKey.key_id)
            ).scalars()
        )

    def active_keys(self, session: Session, uscc: str) -> list[SubjectKey]:
        return [k for k in self.keys(session, uscc) if k.revoked_at is None]
