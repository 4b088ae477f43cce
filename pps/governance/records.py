"""Dishonesty records (失信信息) as provider data, and when a record may no longer be used.

A record is a row of the ``penalties`` source (:mod:`pps.data.sources`), uploaded by its provider (the public
credit centre, which also acts as the designated authority for credit repair): an administrative penalty, a
listing in the abnormal-operation list or in the serious-dishonesty list, with its issuing authority, decision
date, grade, minimum and maximum publicity periods, and obligations (a fine and its payment, tax arrears). The
record is **true**; disputing a wrong value is an objection (:mod:`pps.governance.objections`), not a repair.

A record stops being used — by features, scores, aggregates, trainings, enclave jobs and reports alike — when
(:func:`status`):

* ``repaired``: an approved credit repair (:mod:`pps.governance.repair`; NDRC 《信用修复管理办法》 2025);
* ``expired``: its maximum publicity period is over (the same measures: publicity, and with it sharing and use,
  ends automatically at the maximum period — minor 3 months, general 1 year, serious 3 years);
* ``retention_ended``: five years after the conduct ended (《征信业管理条例》 Art. 16: negative information is
  kept five years from the end of the conduct, then deleted — here: never used again).

Repairs are rows of :class:`~pps.infra.storage.tables.RecordExclusion`; the two periods are computed from the
record's dates at the moment of use, so no sweep is needed for them to take effect. :meth:`RecordBook.sweep`
writes them down as well (a ``record.expire`` ledger entry each), so that the subject and auditors see when a
record stopped counting. Every computation is decided again at release (:class:`pps.governance.release.Gate`):
a subject whose counted record became unusable between admission and release is held back, like a revoked
consent.

Who learns what: the subject sees its own records and their status; the provider (authority) holds them; a
bank never sees a record — only features computed from the usable ones, and a repair notice naming the result
and the record id when a record it was released a result with is repaired.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from pps.data.datasets.schema import DatasetSchema
from pps.data.datasets.service import DatasetService
from pps.data.sources import SourceBinding, bind_sources
from pps.errors import InvalidInput
from pps.infra.storage.tables import DatasetVersion, RecordExclusion, utcnow
from pps.ledger.entry import Actor, EntryDraft, ObjectRef, format_time
from pps.ledger.store import Ledger

SOURCE: Final = "penalties"
"""The source name of the dishonesty records."""
RETENTION_YEARS: Final = 5
KINDS: Final = ("administrative_penalty", "abnormal_operation", "serious_dishonesty")
GRADES: Final = ("minor", "general", "serious")
PUBLICITY_MONTHS: Final[dict[str, tuple[int, int]]] = {
    "minor": (0, 3),
    "general": (3, 12),
    "serious": (12, 36),
}
"""Grade -> (minimum, maximum) publicity months (NDRC 信用修复管理办法 2025)."""
COLUMNS: Final = (
    "uscc",
    "record_id",
    "kind",
    "authority",
    "decided_on",
    "conduct_ended_on",
    "grade",
    "min_publicity_months",
    "max_publicity_months",
    "fine_amount",
    "fine_paid_on",
    "tax_arrears",
)
REASONS: Final = ("repaired", "expired", "retention_ended")


def add_months(day: dt.date, months: int) -> dt.date:
    """``day`` plus whole calendar months (the last day of a shorter month where needed)."""
    m = day.month - 1 + months
    year, month = day.year + m // 12, m % 12 + 1
    for d in (day.day, 30, 29, 28):
        try:
            return dt.date(year, month, d)
        except ValueError:
            continue
    raise ValueError(day)  # pragma: no cover


@dataclass(frozen=True)
class DishonestyRecord:
    uscc: str
    record_id: str
    kind: str
    authority: str
    decided_on: dt.date
    conduct_ended_on: dt.date
    grade: str
    min_months: int
    max_months: int
    fine_amount: float | None
    fine_paid_on: dt.date | None
    tax_arrears: float | None

    @property
    def eligible_from(self) -> dt.date:
        """The first day a repair may be applied for (the minimum publicity period served)."""
        return add_months(self.decided_on, self.min_months)

    @property
    def publicity_ends(self) -> dt.date:
        """The day publicity and use end by themselves (the maximum publicity period)."""
        return add_months(self.decided_on, self.max_months)

    @property
    def retention_ends(self) -> dt.date:
        return add_months(self.conduct_ended_on, 12 * RETENTION_YEARS)

    def as_dict(self) -> dict[str, Any]:
        return {
            "record_id": self.record_id,
            "kind": self.kind,
            "authority": self.authority,
            "decided_on": self.decided_on.isoformat(),
            "conduct_ended_on": self.conduct_ended_on.isoformat(),
            "grade": self.grade,
            "min_publicity_months": self.min_months,
            "max_publicity_months": self.max_months,
            "eligible_from": self.eligible_from.isoformat(),
            "publicity_ends": self.publicity_ends.isoformat(),
            "retention_ends": self.retention_ends.isoformat(),
            "fine_amount": self.fine_amount,
            "fine_paid_on": self.fine_paid_on.isoformat() if self.fine_paid_on else None,
            "tax_arrears": self.tax_arrears,
        }


def status(record: DishonestyRecord, excluded: Mapping[str, str], today: dt.date) -> str:
    """``in_use``, or why the record is no longer used: ``repaired``, ``expired``, ``retention_ended``."""
    reason = excluded.get(record.record_id)
    if reason is not None:
        return reason
    if today >= record.retention_ends:
        return "retention_ended"
    if today >= record.publicity_ends:
        return "expired"
    return "in_use"


@dataclass(frozen=True)
class Counted:
    """A record a computation counted for a subject, and when it would stop counting by itself."""

    dataset_id: str
    record_id: str
    ends: dt.date
    """the earlier of the end of publicity and of retention"""


def _date(value: Any) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            return None
        return dt.date.fromisoformat(str(value.astype("datetime64[D]")))
    text = str(value)
    return dt.date.fromisoformat(text[:10]) if text else None


def _float(value: Any) -> float | None:
    if value is None:
        return None
    f = float(value)
    return None if np.isnan(f) else f


class RecordBook:
    """Reads the records of the bound ``penalties`` source and knows which are still usable."""

    def __init__(self, datasets: DatasetService, ledger: Ledger | None = None) -> None:
        self.datasets = datasets
        self.ledger = ledger

    def bound(self, session: Session, binding: SourceBinding | None = None) -> tuple[str, int] | None:
        """``(dataset id, version)`` of the records source, or None when there is none."""
        binding = binding or bind_sources(session, (SOURCE,))
        b = binding.bound.get(SOURCE)
        return (b.dataset_id, b.version) if b is not None else None

    def read(self, session: Session, binding: SourceBinding | None = None) -> list[DishonestyRecord]:
        """Every record of the bound version (all, usable or not)."""
        where = self.bound(session, binding)
        if where is None:
            return []
        version = session.get(DatasetVersion, where)
        if version is None:  # pragma: no cover - bound a moment ago
            return []
        schema = DatasetSchema.model_validate_json(version.schema_json)
        have = {c.name for c in schema.columns}
        missing = sorted({"uscc", "record_id", "kind", "decided_on", "grade"} - have)
        if missing:
            raise InvalidInput(
                f"dataset {version.dataset_id} ({SOURCE}) lacks {', '.join(missing)}; its provider must upload "
                "the dishonesty-record schema (see models.synth)"
            )
        cols = self.datasets.read_columns(session, version, [c for c in COLUMNS if c in have])

        def cell(name: str, i: int) -> Any:
            col = cols.get(name)
            if col is None or not col.valid[i]:
                return None
            return col.values[i]

        out = []
        for i in range(version.row_count):
            decided = _date(cell("decided_on", i))
            grade = str(cell("grade", i) or "general")
            lo, hi = PUBLICITY_MONTHS.get(grade, (3, 12))
            if decided is None:
                continue
            min_m, max_m = cell("min_publicity_months", i), cell("max_publicity_months", i)
            out.append(
                DishonestyRecord(
                    uscc=str(cell("uscc", i)),
                    record_id=str(cell("record_id", i)),
                    kind=str(cell("kind", i) or ""),
                    authority=str(cell("authority", i) or ""),
                    decided_on=decided,
                    conduct_ended_on=_date(cell("conduct_ended_on", i)) or decided,
                    grade=grade,
                    min_months=int(min_m) if min_m is not None else lo,
                    # a provider may publish for less than the grade's maximum, never for more
                    max_months=min(int(max_m), hi) if max_m is not None else hi,
                    fine_amount=_float(cell("fine_amount", i)),
                    fine_paid_on=_date(cell("fine_paid_on", i)),
                    tax_arrears=_float(cell("tax_arrears", i)),
                )
            )
        return out

    def of_subject(self, session: Session, uscc: str) -> list[DishonestyRecord]:
        return [r for r in self.read(session) if r.uscc == uscc]

    def find(self, session: Session, uscc: str, record_id: str) -> DishonestyRecord | None:
        for r in self.of_subject(session, uscc):
            if r.record_id == record_id:
                return r
        return None

    @staticmethod
    def excluded(session: Session, dataset_id: str, subjects: Iterable[str] | None = None) -> dict[str, str]:
        """record id -> why it is excluded (``repaired``, ...), as written down so far."""
        query = select(RecordExclusion.record_id, RecordExclusion.reason).where(
            RecordExclusion.dataset_id == dataset_id
        )
        if subjects is not None:
            query = query.where(RecordExclusion.subject_uscc.in_(sorted(set(subjects))))
        return dict(session.execute(query).all())

    def usable(
        self, session: Session, records: Sequence[DishonestyRecord], dataset_id: str, today: dt.date
    ) -> list[DishonestyRecord]:
        excluded = self.excluded(session, dataset_id)
        return [r for r in records if status(r, excluded, today) == "in_use"]

    @staticmethod
    def withheld(
        session: Session,
        counted: Mapping[str, Sequence[Counted]],
        subjects: Iterable[str],
        now: dt.datetime | None = None,
    ) -> dict[str, str]:
        """Of ``subjects``, those a computation counted a record of that is no longer usable now: subject ->
        why (for the release decision, :class:`pps.governance.release.Gate`)."""
        today = (now or utcnow()).date()
        mine = {s: counted[s] for s in subjects if counted.get(s)}
        if not mine:
            return {}
        by_dataset: dict[str, set[str]] = {}
        for recs in mine.values():
            for c in recs:
                by_dataset.setdefault(c.dataset_id, set())
        excluded = {d: RecordBook.excluded(session, d, mine) for d in by_dataset}
        out: dict[str, str] = {}
        for subject, recs in mine.items():
            for c in recs:
                why = excluded[c.dataset_id].get(c.record_id) or ("expired" if today >= c.ends else None)
                if why is not None:
                    out[subject] = (
                        f"dishonesty record {c.record_id} is no longer usable ({why}); compute again"
                    )
                    break
        return out

    def sweep(self, session: Session, *, actor: Actor, now: dt.datetime | None = None) -> dict[str, int]:
        """Write down every record whose maximum publicity or retention period has ended (one
        ``record.expire`` ledger entry per record); returns counts by reason. Idempotent."""
        now = now or utcnow()
        where = self.bound(session)
        if where is None or self.ledger is None:
            return {}
        dataset_id = where[0]
        excluded = self.excluded(session, dataset_id)
        counts: dict[str, int] = {}
        drafts = []
        for r in self.read(session):
            if r.record_id in excluded:
                continue
            why = status(r, excluded, now.date())
            if why == "in_use":
                continue
            session.add(
                RecordExclusion(
                    dataset_id=dataset_id,
                    record_id=r.record_id,
                    subject_uscc=r.uscc,
                    reason=why,
                    repair_id=None,
                    excluded_at=now,
                )
            )
            excluded[r.record_id] = why
            counts[why] = counts.get(why, 0) + 1
            drafts.append(
                EntryDraft(
                    action="record.expire",
                    actor=actor,
                    objects=(ObjectRef("dataset", dataset_id), ObjectRef("record", r.record_id[:200])),
                    subjects=(r.uscc,),
                    detail={
                        "reason": why,
                        "grade": r.grade,
                        "publicity_ends": r.publicity_ends.isoformat(),
                        "retention_ends": r.retention_ends.isoformat(),
                        "at": format_time(now),
                    },
                )
            )
        session.flush()
        if drafts:
            self.ledger.append_many(session, drafts, now=now)
        return counts
