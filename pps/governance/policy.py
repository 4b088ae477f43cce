"""The policy engine: the one place that decides access to subjects' data.

``decide(bank, subjects, fields, operation, purpose, now)`` answers, per subject, *allow* (naming the consent
that covers the request) or *deny* with the reason. Every computation calls it twice: at admission and again
right before its result is released — a consent revoked, expired or used up in between stops that subject's
part from being released. Release also spends one use of each consent, atomically: two concurrent jobs
cannot both spend a consent's last use.

Nothing else in the code decides access to subject data; routes and jobs ask this module.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    String,
    any_,
    bindparam,
    func,
    literal_column,
    select,
    type_coerce,
    update,
)
from sqlalchemy.orm import Session

from pps.data.datasets.schema import DatasetSchema
from pps.errors import InvalidInput
from pps.governance.consent import check_purpose
from pps.governance.persons import person_deny_reasons
from pps.governance.products import outside_contract
from pps.governance.signatures import ConsentSignatures
from pps.infra.storage.tables import Consent, ConsentState, Dataset, utcnow
from pps.ledger.entry import Actor, EntryDraft, ObjectRef, Release
from pps.ledger.replay import Quarantine
from pps.ledger.store import Ledger

CONSENTS_TABLE = "consents"

SUBJECTS_PER_ENTRY = 2_000
SPEND_CHUNK = 50_000
"""Consent ids per guarded UPDATE (passed as one JSON or array parameter, see :func:`_id_in`)."""


class DenyReason(StrEnum):
    no_grant = "no_grant"
    not_yet_valid = "not_yet_valid"
    expired = "expired"
    revoked = "revoked"
    denied = "denied"
    pending = "pending"
    operation_not_covered = "operation_not_covered"
    field_not_covered = "field_not_covered"
    uses_exhausted = "uses_exhausted"
    class_c3 = "class_c3"
    record_excluded = "record_excluded"
    """a dishonesty record the computation counted was repaired or expired before release"""
    state_divergent = "state_divergent"
    """the consent's row differs from what the ledger records (``pps audit verify --state``): not acted on"""
    outside_contract = "outside_contract"
    """the purpose is a product whose data contract does not name a field (pps.governance.products)"""
    person_rule = "person_rule"
    """a person's separate consent, warning or impact assessment is missing (pps.governance.persons)"""


# when several consents fail, the one that came closest decides the reason shown
_CLOSENESS = [
    DenyReason.state_divergent,
    DenyReason.uses_exhausted,
    DenyReason.field_not_covered,
    DenyReason.operation_not_covered,
    DenyReason.expired,
    DenyReason.not_yet_valid,
    DenyReason.revoked,
    DenyReason.pending,
    DenyReason.denied,
]


@dataclass(frozen=True)
class Decision:
    subject: str
    allowed: bool
    consent_id: str | None = None
    reason: DenyReason | None = None
    detail: str = ""


@dataclass(frozen=True)
class Request:
    """What a computation asks for: whose data, which fields of which datasets, how, and why.

    ``fields`` maps a dataset id to the non-key fields read. An empty tuple means only the subject's rows'
    existence and keys are read (e.g. how many months it filed tax): any consent whose scope holds that
    dataset covers it; a consent without the dataset does not.
    """

    bank_org_id: str
    subjects: tuple[str, ...]
    fields: Mapping[str, tuple[str, ...]]
    operation: str
    purpose: str


_GRANT_COLUMNS = (
    Consent.id,
    Consent.subject_uscc,
    type_coerce(Consent.state, String).label("state"),
    type_coerce(Consent.valid_from, String).label("valid_from"),
    type_coerce(Consent.valid_until, String).label("valid_until"),
    type_coerce(Consent.revoked_at, String).label("revoked_at"),
    Consent.max_uses,
    Consent.uses,
    Consent.operations_json,
    Consent.scope_json,
    Consent.granularity,
)
"""The columns of a consent the engine needs, read with Core as plain tuples (10^5 of them for a large
portfolio): no ORM objects, no enum or datetime conversion by SQLAlchemy (its SQLite datetime parsing, a
regular expression per value, was half the cost of a decision); :class:`_Checker` does what is needed."""

_ACTIVE, _REVOKED, _DENIED = ConsentState.active.value, ConsentState.revoked.value, ConsentState.denied.value


