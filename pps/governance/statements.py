"""A subject's statement on a negative record (个人声明; 《征信业管理条例》 Art. 16 and 25).

An enterprise may attach a short statement to one of its own *negative* records — a dishonesty record (the
``penalties`` source) or a court case (``court``) — explaining it in its own words. The statement is kept and
shown with the record: every scoring result that read the record's dataset for that subject carries it in its
header (``statements``), with the record's key when the key is public (class C1; a court case number, C3, is
never shown). The subject may replace or withdraw it; each is a ledger entry (``statement.add``,
``statement.withdraw``). The text is the subject's own and meant for the banks it gets results about it:
it is stored in the clear, and the ledger holds its hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from pps.data.datasets.schema import DatasetSchema, Sensitivity
from pps.data.datasets.service import DatasetService
from pps.errors import InvalidInput, NotFound
from pps.infra.storage.tables import Dataset, Organization, RecordStatement, Role, new_id, utcnow
from pps.ledger.entry import Actor, EntryDraft, ObjectRef
from pps.ledger.store import Ledger

NEGATIVE_SOURCES: Final = ("penalties", "court")
"""Datasets (by source name) whose records are negative information a statement may be attached to."""
MAX_TEXT: Final = 500


class StatementService:
    def __init__(self, ledger: Ledger, datasets: DatasetService) -> None:
        self.ledger = ledger
        self.datasets = datasets

    def add(
        self,
        session: Session,
        *,
        subject: Organization,
        dataset_id: str,
        record_key: str,
        text: str,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> RecordStatement:
        """Attach (or replace) the subject's statement on one of its negative records."""
        if subject.role is not Role.subject or subject.uscc is None:
            raise InvalidInput("only an enterprise (a subject organisation) adds statements to its records")
        text = text.strip() if isinstance(text, str) else ""
        if not text or len(text) > MAX_TEXT:
            raise InvalidInput(f"a statement has 1 to {MAX_TEXT} characters")
        if not isinstance(record_key, str) or not 0 < len(record_key) <= 200:
            raise InvalidInput("record_key must have 1 to 200 characters")
        not_found = NotFound(f"you have no such record in dataset {dataset_id}")
        ds = session.get(Dataset, dataset_id)
        if ds is None or ds.deleted_at is not None:
            raise not_found
        if ds.name not in NEGATIVE_SOURCES:
            raise InvalidInput(
                f"a statement is attached to negative information ({', '.join(NEGATIVE_SOURCES)} records); "
                f"dataset {dataset_id} is {ds.name!r} — dispute a wrong value with an objection instead"
            )
        version = self.datasets.current(session, ds)
        if version is None or version.wrapped_dek is None:
            raise not_found
        if self.datasets.locate(session, version, subject.uscc, record_key) is None:
            raise not_found
        now = now or utcnow()
        row = session.execute(
            select(RecordStatement).where(
                RecordStatement.subject_uscc == subject.uscc,
                RecordStatement.dataset_id == ds.id,
                RecordStatement.record_key == record_key,
            )
        ).scalar_one_or_none()
        replaced = row is not None and row.withdrawn_at is None
        if row is None:
            row = RecordStatement(
                id=new_id("stm"),
                subject_uscc=subject.uscc,
                dataset_id=ds.id,
                record_key=record_key,
                text=text,
                created_at=now,
            )
            session.add(row)
        else:
            row.text, row.created_at, row.withdrawn_at = text, now, None
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="statement.add",
                actor=actor,
                objects=(ObjectRef("statement", row.id), ObjectRef("dataset", ds.id)),
                subjects=(subject.uscc,),
                request_id=request_id,
                detail={"replaced": replaced, "text_sha256": hashlib.sha256(text.encode()).hexdigest()},
            ),
            now=now,
        )
        return row

    def withdraw(
        self, session: Session, row: RecordStatement, *, actor: Actor, request_id: str | None = None
    ) -> RecordStatement:
        if row.withdrawn_at is not None:
            raise NotFound(f"statement {row.id} does not exist")
        row.withdrawn_at = utcnow()
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="statement.withdraw",
                actor=actor,
                objects=(ObjectRef("statement", row.id), ObjectRef("dataset", row.dataset_id)),
                subjects=(row.subject_uscc,),
                request_id=request_id,
            ),
        )
        return row

    def mine(self, session: Session, uscc: str) -> list[RecordStatement]:
        return list(
            session.execute(
                select(RecordStatement)
                .where(RecordStatement.subject_uscc == uscc, RecordStatement.withdrawn_at.is_(None))
                .order_by(RecordStatement.id)
            ).scalars()
        )


def statements_for(
    session: Session, subjects: Iterable[str], fields: Mapping[str, Sequence[str]]
) -> list[dict[str, Any]]:
    """The statements a result about ``subjects`` computed from ``fields`` (dataset id -> fields) carries:
    ``[{subject, dataset, record, text}]`` (``record`` None where the record key is not public)."""
    wanted = set(subjects)
    if not wanted or not fields:
        return []
    rows = session.execute(
        select(RecordStatement).where(
            RecordStatement.dataset_id.in_(sorted(fields)), RecordStatement.withdrawn_at.is_(None)
        )
    ).scalars()
    public_key: dict[str, bool] = {}
    out = []
    for r in rows:
        if r.subject_uscc not in wanted:
            continue
        if r.dataset_id not in public_key:
            ds = session.get(Dataset, r.dataset_id)
            schema = DatasetSchema.model_validate_json(ds.schema_json) if ds else None
            key = (schema.period_key or schema.record_key) if schema else None
            public_key[r.dataset_id] = (
                bool(key)
                and schema is not None
                and (
                    schema.column(key).sensitivity is Sensitivity.C1  # type: ignore[arg-type]
                )
            )
        out.append(
            {
                "subject": r.subject_uscc,
                "dataset": r.dataset_id,
                "record": r.record_key if public_key[r.dataset_id] else None,
                "text": r.text,
            }
        )
    return sorted(out, key=lambda d: (d["subject"], d["dataset"], d["record"] or ""))
