"""Consent: a subject's grant to one bank, for one purpose, over named fields, for named operations, within
a validity window and an optional number of uses — requested by banks, granted, denied and revoked by the
subject, each step a ledger entry, each grant a signed receipt.

Rules that hold for every grant:

* fields are named explicitly; ``"*"`` stands for *all C1 fields* of a dataset and never for C2 — a C2 field
  is covered only if it is named; C3 fields cannot be granted at all (they are never released);
* the purpose comes from :data:`PURPOSES` and the operations from :data:`OPERATIONS`;
* the window ends after it starts and in the future; ``max_uses``, if given, is positive;
* only a bank can be the grantee, and only the subject itself grants, denies or revokes.

A **consent receipt** is a C2SP signed note (the format of the ledger's checkpoints) whose text is the
RFC 8785 canonical JSON of the grant plus a newline, signed with the platform's receipt key
(:mod:`pps_wire.receipt`). Subject and bank can verify it offline (``pps-client consent verify-receipt``,
``pps_client.verify_receipt``); every later use names the consent id.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pps.data.datasets.schema import DatasetSchema, Disclosure, Sensitivity, narrowest
from pps.errors import Conflict, InvalidInput, NotFound, SeparateConsentRequired
from pps.governance.signatures import ConsentSignatures, SignedAction
from pps.identity.uscc import validate_uscc
from pps.infra.storage.tables import (
    Consent,
    ConsentSignature,
    ConsentState,
    Dataset,
    Organization,
    Person,
    Role,
    SubjectKey,
    new_id,
    utcnow,
)
from pps.ledger.entry import Actor, EntryDraft, ObjectRef, format_time
from pps.ledger.store import Ledger
from pps_wire.checkpoint import NoteSigner, NoteVerifier
from pps_wire.receipt import RECEIPT_TYPE, receipt_text
from pps_wire.subject_sign import Action, action_document


class Operation(StrEnum):
    psi = "psi"
    score = "score"
    aggregate = "aggregate"
    train = "train"
    enclave = "enclave"
    report = "report"
    """the consented part of the standard credit report (masked summaries; issue 23)"""
    query = "query"
    """an authorised query of the subject's records through the disclosure modes (issue 23)"""


OPERATIONS = frozenset(Operation)

PURPOSES: dict[str, str] = {
    "loan_underwriting": "assess a loan application",
    "post_loan_monitoring": "monitor an outstanding loan",
    "credit_line_review": "review a credit line",
    "joint_model_training": "train a risk model jointly with the platform or other banks",
    "risk_statistics": "cohort statistics for portfolio risk management",
    # the platform's credit products (青政办〔2023〕24号); what each reads is its data contract,
    # pps.governance.products.PRODUCTS
    "tax_loan": "税易贷: a credit loan underwritten on the borrower's tax record",
    "procurement_loan": "政采贷: a loan against a government procurement award",
    "farm_herding_loan": "农牧贷: a loan to a farm or herding household, family farm or cooperative",
    "green_finance": "green finance: a loan to a clean-energy or energy-saving project or firm",
}
"""The purpose catalogue: every computation names one of these."""

MAX_VALIDITY = timedelta(days=3 * 366)


@dataclass(frozen=True)
class Terms:
    """What a consent covers; checked by :class:`ConsentService` before anything is stored."""

    purpose: str
    scope: list[dict[str, Any]]
    """``[{"dataset_id": ..., "fields": [...]}]``; ``"*"`` stands for every C1 field"""
    operations: list[str]
    valid_until: datetime
    valid_from: datetime | None = None
    """default: now"""
    max_uses: int | None = None
    granularity: str | None = None
    """``decision``, ``grade`` or ``score``; default :data:`DEFAULT_GRANULARITY` for the purpose"""


GRANULARITIES = ("decision", "grade", "score")
"""What a score may release about a subject, coarsest first (:mod:`enclave_sim.model_check`)."""
DEFAULT_GRANULARITY: dict[str, str] = {
    "loan_underwriting": "grade",
    "credit_line_review": "grade",
    "post_loan_monitoring": "grade",
}
"""The coarsest granularity that serves each purpose (pricing and limits need a grade; anything else a
decision). A subject may widen it to ``score`` or narrow it to ``decision`` in its consent."""


def granularity_for(purpose: str, asked: str | None) -> str:
    """The granularity a new consent records: the one asked, or the purpose's default."""
    if asked is None:
        return DEFAULT_GRANULARITY.get(purpose, "decision")
    if asked not in GRANULARITIES:
        raise InvalidInput(f"granularity must be one of {', '.join(GRANULARITIES)}, got {asked!r}")
    return asked