_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"
"""How SQLAlchemy stores a DateTime in SQLite (always with microseconds): fixed width, so text order is time
order."""


def _time(value: Any) -> datetime:
    """A stored UTC time as an aware datetime: PostgreSQL drivers give datetimes, SQLite gives ISO text."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class _Checker:
    """Checks consent rows against one request at one instant.

    A bank's consents mostly share their terms, so the terms part of the check (the operation and fields
    against the operations and scope documents) is computed once per distinct pair of documents, and each
    distinct stored time is parsed once.
    """

    def __init__(self, req: Request, now: datetime, divergent: frozenset[str] = frozenset()) -> None:
        self.req = req
        self.now = now
        self.divergent = divergent
        self.now_text = now.astimezone(UTC).strftime(_SQLITE_TIME)
        self.terms: dict[tuple[str, str], tuple[DenyReason | None, str]] = {}
        self.times: dict[Any, datetime] = {}

    def time(self, value: Any) -> datetime:
        hit = self.times.get(value)
        if hit is None:
            hit = self.times[value] = _time(value)
        return hit

    def before(self, value: Any) -> bool:
        """``now < value``; SQLite's stored text is compared as text (fixed-width UTC), not parsed."""
        if isinstance(value, str) and len(value) == len(self.now_text):
            return self.now_text < value
        return self.now < self.time(value)

    def _terms(self, operations_json: str, scope_json: str) -> tuple[DenyReason | None, str]:
        key = (operations_json, scope_json)
        hit = self.terms.get(key)
        if hit is not None:
            return hit
        req = self.req
        result: tuple[DenyReason | None, str] = (None, "")
        if req.operation not in set(json.loads(operations_json)):
            result = (DenyReason.operation_not_covered, f"operation {req.operation} is not granted")
        else:
            scope = {i["dataset_id"]: set(i["fields"]) for i in json.loads(scope_json)}
            for dataset_id, fields in req.fields.items():
                if dataset_id not in scope:
                    result = (
                        DenyReason.field_not_covered,
                        f"dataset {dataset_id} is not in the consent's scope",
                    )
                    break
                missing = sorted(set(fields) - scope[dataset_id])
                if missing:
                    result = (DenyReason.field_not_covered, f"{dataset_id}: {', '.join(missing)} not granted")
                    break
        self.terms[key] = result
        return result

    def __call__(self, row: Any) -> tuple[DenyReason | None, str]:
        _id, _subject, state, valid_from, valid_until, revoked_at, max_uses, uses, ops, scope = row[:10]
        if _id in self.divergent:
            return (
                DenyReason.state_divergent,
                "its stored row differs from the ledger; the operator must reconcile it (pps audit verify --state)",
            )
        if state != _ACTIVE:
            if state == _REVOKED:
                when = self.time(revoked_at).isoformat() if revoked_at is not None else "?"
                return DenyReason.revoked, f"revoked at {when}"
            if state == _DENIED:
                return DenyReason.denied, "the subject denied the request"
            return DenyReason.pending, "requested, not yet granted"
        if self.before(valid_from):
            return DenyReason.not_yet_valid, f"valid from {self.time(valid_from).isoformat()}"
        if not self.before(valid_until):
            return DenyReason.expired, f"expired at {self.time(valid_until).isoformat()}"
        reason = self._terms(ops, scope)
        if reason[0] is not None:
            return reason
        if max_uses is not None and uses >= max_uses:
            return DenyReason.uses_exhausted, f"all {max_uses} uses spent"
        return None, ""


