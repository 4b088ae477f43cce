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
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from pps.consent import check_purpose
from pps.datasets.schema import DatasetSchema, Sensitivity
from pps.errors import InvalidInput
from pps.ledger.entry import Actor, EntryDraft, ObjectRef, Release
from pps.ledger.store import Ledger
from pps.storage.tables import Consent, ConsentState, Dataset, utcnow

SUBJECTS_PER_ENTRY = 2_000


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


# when several consents fail, the one that came closest decides the reason shown
_CLOSENESS = [
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
    """What a computation asks for: whose data, which fields of which datasets, how, and why."""

    bank_org_id: str
    subjects: tuple[str, ...]
    fields: Mapping[str, tuple[str, ...]]
    operation: str
    purpose: str


@dataclass(frozen=True)
class _Grant:
    """The columns of a consent the engine needs (read with Core, not the ORM: 10^4 of them per request)."""

    id: str
    subject_uscc: str
    state: ConsentState
    valid_from: datetime
    valid_until: datetime
    revoked_at: datetime | None
    max_uses: int | None
    uses: int
    operations: frozenset[str]
    scope: dict[str, frozenset[str]]


_GRANT_COLUMNS = (
    Consent.id,
    Consent.subject_uscc,
    Consent.state,
    Consent.valid_from,
    Consent.valid_until,
    Consent.revoked_at,
    Consent.max_uses,
    Consent.uses,
    Consent.operations_json,
    Consent.scope_json,
)


def _grant(row: Any) -> _Grant:
    return _Grant(
        id=row.id,
        subject_uscc=row.subject_uscc,
        state=ConsentState(row.state),
        valid_from=row.valid_from,
        valid_until=row.valid_until,
        revoked_at=row.revoked_at,
        max_uses=row.max_uses,
        uses=row.uses,
        operations=frozenset(json.loads(row.operations_json)),
        scope={i["dataset_id"]: frozenset(i["fields"]) for i in json.loads(row.scope_json)},
    )


def _check_one(consent: _Grant, req: Request, now: datetime) -> tuple[DenyReason | None, str]:
    if consent.state is ConsentState.revoked:
        return (
            DenyReason.revoked,
            f"revoked at {consent.revoked_at.isoformat() if consent.revoked_at else '?'}",
        )
    if consent.state is ConsentState.denied:
        return DenyReason.denied, "the subject denied the request"
    if consent.state is ConsentState.requested:
        return DenyReason.pending, "requested, not yet granted"
    if now < consent.valid_from:
        return DenyReason.not_yet_valid, f"valid from {consent.valid_from.isoformat()}"
    if now >= consent.valid_until:
        return DenyReason.expired, f"expired at {consent.valid_until.isoformat()}"
    if req.operation not in consent.operations:
        return DenyReason.operation_not_covered, f"operation {req.operation} is not granted"
    for dataset_id, fields in req.fields.items():
        if dataset_id not in consent.scope:
            return DenyReason.field_not_covered, f"dataset {dataset_id} is not in the consent's scope"
        missing = sorted(set(fields) - consent.scope[dataset_id])
        if missing:
            return DenyReason.field_not_covered, f"{dataset_id}: {', '.join(missing)} not granted"
    if consent.max_uses is not None and consent.uses >= consent.max_uses:
        return DenyReason.uses_exhausted, f"all {consent.max_uses} uses spent"
    return None, ""


class PolicyEngine:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

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
                if col.sensitivity is Sensitivity.C3:
                    c3.append(f"{dataset_id}.{name}")
        return c3

    def decide(self, session: Session, req: Request, *, now: datetime | None = None) -> list[Decision]:
        """Per-subject decisions, in the order of ``req.subjects``. Reads only; spends nothing."""
        now = now or utcnow()
        check_purpose(req.purpose)
        if any(not fields for fields in req.fields.values()) or (not req.fields and req.operation != "psi"):
            raise InvalidInput("a request must name, for every dataset it uses, the fields it uses")
        c3 = self._c3_fields(session, req.fields)
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
        by_subject: dict[str, list[_Grant]] = {}
        rows = session.execute(
            select(*_GRANT_COLUMNS).where(
                Consent.bank_org_id == req.bank_org_id, Consent.purpose == req.purpose
            )
        )
        for row in rows:
            if row.subject_uscc in wanted:
                by_subject.setdefault(row.subject_uscc, []).append(_grant(row))
        decisions = []
        for subject in req.subjects:
            candidates = by_subject.get(subject, [])
            best: tuple[int, DenyReason, str] | None = None
            allowed: _Grant | None = None
            for consent in sorted(candidates, key=lambda c: c.valid_until):
                reason, detail = _check_one(consent, req, now)
                if reason is None:
                    allowed = consent
                    break
                rank = _CLOSENESS.index(reason)
                if best is None or rank < best[0]:
                    best = (rank, reason, f"{consent.id}: {detail}")
            if allowed is not None:
                decisions.append(Decision(subject, True, consent_id=allowed.id))
            elif best is not None:
                decisions.append(Decision(subject, False, reason=best[1], detail=best[2]))
            else:
                decisions.append(
                    Decision(
                        subject, False, reason=DenyReason.no_grant, detail=f"no consent for {req.purpose}"
                    )
                )
        return decisions

    def consented_subjects(
        self, session: Session, *, bank_org_id: str, purpose: str, operation: str, now: datetime | None = None
    ) -> list[Decision]:
        """Every subject whose consent allows ``operation`` for this bank and purpose now (e.g. PSI's set)."""
        candidates = sorted(
            set(
                session.execute(
                    select(Consent.subject_uscc).where(
                        Consent.bank_org_id == bank_org_id, Consent.purpose == purpose
                    )
                ).scalars()
            )
        )
        req = Request(bank_org_id, tuple(candidates), {}, operation, purpose)
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
            session, action, req, decisions, job=job, actor=actor, request_id=request_id, now=now, what=what
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
            session, "policy.admit", req, decisions, job=job, actor=actor, request_id=request_id, now=now
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
    ) -> list[Decision]:
        """Decide again right before release and spend one use of each consent relied on, atomically.

        A subject whose consent was revoked, expired or used up since admission is denied here; so is one
        whose last use another job spent first. The ledger records what was released under which consents.
        """
        now = now or utcnow()
        decisions = self.decide(session, req, now=now)
        spent = self._spend(session, [d.consent_id for d in decisions if d.allowed and d.consent_id], now)
        final = [
            d
            if not d.allowed or d.consent_id in spent
            else Decision(
                d.subject, False, reason=DenyReason.uses_exhausted, detail=f"{d.consent_id}: last use taken"
            )
            for d in decisions
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
        )
        return final

    def _spend(self, session: Session, consent_ids: list[str], now: datetime) -> set[str]:
        """Spend one use of each consent that is still usable; returns the ids actually spent.

        One guarded ``UPDATE … RETURNING`` per chunk: the guard (active, in its window, uses left) is
        re-evaluated under the row lock, so concurrent releases never spend more uses than granted.
        """
        spent: set[str] = set()
        ordered = sorted(set(consent_ids))  # one lock order for every release: no deadlocks between them
        for start in range(0, len(ordered), 500):
            chunk = ordered[start : start + 500]
            result = session.execute(
                update(Consent)
                .where(
                    Consent.id.in_(chunk),
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
    ) -> None:
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
                    },
                )
            )
        self.ledger.append_many(session, drafts, now=now)