def check_purpose(purpose: str) -> str:
    if purpose not in PURPOSES:
        raise InvalidInput(f"unknown purpose {purpose!r}; the catalogue has: {', '.join(sorted(PURPOSES))}")
    return purpose


def _refuse_person_without_separate_grant(session: Session, subject: str, separate_grant: bool) -> None:
    # a person code, or an individual business (USCC 92...) onboarded with its owner: pps.identity.persons
    personal = subject[:1] == "P" or (subject[:2] == "92" and session.get(Person, subject) is not None)
    if personal and not separate_grant:
        raise SeparateConsentRequired(
            "a person's consent needs separate grants (PIPL Art. 23, 29; 征信业管理条例 Art. 14): give it "
            "through POST /v1/persons/me/consents, which takes them",
            details={"missing": ["provide_to_bank"]},
        )


class ConsentService:
    def __init__(
        self, ledger: Ledger, receipt_signer: NoteSigner, signatures: ConsentSignatures | None = None
    ) -> None:
        self.ledger = ledger
        self.signer = receipt_signer
        self.signatures = signatures or ConsentSignatures()

    @property
    def receipt_verifier(self) -> NoteVerifier:
        return NoteVerifier.from_string(self.signer.verifier_key)

    # --- validation ----------------------------------------------------------------------------------

    def _resolve_scope(self, session: Session, scope: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not scope:
            raise InvalidInput("a consent must cover at least one dataset")
        resolved = []
        seen: set[str] = set()
        for item in scope:
            dataset_id = item.get("dataset_id")
            fields = item.get("fields") or []
            if not isinstance(dataset_id, str) or dataset_id in seen:
                raise InvalidInput("each scope item names one dataset, once")
            seen.add(dataset_id)
            ds = session.get(Dataset, dataset_id)
            if ds is None or ds.deleted_at is not None:
                raise InvalidInput(f"dataset {dataset_id} does not exist")
            schema = DatasetSchema.model_validate_json(ds.schema_json)
            keys = set(schema.key_columns)
            names: list[str] = []
            for f in fields:
                if f == "*":
                    names.extend(
                        c.name
                        for c in schema.columns
                        if c.sensitivity is Sensitivity.C1
                        and c.name not in keys
                        and c.mode is not Disclosure.never
                    )
                    continue
                try:
                    col = schema.column(f)
                except KeyError:
                    raise InvalidInput(f"dataset {dataset_id} has no field {f!r}") from None
                if col.never_released:
                    raise InvalidInput(
                        f"field {f!r} is class C3, JR/T 0197 level 5 or important data: it is never released "
                        "and cannot be granted"
                    )
                if col.mode is Disclosure.never:
                    raise InvalidInput(f"field {f!r} is declared never disclosed: it cannot be granted")
                names.append(f)
            names = sorted(set(names) - keys)
            if not names:
                raise InvalidInput(f"the scope for dataset {dataset_id} names no grantable field")
            entry: dict[str, Any] = {"dataset_id": dataset_id, "fields": names}
            modes = item.get("modes") or {}
            if modes:
                entry["modes"] = self._narrowing(schema, dataset_id, names, modes)
            resolved.append(entry)
        return sorted(resolved, key=lambda i: i["dataset_id"])

    @staticmethod
    def _narrowing(schema: DatasetSchema, dataset_id: str, names: list[str], modes: Any) -> dict[str, str]:
        """A consent's per-field disclosure modes: each may only narrow the provider's (issue 23)."""
        if not isinstance(modes, dict):
            raise InvalidInput("modes maps a field to a disclosure mode")
        out: dict[str, str] = {}
        for name, mode in sorted(modes.items()):
            if name not in names:
                raise InvalidInput(f"{dataset_id}: modes names {name!r}, which the scope does not grant")
            try:
                wanted = Disclosure(mode)
            except ValueError:
                raise InvalidInput(
                    f"{dataset_id}.{name}: disclosure mode must be one of {', '.join(Disclosure)}"
                ) from None
            provider = schema.column(name).mode
            if narrowest(wanted, provider) is not wanted:
                raise InvalidInput(
                    f"{dataset_id}.{name}: a consent may narrow the provider's disclosure mode ({provider.value}), "
                    f"never widen it (asked {wanted.value})"
                )
            out[name] = wanted.value
        return out

    def _check_terms(
        self,
        purpose: str,
        operations: list[str],
        valid_from: datetime,
        valid_until: datetime,
        max_uses: int | None,
        now: datetime,
    ) -> list[str]:
        check_purpose(purpose)
        if valid_from.tzinfo is None or valid_until.tzinfo is None:
            raise InvalidInput("validity times need a timezone, e.g. 2027-01-01T00:00:00Z")
        ops = sorted(set(operations))
        unknown = [o for o in ops if o not in OPERATIONS]
        if unknown or not ops:
            raise InvalidInput(
                f"operations must be some of {', '.join(sorted(OPERATIONS))}"
                + (f"; unknown: {unknown}" if unknown else "")
            )
        if valid_until <= now:
            raise InvalidInput("the validity window has already ended")
        if valid_until <= valid_from:
            raise InvalidInput("the validity window ends before it starts")
        if valid_until - valid_from > MAX_VALIDITY:
            raise InvalidInput("a consent may last at most three years")
        if max_uses is not None and max_uses < 1:
            raise InvalidInput("max_uses must be positive")
        return ops

    def _bank(self, session: Session, bank_org_id: str) -> Organization:
        bank = session.get(Organization, bank_org_id)
        if bank is None or bank.role is not Role.bank or bank.disabled_at is not None:
            raise InvalidInput(
                f"{bank_org_id} is not a bank on the platform; consent can only be given to a bank"
            )
        return bank

    # --- flows ---------------------------------------------------------------------------------------

    def grant(
        self,
        session: Session,
        *,
        subject: Organization,
        bank_org_id: str,
        terms: Terms,
        signed: SignedAction | None,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
        separate_grant: bool = False,
        separate: Mapping[str, Any] | None = None,
    ) -> Consent:
        """The subject grants consent directly, signing the terms with its own enrolled key. A person's consent
        comes through :class:`pps.governance.persons.PersonRules`, which checks its separate grants
        (``separate_grant``)."""
        now = now or utcnow()
        if subject.role is not Role.subject or subject.uscc is None:
            raise InvalidInput("only an enterprise (a subject organisation) can give consent")
        _refuse_person_without_separate_grant(session, subject.uscc, separate_grant)
        # the terms first (a malformed grant is told what is wrong with it), then the subject's signature
        self._bank(session, bank_org_id)
        self._check_terms(
            terms.purpose,
            terms.operations,
            terms.valid_from or now,
            terms.valid_until,
            terms.max_uses,
            now,
        )
        granularity_for(terms.purpose, terms.granularity)
        self._resolve_scope(session, terms.scope)
        expected = action_document(
            action="grant",
            subject=subject.uscc,
            bank=bank_org_id,
            purpose=terms.purpose,
            scope=[{"dataset_id": i.get("dataset_id"), "fields": i.get("fields") or []} for i in terms.scope],
            operations=terms.operations,
            valid_from=terms.valid_from,
            valid_until=terms.valid_until,
            max_uses=terms.max_uses,
            granularity=terms.granularity,
            separate=separate,
        )
        key, doc = self.signatures.check_new(
            session, subject_uscc=subject.uscc, signed=signed, expected=expected, now=now
        )
        assert signed is not None
        consent = self._new(session, subject.uscc, bank_org_id, terms, requested_by="subject", now=now)
        sig = self.signatures.record(session, consent=consent, key=key, signed=signed, doc=doc, now=now)
        return self._activate(session, consent, actor=actor, request_id=request_id, now=now, sig=sig)

    def signing_document(
        self,
        consent: Consent,
        action: Action,
        *,
        nonce: str | None = None,
        signed_at: datetime | None = None,
        separate: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """What the subject signs to approve or revoke ``consent`` (:mod:`pps_wire.subject_sign`); a person's
        approval also names its separate grants (``separate``)."""
        return action_document(
            action=action,
            consent_id=consent.id,
            subject=consent.subject_uscc,
            bank=consent.bank_org_id,
            purpose=consent.purpose,
            scope=json.loads(consent.scope_json),
            operations=json.loads(consent.operations_json),
            valid_from=consent.valid_from,
            valid_until=consent.valid_until,
            max_uses=consent.max_uses,
            granularity=consent.granularity,
            separate=separate,
            nonce=nonce,
            signed_at=signed_at,
        )

    def _check_signed(
        self,
        session: Session,
        consent: Consent,
        action: Action,
        signed: SignedAction | None,
        now: datetime,
        separate: Mapping[str, Any] | None = None,
    ) -> tuple[SubjectKey, dict[str, Any]]:
        return self.signatures.check_new(
            session,
            subject_uscc=consent.subject_uscc,
            signed=signed,
            expected=self.signing_document(consent, action, separate=separate),
            now=now,
        )

    def request(
        self,
        session: Session,
        *,
        bank: Organization,
        subject_uscc: str,
        terms: Terms,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> Consent:
        """A bank asks an enterprise for consent; the enterprise approves or denies it.

        The answer is the same whether or not the enterprise has joined the platform (it sees the request when
        it does), so a request cannot be used to find out who is on the platform.
        """
        now = now or utcnow()
        consent = self._new(session, subject_uscc, bank.id, terms, requested_by="bank", now=now)
        self.ledger.append(session, self._draft("consent.request", consent, actor, request_id), now=now)
        return consent

    def _new(
        self,
        session: Session,
        subject_uscc: str,
        bank_org_id: str,
        terms: Terms,
        *,
        requested_by: str,
        now: datetime,
    ) -> Consent:
        self._bank(session, bank_org_id)
        valid_from = terms.valid_from or now
        ops = self._check_terms(
            terms.purpose, terms.operations, valid_from, terms.valid_until, terms.max_uses, now
        )
        consent = Consent(
            id=new_id("cns"),
            subject_uscc=validate_uscc(subject_uscc),
            bank_org_id=bank_org_id,
            purpose=terms.purpose,
            scope_json=json.dumps(self._resolve_scope(session, terms.scope)),
            operations_json=json.dumps(ops),
            valid_from=valid_from,
            valid_until=terms.valid_until,
            max_uses=terms.max_uses,
            granularity=granularity_for(terms.purpose, terms.granularity),
            uses=0,
            state=ConsentState.requested,
            requested_by=requested_by,
            created_at=now,
        )
        session.add(consent)
        session.flush()
        return consent

    def approve(
        self,
        session: Session,
        consent: Consent,
        *,
        signed: SignedAction | None,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
        separate_grant: bool = False,
        separate: Mapping[str, Any] | None = None,
    ) -> Consent:
        """The subject approves a bank's request, signing its terms (by consent id) with its own key."""
        if consent.state is not ConsentState.requested:
            raise Conflict(f"consent {consent.id} is {consent.state.value}, not awaiting a decision")
        _refuse_person_without_separate_grant(session, consent.subject_uscc, separate_grant)
        now = now or utcnow()
        if consent.valid_until <= now:
            raise Conflict(f"consent request {consent.id} has expired; the bank must ask again")
        self._bank(session, consent.bank_org_id)  # the bank may have been offboarded since it asked
        self._resolve_scope(session, json.loads(consent.scope_json))  # and the datasets deleted
        key, doc = self._check_signed(session, consent, "approve", signed, now, separate)
        assert signed is not None
        sig = self.signatures.record(session, consent=consent, key=key, signed=signed, doc=doc, now=now)
        return self._activate(session, consent, actor=actor, request_id=request_id, now=now, sig=sig)

    def deny(
        self, session: Session, consent: Consent, *, reason: str, actor: Actor, request_id: str | None = None
    ) -> Consent:
        if consent.state is not ConsentState.requested:
            raise Conflict(f"consent {consent.id} is {consent.state.value}, not awaiting a decision")
        consent.state = ConsentState.denied
        consent.decided_at = utcnow()
        consent.decision_note = reason
        session.flush()
        self.ledger.append(
            session, self._draft("consent.deny", consent, actor, request_id, {"reason": reason})
        )
        return consent

    def revoke(
        self,
        session: Session,
        consent: Consent,
        *,
        actor: Actor,
        signed: SignedAction | None = None,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> Consent:
        """Withdraw consent at once (PIPL art. 15): no computation admitted or released after this uses it.

        A withdrawal only takes power away, and must be as easy as the grant (PIPL art. 15): it needs no
        signature, but a signed one (``signed``) is checked like a grant and kept as the subject's own proof.
        """
        if consent.state is not ConsentState.active:
            raise Conflict(
                f"consent {consent.id} is {consent.state.value}; only an active consent can be revoked"
            )
        now = now or utcnow()
        sig = None
        if signed is not None:
            key, doc = self._check_signed(session, consent, "revoke", signed, now)
            sig = self.signatures.record(session, consent=consent, key=key, signed=signed, doc=doc, now=now)
        consent.state = ConsentState.revoked
        consent.revoked_at = now
        session.flush()
        self.ledger.append(
            session, self._draft("consent.revoke", consent, actor, request_id, _signed_detail(sig)), now=now
        )
        return consent

    def _activate(
        self,
        session: Session,
        consent: Consent,
        *,
        actor: Actor,
        request_id: str | None,
        now: datetime,
        sig: ConsentSignature,
    ) -> Consent:
        consent.state = ConsentState.active
        consent.decided_at = now
        consent.receipt = self.signer.sign(receipt_text(self.receipt_document(session, consent, sig)))
        session.flush()
        self.ledger.append(
            session, self._draft("consent.grant", consent, actor, request_id, _signed_detail(sig)), now=now
        )
        return consent

    def receipt_document(
        self, session: Session, consent: Consent, sig: ConsentSignature | None = None
    ) -> dict[str, Any]:
        bank = session.get(Organization, consent.bank_org_id)
        return {
            "subject_signature": _signed_detail(sig).get("subject_signature"),
            "type": RECEIPT_TYPE,
            "issuer": self.signer.name,
            "consent_id": consent.id,
            "subject": consent.subject_uscc,
            "bank": {"id": consent.bank_org_id, "name": bank.name if bank else None},
            "purpose": consent.purpose,
            "scope": json.loads(consent.scope_json),
            "operations": json.loads(consent.operations_json),
            "valid_from": format_time(consent.valid_from),
            "valid_until": format_time(consent.valid_until),
            "max_uses": consent.max_uses,
            "granularity": consent.granularity,
            "granted_at": format_time(consent.decided_at or utcnow()),
        }

    def _draft(
        self,
        action: str,
        consent: Consent,
        actor: Actor,
        request_id: str | None,
        extra: dict[str, Any] | None = None,
    ) -> EntryDraft:
        return EntryDraft(
            action=action,
            actor=actor,
            objects=(ObjectRef("consent", consent.id), ObjectRef("org", consent.bank_org_id)),
            subjects=(consent.subject_uscc,),
            purpose=consent.purpose,
            consent_ids=(consent.id,),
            request_id=request_id,
            detail={
                "bank": consent.bank_org_id,
                "operations": json.loads(consent.operations_json),
                "scope": json.loads(consent.scope_json),
                "valid_from": format_time(consent.valid_from),
                "valid_until": format_time(consent.valid_until),
                "max_uses": consent.max_uses,
                "granularity": consent.granularity,
                **(extra or {}),
            },
        )

    def close_for_org(
        self, session: Session, org: Organization, actor: Actor, request_id: str | None = None
    ) -> None:
        """An offboarded subject or bank: its active consents are revoked and pending requests denied."""
        if org.role is Role.subject and org.uscc:
            whose = Consent.subject_uscc == org.uscc
        elif org.role is Role.bank:
            whose = Consent.bank_org_id == org.id
        else:
            return
        open_ = session.execute(
            select(Consent).where(whose, Consent.state.in_([ConsentState.active, ConsentState.requested]))
        ).scalars()
        for consent in list(open_):
            if consent.state is ConsentState.active:
                self.revoke(session, consent, actor=actor, request_id=request_id)
            else:
                self.deny(
                    session,
                    consent,
                    reason=f"organisation {org.id} was offboarded",
                    actor=actor,
                    request_id=request_id,
                )

    # --- reads ---------------------------------------------------------------------------------------

    def get(self, session: Session, consent_id: str) -> Consent:
        consent = session.get(Consent, consent_id)
        if consent is None:
            raise NotFound(f"consent {consent_id} does not exist")
        return consent

    def list_consents(
        self,
        session: Session,
        *,
        subject_uscc: str | None = None,
        bank_org_id: str | None = None,
        state: ConsentState | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> list[Consent]:
        query = select(Consent).order_by(Consent.id).limit(limit)
        if subject_uscc is not None:
            query = query.where(Consent.subject_uscc == subject_uscc)
        if bank_org_id is not None:
            query = query.where(Consent.bank_org_id == bank_org_id)
        if state is not None:
            query = query.where(Consent.state == state)
        if after is not None:
            query = query.where(Consent.id > after)
        return list(session.execute(query).scalars())


def _signed_detail(sig: ConsentSignature | None) -> dict[str, Any]:
    """The subject's signature as the ledger entry and the receipt carry it (enough to verify it offline)."""
    if sig is None:
        return {}
    return {
        "subject_signature": {
            "key_id": sig.key_id,
            "text": sig.text,
            "signature": sig.signature,
        }
    }