def _id_in(session: Session, ids: list[str]) -> ColumnElement[bool]:
    """``consents.id IN ids`` with the ids as *one* parameter (a JSON array read by ``json_each`` on SQLite,
    an array on PostgreSQL): 10^5 ids bind and plan in milliseconds instead of as 10^5 parameters."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        return Consent.id.in_(select(literal_column("value")).select_from(func.json_each(json.dumps(ids))))
    if dialect == "postgresql":
        return Consent.id == any_(bindparam("consent_ids", ids, type_=ARRAY(String)))
    return Consent.id.in_(ids)


class PolicyEngine:
    def __init__(
        self,
        ledger: Ledger,
        quarantine: Quarantine | None = None,
        signatures: ConsentSignatures | None = None,
    ) -> None:
        self.ledger = ledger
        self.quarantine = quarantine or Quarantine()
        """consents whose rows the last reconciliation with the ledger found divergent: never relied on"""
        self.signatures = signatures or ConsentSignatures()
        """a consent without a valid signature by its subject's enrolled key is no consent (``no_grant``)"""

    def _c3_fields(self, session: Session, fields: Mapping[str, Sequence[str]]) -> list[str]:
        c3 = []
        for dataset_id, names in fields.items():
            ds = session.get(Dataset, dataset_id)
            if ds is None or ds.deleted_at is not None:
                raise InvalidInput(f"dataset {dataset_id} does not exist")
            schema = DatasetSchema.model_validate_json(ds.schema_json)
            for name in names:
                try:
                    col = schema.column(name)
                except KeyError:
                    raise InvalidInput(f"dataset {dataset_id} has no field {name!r}") from None
                if col.never_released:
                    c3.append(f"{dataset_id}.{name}")
        return c3

    def decide(self, session: Session, req: Request, *, now: datetime | None = None) -> list[Decision]:
        """Per-subject decisions, in the order of ``req.subjects``. Reads only; spends nothing."""
        now = now or utcnow()
        check_purpose(req.purpose)
        if not req.fields and req.operation not in (
            "psi",
            "train",
        ):  # PSI (also train alignment) reads no field
            raise InvalidInput("a request must name, for every dataset it uses, the fields it uses")
        c3 = self._c3_fields(session, req.fields)
        contract = outside_contract(session, req.purpose, req.fields)
        if contract is not None:
            return [
                Decision(s, False, reason=DenyReason.outside_contract, detail=contract) for s in req.subjects
            ]
        if c3:
            return [
                Decision(
                    s, False, reason=DenyReason.class_c3, detail=f"class C3 never released: {', '.join(c3)}"
                )
                for s in req.subjects
            ]
        wanted = set(req.subjects)
        if len(wanted) != len(req.subjects):
            raise InvalidInput("a request names each subject once")
        by_subject: dict[str, list[Any]] = {}
        rows = (
            session.connection()
            .execute(
                select(*_GRANT_COLUMNS).where(
                    Consent.bank_org_id == req.bank_org_id, Consent.purpose == req.purpose
                )
            )
            .all()
        )
        active = []
        divergent = self.quarantine.rows(CONSENTS_TABLE)
        for row in rows:
            if row[1] in wanted:
                by_subject.setdefault(row[1], []).append(row)
                # a row the ledger does not give is refused as such (state_divergent) by the checker below
                if row[2] == _ACTIVE and row[0] not in divergent:
                    active.append(
                        (
                            row[0],
                            row[1],
                            req.bank_org_id,
                            req.purpose,
                            row[8],
                            row[9],
                            row[3],
                            row[4],
                            row[6],
                            row[10],
                        )
                    )
        unsigned = self.signatures.unsigned_among(session, req.bank_org_id, req.purpose, active)
        check = _Checker(req, now, divergent)
        decisions = []
        for subject in req.subjects:
            candidates = by_subject.get(subject)
            if candidates and unsigned:
                forged = [r for r in candidates if r[0] in unsigned]
                candidates = [r for r in candidates if r[0] not in unsigned]
                if forged and not candidates:
                    decisions.append(
                        Decision(
                            subject,
                            False,
                            reason=DenyReason.no_grant,
                            detail=f"{forged[0][0]} is not consent its subject signed: {unsigned[forged[0][0]]}",
                        )
                    )
                    continue
            if not candidates:
                decisions.append(
                    Decision(
                        subject, False, reason=DenyReason.no_grant, detail=f"no consent for {req.purpose}"
                    )
                )
                continue
            if len(candidates) > 1:  # the one that ends first is used first
                candidates = sorted(candidates, key=lambda r: check.time(r[4]))
            best: tuple[int, DenyReason, str] | None = None
            allowed: str | None = None
            for row in candidates:
                reason, detail = check(row)
                if reason is None:
                    allowed = row[0]
                    break
                rank = _CLOSENESS.index(reason)
                if best is None or rank < best[0]:
                    best = (rank, reason, f"{row[0]}: {detail}")
            if allowed is not None:
                decisions.append(Decision(subject, True, consent_id=allowed))
            else:
                assert best is not None
                decisions.append(Decision(subject, False, reason=best[1], detail=best[2]))
        person_reasons = person_deny_reasons(
            session,
            {d.subject: d.consent_id for d in decisions if d.allowed and d.consent_id},
            req.fields,
            req.purpose,
        )
        if person_reasons:
            decisions = [
                Decision(d.subject, False, reason=DenyReason.person_rule, detail=person_reasons[d.subject])
                if d.subject in person_reasons
                else d
                for d in decisions
            ]
        return decisions

    def candidates(self, session: Session, bank_org_id: str, purpose: str) -> tuple[str, ...]:
        """Every subject with a consent of any state for this bank and purpose, sorted: "all consented" is
        this set, decided subject by subject."""
        return tuple(
            sorted(
                set(
                    session.execute(
                        select(Consent.subject_uscc).where(
                            Consent.bank_org_id == bank_org_id, Consent.purpose == purpose
                        )
                    ).scalars()
                )
            )
        )

    def consented_subjects(
        self, session: Session, *, bank_org_id: str, purpose: str, operation: str, now: datetime | None = None
    ) -> list[Decision]:
        """Every subject whose consent allows ``operation`` for this bank and purpose now (e.g. PSI's set)."""
        req = Request(bank_org_id, self.candidates(session, bank_org_id, purpose), {}, operation, purpose)
        return [d for d in self.decide(session, req, now=now) if d.allowed]

    def record(
        self,
        session: Session,
        action: str,
        req: Request,
        decisions: Iterable[Decision],
        *,
        job: ObjectRef,
        actor: Actor,
        what: str | None = None,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> None:
        """Write decisions to the ledger (for operations that release without spending uses, like PSI)."""
        self._record(
            session,
            action,
            req,
            decisions,
            job=job,
            actor=actor,
            request_id=request_id,
            now=now,
            what=what,
            spends=False,
        )

    def admit(
        self,
        session: Session,
        req: Request,
        *,
        job: ObjectRef,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> list[Decision]:
        """Decide at admission and record the decision (naming the consents) in the ledger."""
        decisions = self.decide(session, req, now=now)
        self._record(
            session,
            "policy.admit",
            req,
            decisions,
            job=job,
            actor=actor,
            request_id=request_id,
            now=now,
            spends=False,
        )
        return decisions

    def release(
        self,
        session: Session,
        req: Request,
        *,
        job: ObjectRef,
        what: str,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
        admitted: Sequence[Decision] | None = None,
        withheld: Mapping[str, str] | None = None,
    ) -> list[Decision]:
        """Decide again right before release and spend one use of each consent relied on, atomically.

        ``withheld`` (subject -> why) names subjects that may not be released whatever their consent says (a
        dishonesty record counted for them was repaired or expired since admission): they are denied with
        ``record_excluded`` and no use of their consent is spent.

        A subject whose consent was revoked, expired or used up since admission is denied here; so is one
        whose last use another job spent first. The ledger records what was released under which consents.

        ``admitted`` (the admission's decisions for these subjects, all allowed) makes the second decision
        cheap for a large batch: a consent's terms cannot change once granted, so the guarded spend of the
        consents admitted — active, still in its window, a use left, re-evaluated under the row lock — *is*
        the decision for every subject it succeeds for; only the subjects it fails for are decided afresh
        (another of their consents may cover them, or the reason is named).
        """
        now = now or utcnow()
        if withheld:
            rest = tuple(s for s in req.subjects if s not in withheld)
            part = (
                self._release_decisions(
                    session,
                    Request(req.bank_org_id, rest, req.fields, req.operation, req.purpose),
                    now,
                    [d for d in admitted if d.subject not in withheld] if admitted is not None else None,
                )
                if rest
                else []
            )
            by = {d.subject: d for d in part}
            final = [
                by.get(s)
                or Decision(
                    s, False, reason=DenyReason.record_excluded, detail=withheld.get(s, "record excluded")
                )
                for s in req.subjects
            ]
        else:
            final = self._release_decisions(session, req, now, admitted)
        self._record(
            session,
            "policy.release",
            req,
            final,
            job=job,
            actor=actor,
            request_id=request_id,
            now=now,
            what=what,
            spends=True,
        )
        return final

    def in_force(
        self, session: Session, admitted: Sequence[Decision], *, now: datetime | None = None
    ) -> list[Decision]:
        """Whether the consents a running computation was admitted under (and already spent a use of) still
        hold: active, inside their window, not quarantined as divergent. Reads only; spends nothing.

        For computations that release as they go (a vertical training hands the bank intermediate values every
        mini-batch): the use was spent when the first value left, so ``uses`` is not checked again — a consent
        whose last use *this* computation took still holds for it. A consent's terms cannot change once granted,
        so the row's state and window, and its subject's signature (a signature or key row found divergent since
        is no signature: ``no_grant``), are all there is to decide again."""
        now = now or utcnow()
        ids = sorted({str(d.consent_id) for d in admitted if d.allowed and d.consent_id})
        found: dict[str, Any] = {}
        for start in range(0, len(ids), SPEND_CHUNK):
            chunk = ids[start : start + SPEND_CHUNK]
            query = select(*_GRANT_COLUMNS, Consent.bank_org_id, Consent.purpose).where(
                _id_in(session, chunk)
            )
            for hit in session.connection().execute(query):
                found[hit[0]] = hit
        divergent = self.quarantine.rows(CONSENTS_TABLE)
        unsigned = self.signatures.unsigned_of(
            session,
            [  # the shape ConsentSignatures judges: id, subject, bank, purpose, terms, window, uses, granularity
                (r[0], r[1], r[11], r[12], r[8], r[9], r[3], r[4], r[6], r[10])
                for r in found.values()
                if r[2] == _ACTIVE and r[0] not in divergent
            ],
        )
        check = _Checker(Request("", (), {}, "", ""), now, divergent)
        out = []
        for d in admitted:
            row: Any = found.get(str(d.consent_id)) if d.allowed else None
            if row is None:
                out.append(
                    d
                    if not d.allowed
                    else Decision(
                        d.subject, False, reason=DenyReason.no_grant, detail=f"{d.consent_id}: gone"
                    )
                )
                continue
            reason, detail = self._holds(check, row)
            if reason is None and row[0] in unsigned:
                reason, detail = DenyReason.no_grant, f"not consent its subject signed: {unsigned[row[0]]}"
            out.append(
                d
                if reason is None
                else Decision(d.subject, False, reason=reason, detail=f"{row[0]}: {detail}")
            )
        return out

    @staticmethod
    def _holds(check: _Checker, row: Any) -> tuple[DenyReason | None, str]:
        """:class:`_Checker` without the terms and the use count (see :meth:`in_force`)."""
        _id, _subject, state, valid_from, valid_until, revoked_at = row[:6]
        if _id in check.divergent:
            return DenyReason.state_divergent, "its stored row differs from the ledger"
        if state != _ACTIVE:
            if state == _REVOKED:
                when = check.time(revoked_at).isoformat() if revoked_at is not None else "?"
                return DenyReason.revoked, f"revoked at {when}"
            return (DenyReason.denied, "denied") if state == _DENIED else (DenyReason.pending, "not granted")
        if check.before(valid_from):
            return DenyReason.not_yet_valid, f"valid from {check.time(valid_from).isoformat()}"
        if not check.before(valid_until):
            return DenyReason.expired, f"expired at {check.time(valid_until).isoformat()}"
        return None, ""

    def confirm(
        self,
        session: Session,
        req: Request,
        *,
        admitted: Sequence[Decision],
        job: ObjectRef,
        what: str,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
        withheld: Mapping[str, str] | None = None,
    ) -> list[Decision]:
        """Decide again right before the final result of a computation whose uses were spent when it first
        released (:meth:`in_force`), and record it as a ``policy.release`` that spends nothing."""
        now = now or utcnow()
        withheld = withheld or {}
        by = {d.subject: d for d in self.in_force(session, admitted, now=now)}
        final = [
            Decision(s, False, reason=DenyReason.record_excluded, detail=withheld[s])
            if s in withheld
            else by.get(s) or Decision(s, False, reason=DenyReason.no_grant, detail="not admitted")
            for s in req.subjects
        ]
        self._record(
            session,
            "policy.release",
            req,
            final,
            job=job,
            actor=actor,
            request_id=request_id,
            now=now,
            what=what,
            spends=False,
        )
        return final

    def _release_decisions(
        self, session: Session, req: Request, now: datetime, admitted: Sequence[Decision] | None
    ) -> list[Decision]:
        if admitted is None:
            decisions = self.decide(session, req, now=now)
            spent = self._spend(session, [d.consent_id for d in decisions if d.allowed and d.consent_id], now)
        else:
            decisions, spent = self._recheck(session, req, admitted, now)
        return [
            d
            if not d.allowed or d.consent_id in spent
            else Decision(
                d.subject, False, reason=DenyReason.uses_exhausted, detail=f"{d.consent_id}: last use taken"
            )
            for d in decisions
        ]

    def _recheck(
        self, session: Session, req: Request, admitted: Sequence[Decision], now: datetime
    ) -> tuple[list[Decision], set[str]]:
        check_purpose(req.purpose)
        by_subject = {d.subject: d for d in admitted}
        if len(by_subject) != len(req.subjects) or any(
            s not in by_subject or not by_subject[s].allowed or not by_subject[s].consent_id
            for s in req.subjects
        ):
            raise ValueError("release(admitted=...) needs one allowed admission decision per subject")
        c3 = self._c3_fields(session, req.fields)  # the datasets must still exist, too
        if c3:
            return self.decide(session, req, now=now), set()
        spent = self._spend(session, [str(by_subject[s].consent_id) for s in req.subjects], now)
        failed = [s for s in req.subjects if by_subject[s].consent_id not in spent]
        again: dict[str, Decision] = {}
        if failed:
            redo = self.decide(
                session,
                Request(req.bank_org_id, tuple(failed), req.fields, req.operation, req.purpose),
                now=now,
            )
            spent |= self._spend(session, [d.consent_id for d in redo if d.allowed and d.consent_id], now)
            again = {d.subject: d for d in redo}
        return [again.get(s, by_subject[s]) for s in req.subjects], spent

    def _spend(self, session: Session, consent_ids: list[str], now: datetime) -> set[str]:
        """Spend one use of each consent that is still usable; returns the ids actually spent.

        One guarded ``UPDATE … RETURNING`` per chunk: the guard (active, in its window, uses left) is
        re-evaluated under the row lock, so concurrent releases never spend more uses than granted.
        """
        spent: set[str] = set()
        divergent = self.quarantine.rows(CONSENTS_TABLE)
        # one lock order for every release: no deadlocks between them; a divergent consent is never spent
        ordered = sorted(set(consent_ids) - divergent)
        for start in range(0, len(ordered), SPEND_CHUNK):
            chunk = ordered[start : start + SPEND_CHUNK]
            result = session.execute(
                update(Consent)
                .where(
                    _id_in(session, chunk),
                    Consent.state == ConsentState.active,
                    Consent.valid_until > now,
                    (Consent.max_uses.is_(None)) | (Consent.uses < Consent.max_uses),
                )
                .values(uses=Consent.uses + 1)
                .returning(Consent.id)
                .execution_options(synchronize_session=False)
            )
            spent.update(result.scalars())
        return spent

    def _record(
        self,
        session: Session,
        action: str,
        req: Request,
        decisions: Iterable[Decision],
        *,
        job: ObjectRef,
        actor: Actor,
        request_id: str | None,
        now: datetime | None,
        what: str | None = None,
        spends: bool,
    ) -> None:
        """``spends``: whether this release spent one use of each consent it names (replay counts uses by it)."""
        decisions = list(decisions)
        drafts = []
        for start in range(0, max(len(decisions), 1), SUBJECTS_PER_ENTRY):
            part = decisions[start : start + SUBJECTS_PER_ENTRY]
            allowed = [d for d in part if d.allowed]
            denied: dict[str, int] = {}
            for d in part:
                if not d.allowed and d.reason is not None:
                    denied[d.reason.value] = denied.get(d.reason.value, 0) + 1
            drafts.append(
                EntryDraft(
                    action=action,
                    actor=actor,
                    objects=(job, *(ObjectRef("dataset", ds) for ds in sorted(req.fields))),
                    subjects=tuple(d.subject for d in part),
                    purpose=req.purpose,
                    consent_ids=tuple(d.consent_id for d in allowed if d.consent_id),
                    released=(Release(to=req.bank_org_id, what=what),) if what and allowed else (),
                    request_id=request_id,
                    detail={
                        "bank": req.bank_org_id,
                        "operation": req.operation,
                        "fields": {k: sorted(v) for k, v in sorted(req.fields.items())},
                        "allowed": len(allowed),
                        "denied": denied,
                        "part": start // SUBJECTS_PER_ENTRY + 1,
                        "parts": max(1, -(-len(decisions) // SUBJECTS_PER_ENTRY)),
                        **({"spends_uses": spends} if action == "policy.release" else {}),
                    },
                )
            )
        self.ledger.append_many(session, drafts, now=now)
