"""Reads of protected data, recorded in the ledger ("去向可查" holds for reads too).

Two ways, by how hot the read is:

* **In the request's transaction** (:meth:`ReadLog.record`): a bank fetching its job result, a provider or an
  overseer reading an objection (with the enterprise's decrypted reason), a consent receipt fetched, a consent
  read by someone other than its subject, a dataset's lineage. No entry, no answer: the response is sent only
  after the entry commits. The subjects concerned are named, so each read shows in the subject's own access
  history (``GET /v1/audit/mine``).
* **Batched** (:meth:`ReadLog.note`): reads an overseer makes page after page — admins and auditors listing
  consents or objections, auditors paging through the ledger. Each read is noted in memory and the notes are
  written as one ``read.batch`` entry per (organisation, token, kind of read) when :meth:`ReadLog.flush` runs:
  every few seconds (``PPS_READ_FLUSH_SECONDS``), when ``max_pending`` reads are waiting, and at shutdown.
  The entry counts the reads, names their first and last time, the request ids (the first 100) and every
  subject and object they showed. A crash can lose at most the reads of the last interval; those reads showed
  metadata to an overseer, never records.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from pps.infra.storage.db import Database
from pps.infra.storage.tables import utcnow
from pps.ledger.entry import Actor, EntryDraft, ObjectRef, format_time
from pps.ledger.store import Ledger

SUBJECTS_PER_ENTRY = 2_000
"""subjects named per entry of one read (as the policy engine's release entries)"""
MAX_REQUEST_IDS = 100
MAX_OBJECTS = 500
"""objects named per batch entry (the count of reads is always exact); subjects are all named"""


@dataclass
class _Pending:
    actor: Actor
    action: str
    reads: int = 0
    first: datetime | None = None
    last: datetime | None = None
    request_ids: list[str] = field(default_factory=list)
    objects: dict[tuple[str, str], None] = field(default_factory=dict)
    subjects: set[str] = field(default_factory=set)
    objects_left_out: int = 0


class ReadLog:
    def __init__(self, ledger: Ledger, db: Database, *, max_pending: int = 1000) -> None:
        self.ledger = ledger
        self.db = db
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._pending: dict[tuple[str | None, str | None, str, str], _Pending] = {}
        self._count = 0

    def record(
        self,
        session: Session,
        *,
        actor: Actor,
        action: str,
        objects: Iterable[ObjectRef] = (),
        subjects: Iterable[str] = (),
        request_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """One read, in the caller's (write) transaction: one entry, or one per ``SUBJECTS_PER_ENTRY`` subjects
        (a large batch's result read names every subject, as its release did)."""
        named = sorted(set(subjects))
        parts = max(1, -(-len(named) // SUBJECTS_PER_ENTRY))
        self.ledger.append_many(
            session,
            [
                EntryDraft(
                    action=action,
                    actor=actor,
                    objects=tuple(objects),
                    subjects=tuple(named[i * SUBJECTS_PER_ENTRY : (i + 1) * SUBJECTS_PER_ENTRY]),
                    request_id=request_id,
                    detail={**(detail or {}), **({"part": i + 1, "parts": parts} if parts > 1 else {})},
                )
                for i in range(parts)
            ],
        )

    def note(
        self,
        *,
        actor: Actor,
        what: str,
        objects: Iterable[ObjectRef] = (),
        subjects: Iterable[str] = (),
        request_id: str | None = None,
    ) -> None:
        """One hot read, written with others of its kind by the next :meth:`flush`."""
        now = utcnow()
        with self._lock:
            key = (actor.org_id, actor.token_id, actor.via, what)
            p = self._pending.get(key)
            if p is None:
                p = self._pending[key] = _Pending(actor, what)
            p.reads += 1
            p.first = p.first or now
            p.last = now
            if request_id and len(p.request_ids) < MAX_REQUEST_IDS:
                p.request_ids.append(request_id)
            for o in objects:
                if len(p.objects) < MAX_OBJECTS:
                    p.objects[(o.kind, o.id)] = None
                elif (o.kind, o.id) not in p.objects:
                    p.objects_left_out += 1
            p.subjects.update(subjects)
            self._count += 1
            full = self._count >= self.max_pending
        if full:
            self.flush()

    @property
    def pending(self) -> int:
        return self._count

    def flush(self) -> int:
        """Write the waiting reads (one entry per kind of read and reader); returns how many reads."""
        with self._lock:
            pending, self._pending, count, self._count = self._pending, {}, self._count, 0
        if not pending:
            return 0
        drafts = [
            EntryDraft(
                action="read.batch",
                actor=p.actor,
                objects=tuple(ObjectRef(kind, id_) for kind, id_ in p.objects),
                subjects=tuple(sorted(p.subjects)),
                detail={
                    "what": p.action,
                    "reads": p.reads,
                    "first": format_time(p.first or utcnow()),
                    "last": format_time(p.last or utcnow()),
                    "request_ids": p.request_ids,
                    "objects_left_out": p.objects_left_out,
                },
            )
            for p in pending.values()
        ]
        try:
            with self.db.transaction() as session:
                self.ledger.append_many(session, drafts)
        except Exception:
            with self._lock:  # not lost: merged back for the next flush
                for key, p in pending.items():
                    mine = self._pending.get(key)
                    if mine is None:
                        self._pending[key] = p
                    else:
                        mine.reads += p.reads
                        mine.first = min(x for x in (mine.first, p.first) if x is not None)
                        mine.subjects |= p.subjects
                        mine.objects.update(p.objects)
                self._count += count
            raise
        return count
