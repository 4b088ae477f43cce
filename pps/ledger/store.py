"""The audit ledger on the database: appends, proofs, checkpoints, queries.

Append-only: entries are written with dense indices under a lock on the single ``ledger_head`` row
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite write transactions hold the database lock from their
``BEGIN IMMEDIATE``). Each append stores the new leaf hash and every perfect subtree it completes, reading only
the O(log n) roots of the current perfect subtrees (the *frontier*). Roots, inclusion proofs and consistency
proofs read O(log n) stored nodes in one query; nothing ever rebuilds the whole tree, except
:func:`pps.ledger.verify.verify_ledger`, whose job that is.

Fail closed: :meth:`Ledger.append` runs in the caller's transaction, so the access it records and the entry
commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Connection, Table, and_, bindparam, func, or_, select
from sqlalchemy.orm import Session

from pps.errors import InvalidProofRequest, KeyUnavailable, LedgerIntegrityError, NotFound
from pps.infra import faults
from pps.infra.storage.tables import (
    LedgerCheckpoint,
    LedgerEntry,
    LedgerEntryObject,
    LedgerEntrySubject,
    LedgerHead,
    LedgerNode,
    utcnow,
)
from pps.ledger.entry import EntryDraft, canonical_bytes, entry_document
from pps_wire import merkle
from pps_wire.checkpoint import Checkpoint, NoteSigner, NoteVerifier

HEAD_ID = 1
_NODE_CHUNK = 100  # (level, index) pairs per query
_HEAD = cast(Table, LedgerHead.__table__)
_ENTRIES = cast(Table, LedgerEntry.__table__)
_SUBJECTS = cast(Table, LedgerEntrySubject.__table__)
_OBJECTS = cast(Table, LedgerEntryObject.__table__)
_NODES = cast(Table, LedgerNode.__table__)


OPERATOR_ACTIONS_SEEN = ("break_glass.propose", "break_glass.do", "operator.refused")
"""Operator actions on an organisation that it sees in its own history at once, whoever made them."""


def _involving(org_id: str, uscc: str | None) -> ColumnElement[bool]:
    by_actor = LedgerEntry.actor_org_id == org_id
    on_it = and_(
        LedgerEntry.action.in_(OPERATOR_ACTIONS_SEEN),
        select(LedgerEntryObject.idx)
        .where(
            LedgerEntryObject.idx == LedgerEntry.idx,
            LedgerEntryObject.kind == "org",
            LedgerEntryObject.object_id == org_id,
        )
        .exists(),
    )
    if uscc is None:
        return or_(by_actor, on_it)
    touching = (
        select(LedgerEntrySubject.idx)
        .where(LedgerEntrySubject.idx == LedgerEntry.idx, LedgerEntrySubject.uscc == uscc)
        .exists()
    )
    return or_(by_actor, touching, on_it)


_LOCK_HEAD = select(_HEAD.c.size, _HEAD.c.frontier).where(_HEAD.c.id == HEAD_ID).with_for_update()
_ADVANCE_HEAD = (
    _HEAD.update()
    .where(_HEAD.c.id == HEAD_ID)
    .values(size=bindparam("new_size"), frontier=bindparam("new_frontier"))
)
_INSERT_ENTRIES = _ENTRIES.insert()
_INSERT_SUBJECTS = _SUBJECTS.insert()
_INSERT_OBJECTS = _OBJECTS.insert()
_INSERT_NODES = _NODES.insert()


_SUBJECT_INSERT_SQL = {
    "qmark": "INSERT INTO ledger_entry_subjects (uscc, idx) VALUES (?, ?)",
    "format": "INSERT INTO ledger_entry_subjects (uscc, idx) VALUES (%s, %s)",
    "pyformat": "INSERT INTO ledger_entry_subjects (uscc, idx) VALUES (%s, %s)",
}


def _insert_subject_rows(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """The subject index of a batch (10^5 rows for a large portfolio's two entries): as the driver's own
    ``executemany`` over tuples, without SQLAlchemy compiling parameters per row (about a third of the time)."""
    sql = _SUBJECT_INSERT_SQL.get(conn.dialect.paramstyle)
    if sql is None:  # pragma: no cover - the supported drivers are covered above
        conn.execute(_INSERT_SUBJECTS, rows)
        return
    conn.exec_driver_sql(sql, [(r["uscc"], r["idx"]) for r in rows])


def _split_frontier(size: int, blob: bytes) -> list[bytes]:
    count = len(merkle.perfect_subtrees(0, size))
    if len(blob) != count * merkle.HASH_SIZE:
        raise LedgerIntegrityError(
            f"the ledger head's frontier holds {len(blob)} bytes, expected {count} hashes for size {size}"
        )
    return [blob[i : i + merkle.HASH_SIZE] for i in range(0, len(blob), merkle.HASH_SIZE)]


@dataclass(frozen=True)
class AppendedEntry:
    index: int
    leaf_hash: bytes
    entry: bytes


@dataclass(frozen=True)
class StoredEntry:
    index: int
    entry: bytes
    leaf_hash: bytes


@dataclass(frozen=True)
class EntryFilter:
    """Entry filters; all given conditions must hold.

    ``involving`` is ``(org id, USCC or None)``: entries the organisation made, or that touch the USCC
    (what an organisation may read of the ledger).
    """

    involving: tuple[str, str | None] | None = None
    object: tuple[str, str] | None = None
    """``(kind, id)``: entries that name this object (e.g. ``("dataset", "ds_...")`` for lineage)"""
    actor_org_id: str | None = None
    action: str | None = None
    subject: str | None = None
    purpose: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class Ledger:
    """The ledger of one safe-room: its origin (log name) and checkpoint signer.

    ``signer=None`` opens the ledger to be read and verified only (``pps audit verify`` on a restored copy
    without its key directory): publishing a checkpoint then raises :class:`~pps.errors.KeyUnavailable`.
    """

    def __init__(self, signer: NoteSigner | None, origin: str) -> None:
        self._signer = signer
        self.origin = origin

    @property
    def signer(self) -> NoteSigner:
        if self._signer is None:
            raise KeyUnavailable(
                "this ledger was opened to be read only: the checkpoint signing key was not loaded"
            )
        return self._signer

    @property
    def can_sign(self) -> bool:
        return self._signer is not None

    @property
    def verifier(self) -> NoteVerifier:
        return NoteVerifier.from_string(self.signer.verifier_key)

    # --- appends -------------------------------------------------------------------------------------

    def append(self, session: Session, draft: EntryDraft, *, now: datetime | None = None) -> AppendedEntry:
        """Append one entry in the caller's transaction."""
        return self.append_many(session, [draft], now=now)[0]

    def append_many(
        self, session: Session, drafts: Sequence[EntryDraft], *, now: datetime | None = None
    ) -> list[AppendedEntry]:
        """Append entries in order, in the caller's transaction, with one lock and one round of inserts."""
        if not drafts:
            return []
        faults.note_actions(session, (d.action for d in drafts))
        now = now or utcnow()
        size, frontier = self._lock_head(session)
        # the frontier as a stack of (level, index, hash), largest subtree first
        stack = [
            (lvl, idx, h) for (lvl, idx), h in zip(merkle.perfect_subtrees(0, size), frontier, strict=True)
        ]
        entry_rows: list[dict[str, Any]] = []
        subject_rows: list[dict[str, Any]] = []
        object_rows: list[dict[str, Any]] = []
        node_rows: list[dict[str, Any]] = []
        appended: list[AppendedEntry] = []
        for offset, draft in enumerate(drafts):
            index = size + offset
            doc = entry_document(index, now, draft)
            data = canonical_bytes(doc)
            leaf = merkle.leaf_hash(data)
            entry_rows.append(
                {
                    "idx": index,
                    "entry": data,
                    "leaf_hash": leaf,
                    "time": now,
                    "actor_org_id": draft.actor.org_id,
                    "action": draft.action,
                    "purpose": draft.purpose,
                    "request_id": draft.request_id,
                }
            )
            subject_rows.extend({"uscc": s, "idx": index} for s in doc["subjects"])
            object_rows.extend(
                {"kind": o["kind"], "object_id": o["id"], "idx": index}
                for o in {(o["kind"], o["id"]): o for o in doc["objects"]}.values()
            )
            # push the leaf; merge equal-height subtrees into their parents (each merge is a new stored node)
            level, node_index, h = 0, index, leaf
            node_rows.append({"level": 0, "index": index, "hash": leaf})
            while stack and stack[-1][0] == level:
                _, left_index, left_hash = stack.pop()
                h = merkle.node_hash(left_hash, h)
                level, node_index = level + 1, left_index >> 1
                node_rows.append({"level": level, "index": node_index, "hash": h})
            stack.append((level, node_index, h))
            appended.append(AppendedEntry(index, leaf, data))
        conn = session.connection()
        conn.execute(_INSERT_ENTRIES, entry_rows)
        if subject_rows:
            _insert_subject_rows(conn, subject_rows)
        if object_rows:
            conn.execute(_INSERT_OBJECTS, object_rows)
        conn.execute(_INSERT_NODES, node_rows)
        conn.execute(
            _ADVANCE_HEAD, {"new_size": size + len(drafts), "new_frontier": b"".join(h for _, _, h in stack)}
        )
        return appended

    def _lock_head(self, session: Session) -> tuple[int, list[bytes]]:
        row = session.connection().execute(_LOCK_HEAD).one_or_none()
        if row is None:
            raise LedgerIntegrityError("the ledger head row is missing; run `pps db upgrade`")
        return row.size, _split_frontier(row.size, bytes(row.frontier))

    def _nodes(self, session: Session, coords: Iterable[merkle.NodeId]) -> dict[merkle.NodeId, bytes]:
        wanted = sorted(set(coords))
        found: dict[merkle.NodeId, bytes] = {}
        conn = session.connection()
        for start in range(0, len(wanted), _NODE_CHUNK):
            chunk = wanted[start : start + _NODE_CHUNK]
            # an OR of primary-key equalities: SQLite answers a row-value IN (...) with a full scan
            match = or_(*(and_(_NODES.c.level == level, _NODES.c.index == index) for level, index in chunk))
            rows = conn.execute(select(_NODES.c.level, _NODES.c.index, _NODES.c.hash).where(match))
            found.update({(level, index): bytes(h) for level, index, h in rows})
        missing = [c for c in wanted if c not in found]
        if missing:
            level, index = missing[0]
            raise LedgerIntegrityError(
                f"stored Merkle node (level {level}, index {index}) is missing",
                first_bad_index=index << level,
            )
        return found

    # --- reads ---------------------------------------------------------------------------------------

    def size(self, session: Session) -> int:
        size = session.execute(select(LedgerHead.size).where(LedgerHead.id == HEAD_ID)).scalar_one_or_none()
        if size is None:
            raise LedgerIntegrityError("the ledger head row is missing; run `pps db upgrade`")
        return size

    def root(self, session: Session, size: int | None = None) -> bytes:
        """The root hash of the tree of ``size`` entries (default: the whole ledger)."""
        current = self.size(session)
        size = current if size is None else size
        self._check_size(size, current)
        return self._hash_ranges(session, [(0, size)])[0] if size else merkle.EMPTY_ROOT

    def _check_size(self, size: int, current: int) -> None:
        if not 0 <= size <= current:
            raise InvalidProofRequest(f"tree size {size} is outside the ledger's 0..{current}")

    def _hash_ranges(self, session: Session, ranges: Sequence[merkle.Range]) -> list[bytes]:
        found = self._nodes(session, merkle.nodes_for(ranges))
        return [merkle.range_hash(start, end, found) for start, end in ranges]

    def inclusion_proof(self, session: Session, index: int, size: int) -> list[bytes]:
        """The RFC 9162 inclusion proof of entry ``index`` in the tree of ``size`` entries."""
        self._check_size(size, self.size(session))
        return self._hash_ranges(session, merkle.inclusion_ranges(index, size))

    def consistency_proof(self, session: Session, first: int, second: int) -> list[bytes]:
        """The RFC 9162 consistency proof between the trees of ``first`` and ``second`` entries."""
        self._check_size(second, self.size(session))
        return self._hash_ranges(session, merkle.consistency_ranges(first, second))

    def entry(self, session: Session, index: int) -> StoredEntry:
        row = session.execute(
            select(LedgerEntry.idx, LedgerEntry.entry, LedgerEntry.leaf_hash).where(LedgerEntry.idx == index)
        ).one_or_none()
        if row is None or index >= self.size(session):
            raise NotFound(f"ledger entry {index} does not exist")
        return StoredEntry(row.idx, row.entry, row.leaf_hash)

    def entries(
        self, session: Session, flt: EntryFilter, *, after: int | None = None, limit: int = 50
    ) -> list[StoredEntry]:
        """Entries matching ``flt`` in index order, starting after index ``after``."""
        query = select(LedgerEntry.idx, LedgerEntry.entry, LedgerEntry.leaf_hash)
        conds = []
        if flt.involving is not None:
            conds.append(_involving(*flt.involving))
        if flt.object is not None:
            query = query.join(LedgerEntryObject, LedgerEntryObject.idx == LedgerEntry.idx)
            conds.append(LedgerEntryObject.kind == flt.object[0])
            conds.append(LedgerEntryObject.object_id == flt.object[1])
        if flt.subject is not None:
            query = query.join(LedgerEntrySubject, LedgerEntrySubject.idx == LedgerEntry.idx)
            conds.append(LedgerEntrySubject.uscc == flt.subject)
        if flt.actor_org_id is not None:
            conds.append(LedgerEntry.actor_org_id == flt.actor_org_id)
        if flt.action is not None:
            if flt.action.endswith(".*"):
                conds.append(LedgerEntry.action.startswith(flt.action[:-1], autoescape=True))
            else:
                conds.append(LedgerEntry.action == flt.action)
        if flt.purpose is not None:
            conds.append(LedgerEntry.purpose == flt.purpose)
        if flt.since is not None:
            conds.append(LedgerEntry.time >= flt.since)
        if flt.until is not None:
            conds.append(LedgerEntry.time < flt.until)
        if after is not None:
            conds.append(LedgerEntry.idx > after)
        rows = session.execute(query.where(*conds).order_by(LedgerEntry.idx).limit(limit))
        return [StoredEntry(r.idx, r.entry, r.leaf_hash) for r in rows]

    def subjects_of(self, session: Session, obj: tuple[str, str], action: str) -> list[str]:
        """The sorted subjects of every ``action`` entry naming object ``(kind, id)`` (e.g. whom a job's
        ``policy.release`` entries were about), through the subject and object indexes."""
        rows = session.execute(
            select(LedgerEntrySubject.uscc)
            .join(LedgerEntryObject, LedgerEntryObject.idx == LedgerEntrySubject.idx)
            .join(LedgerEntry, LedgerEntry.idx == LedgerEntrySubject.idx)
            .where(
                LedgerEntryObject.kind == obj[0],
                LedgerEntryObject.object_id == obj[1],
                LedgerEntry.action == action,
            )
            .distinct()
        ).scalars()
        return sorted(rows)

    def touches(self, session: Session, index: int, *, org_id: str, uscc: str | None) -> bool:
        """Whether entry ``index`` was made by ``org_id`` or touches subject ``uscc`` (object-level check)."""
        hit = session.execute(
            select(func.count()).where(LedgerEntry.idx == index, _involving(org_id, uscc))
        ).scalar_one()
        return bool(hit)

    # --- checkpoints ---------------------------------------------------------------------------------

    def publish_checkpoint(
        self, session: Session, *, size: int | None = None, now: datetime | None = None
    ) -> Checkpoint:
        """Sign and store a checkpoint of the tree of ``size`` entries (default: the whole ledger).

        Idempotent per size: a checkpoint already published at that size is returned as it is.
        """
        current, frontier = self._lock_head(session)  # serialise with appends and other publishers
        size = current if size is None else size
        self._check_size(size, current)
        existing = session.get(LedgerCheckpoint, size)
        if existing is not None:
            return Checkpoint(self.origin, existing.tree_size, existing.root_hash, existing.note)
        root = merkle.fold_right(frontier) if size == current else self.root(session, size)
        cp = self.signer.sign_checkpoint(self.origin, size, root)
        session.add(
            LedgerCheckpoint(tree_size=size, root_hash=root, note=cp.note, created_at=now or utcnow())
        )
        session.flush()
        return cp

    def latest_checkpoint(self, session: Session) -> Checkpoint | None:
        row = session.execute(
            select(LedgerCheckpoint).order_by(LedgerCheckpoint.tree_size.desc()).limit(1)
        ).scalar_one_or_none()
        return None if row is None else Checkpoint(self.origin, row.tree_size, row.root_hash, row.note)

    def checkpoints(
        self, session: Session, *, after_size: int | None = None, limit: int = 50
    ) -> list[Checkpoint]:
        query = select(LedgerCheckpoint).order_by(LedgerCheckpoint.tree_size).limit(limit)
        if after_size is not None:
            query = query.where(LedgerCheckpoint.tree_size > after_size)
        return [
            Checkpoint(self.origin, r.tree_size, r.root_hash, r.note)
            for r in session.execute(query).scalars()
        ]

    def checkpoint_at(self, session: Session, size: int) -> Checkpoint:
        row = session.get(LedgerCheckpoint, size)
        if row is None:
            raise NotFound(f"no checkpoint was published at tree size {size}")
        return Checkpoint(self.origin, row.tree_size, row.root_hash, row.note)
