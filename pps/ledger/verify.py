"""Full verification of the stored ledger (``pps audit verify``).

Re-derives everything from the stored entry bytes and compares it with what is stored and what was signed:

1. entries have dense indices ``0 .. size-1`` (a deleted or inserted row shows as a gap or a surplus);
2. each entry is canonical JSON whose ``index`` is its position, whose leaf hash is the stored one, and whose
   indexed copies (action, actor, purpose, request id, time, subjects) agree with the entry;
3. every stored Merkle node equals the node recomputed from the leaves, and no node is missing or extra;
4. every published checkpoint carries a valid signature and the recomputed root at its size;
5. optionally, a checkpoint saved earlier by the auditor verifies (signature) and is consistent with the
   current tree, checked through an RFC 9162 consistency proof built from the stored nodes.

The first failure raises :class:`~pps.errors.LedgerIntegrityError` with the first bad entry index — also when a
cell's stored type was changed (SQLite keeps whatever type is written: an entry made TEXT is named by its index).

A checkpoint signed by a key the verifier was not given (a restored copy verified without its key directory, a
replaced key) is not tampering: its signature cannot be checked either way. Every other check still runs —
its body must carry the recomputed root — and only if all pass is :class:`~pps.errors.UnknownSigningKey`
raised, naming the key, so that a restore is told apart from an attack.
Memory: about 150 bytes per entry (leaf and node hashes), so 10^6 entries need ~150 MB.
"""

from __future__ import annotations

import base64
import binascii
import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Table, select, text
from sqlalchemy.orm import Session

from pps.errors import LedgerIntegrityError, ProofVerificationError, UnknownSigningKey
from pps.infra.storage.tables import (
    LedgerCheckpoint,
    LedgerEntry,
    LedgerEntryObject,
    LedgerEntrySubject,
    LedgerHead,
    LedgerNode,
)
from pps.ledger.entry import is_canonical
from pps.ledger.store import HEAD_ID, Ledger
from pps_wire import merkle
from pps_wire.checkpoint import Checkpoint, NoteVerifier, parse_checkpoint_body, verify_checkpoint

Progress = Callable[[str, int, int], None]
"""``progress(phase, done, total)``"""

_BATCH = 20_000


@dataclass(frozen=True)
class VerifyReport:
    tree_size: int
    root_hash: bytes
    nodes_checked: int
    checkpoints_checked: int
    latest_checkpoint_size: int | None
    consistent_with: int | None


def _noop(_phase: str, _done: int, _total: int) -> None:
    return None


def _bad(message: str, index: int | None) -> LedgerIntegrityError:
    where = f" (first bad index {index})" if index is not None else ""
    return LedgerIntegrityError(message + where, first_bad_index=index)


# --- cells whose stored type was changed ----------------------------------------------------------------

_STORAGE_CLASS = {
    "LargeBinary": "blob",
    "BigInteger": "integer",
    "SmallInteger": "integer",
    "Integer": "integer",
}
"""SQLite storage class of each ledger column type (``typeof``); every other column holds text."""
_TYPED_TABLES = (LedgerEntry, LedgerEntrySubject, LedgerEntryObject, LedgerNode, LedgerCheckpoint, LedgerHead)


def _storage_class(column_type: object) -> str:
    names = {cls.__name__ for cls in type(column_type).__mro__}
    names |= {cls.__name__ for cls in type(getattr(column_type, "impl", None)).__mro__}
    return next((_STORAGE_CLASS[n] for n in _STORAGE_CLASS if n in names), "text")


def _check_storage_types(session: Session) -> None:
    """On SQLite, which keeps any type in any column: name the first ledger row a cell of which no longer
    holds its column's type (an entry's bytes rewritten as TEXT, an index made text, a time that is no time),
    before reading rows would fail on it. One scan per table; other databases enforce column types."""
    conn = session.connection()
    if conn.dialect.name != "sqlite":
        return
    for model in _TYPED_TABLES:
        table: Table = model.__table__  # type: ignore[assignment]
        key = [c.name for c in table.primary_key.columns]
        tests = []
        for column in table.columns:
            want = _storage_class(column.type)
            allowed = f"'{want}', 'null'" if column.nullable else f"'{want}'"
            bad = f'typeof("{column.name}") NOT IN ({allowed})'
            if _storage_class(column.type) == "text" and column.name in ("time", "created_at"):
                bad += f' OR ("{column.name}" IS NOT NULL AND julianday("{column.name}") IS NULL)'
            tests.append((column.name, want, bad))
        order = ", ".join(f'"{k}"' for k in key)
        found = conn.execute(
            text(
                f"SELECT {order}, "  # noqa: S608 - table and column names from the ORM, no input
                + ", ".join(f'typeof("{name}"), ({bad})' for name, _, bad in tests)
                + f' FROM "{table.name}" WHERE '
                + " OR ".join(f"({bad})" for _, _, bad in tests)
                + f" ORDER BY {order} LIMIT 1"
            )
        ).first()
        if found is None:
            continue
        values = list(found)
        pk, cells = values[: len(key)], values[len(key) :]
        for i, (name, want, _) in enumerate(tests):
            stored_as, is_bad = cells[2 * i], cells[2 * i + 1]
            if is_bad:
                where = ", ".join(f"{k}={v!r}" for k, v in zip(key, pk, strict=True))
                raise _bad(
                    f"{table.name} row ({where}): column {name} holds {stored_as}"
                    + (f", not {want}" if stored_as != want else ", not a time")
                    + " (its stored type was changed)",
                    _ledger_index(model, key, pk),
                )


def _ledger_index(model: type, key: list[str], pk: list[object]) -> int | None:
    """The ledger index a tampered row stands for, where it has one."""

    def as_int(v: object) -> int | None:
        try:
            return int(v)  # type: ignore[call-overload, no-any-return]
        except (TypeError, ValueError):
            return None

    named = dict(zip(key, pk, strict=True))
    if "idx" in named:
        return as_int(named["idx"])
    if model is LedgerCheckpoint:
        return None
    if model is LedgerNode:
        level, index = as_int(named["level"]), as_int(named["index"])
        return index << level if level is not None and index is not None else None
    return None


def _check_entries(session: Session, size: int, progress: Progress) -> list[bytes]:
    subjects: dict[int, list[str]] = {}
    conn = session.connection()  # Core rows: the ORM result path costs more than the checks
    for idx, uscc in conn.execute(
        select(LedgerEntrySubject.idx, LedgerEntrySubject.uscc).order_by(
            LedgerEntrySubject.idx, LedgerEntrySubject.uscc
        )
    ):
        subjects.setdefault(idx, []).append(uscc)

    objects: dict[int, list[tuple[str, str]]] = {}
    for idx, kind, object_id in conn.execute(
        select(LedgerEntryObject.idx, LedgerEntryObject.kind, LedgerEntryObject.object_id).order_by(
            LedgerEntryObject.idx, LedgerEntryObject.kind, LedgerEntryObject.object_id
        )
    ):
        objects.setdefault(idx, []).append((kind, object_id))

    leaves: list[bytes] = []
    expected = 0
    rows = conn.execute(
        select(
            LedgerEntry.idx,
            LedgerEntry.entry,
            LedgerEntry.leaf_hash,
            LedgerEntry.time,
            LedgerEntry.actor_org_id,
            LedgerEntry.action,
            LedgerEntry.purpose,
            LedgerEntry.request_id,
        )
        .order_by(LedgerEntry.idx)
        .execution_options(yield_per=_BATCH)
    )
    for row in rows:
        idx = row.idx
        if idx != expected:
            if idx > expected:
                raise _bad(f"entry {expected} is missing (deleted row?)", expected)
            raise _bad(f"entry index {idx} is out of order", expected)
        if idx >= size:
            raise _bad(f"entry {idx} lies beyond the ledger size {size} (inserted row?)", idx)
        data = bytes(row.entry)
        leaf = merkle.leaf_hash(data)
        if leaf != bytes(row.leaf_hash):
            raise _bad(f"entry {idx}: stored bytes do not match its leaf hash (edited row?)", idx)
        doc = is_canonical(data)
        if doc is None:
            raise _bad(f"entry {idx} is not canonical JSON", idx)
        if doc.get("index") != idx:
            raise _bad(f"entry {idx} says it is entry {doc.get('index')} (reordered rows?)", idx)
        actor = doc.get("actor") or {}
        if (
            doc.get("action") != row.action
            or actor.get("org") != row.actor_org_id
            or doc.get("purpose") != row.purpose
            or doc.get("request_id") != row.request_id
            or doc.get("time") != _iso_z(row.time)
        ):
            raise _bad(f"entry {idx}: indexed columns disagree with the entry", idx)
        if doc.get("subjects", []) != subjects.pop(idx, []):
            raise _bad(f"entry {idx}: subject index disagrees with the entry", idx)
        named = sorted({(o.get("kind"), o.get("id")) for o in doc.get("objects", [])})
        if named != objects.pop(idx, []):
            raise _bad(f"entry {idx}: object index disagrees with the entry", idx)
        leaves.append(leaf)
        expected += 1
        if expected % _BATCH == 0:
            progress("entries", expected, size)
    if expected != size:
        raise _bad(f"the ledger should hold {size} entries but holds {expected}", expected)
    if subjects:
        first = min(subjects)
        raise _bad(f"subject index names entry {first}, which does not carry those subjects", first)
    if objects:
        first = min(objects)
        raise _bad(f"object index names entry {first}, which does not name those objects", first)
    progress("entries", size, size)
    return leaves


def _iso_z(t: datetime) -> str:
    """The entry time format (``2026-11-25T21:00:00.123456Z``) of a UTC datetime, fast (C isoformat)."""
    return t.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _check_nodes(session: Session, leaves: list[bytes], progress: Progress) -> tuple[list[list[bytes]], int]:
    levels, _ = merkle.perfect_levels(leaves)
    total = sum(len(level) for level in levels) if leaves else 0
    checked = 0
    rows = session.connection().execute(
        select(LedgerNode.level, LedgerNode.index, LedgerNode.hash)
        .order_by(LedgerNode.level, LedgerNode.index)
        .execution_options(yield_per=_BATCH)
    )
    want_level, want_index = 0, -1

    def advance() -> None:
        nonlocal want_level, want_index
        want_index += 1
        while want_level < len(levels) and want_index >= len(levels[want_level]):
            want_level, want_index = want_level + 1, 0

    advance()  # to the first node the tree has, if any
    for level, index, stored_hash in rows:
        if want_level >= len(levels) or (level, index) < (want_level, want_index):
            raise _bad(
                f"stored node (level {level}, index {index}) does not belong to the tree",
                min(index << level, len(leaves)),
            )
        if (level, index) != (want_level, want_index):
            raise _bad(
                f"stored node (level {want_level}, index {want_index}) is missing",
                want_index << want_level,
            )
        if bytes(stored_hash) != levels[want_level][want_index]:
            raise _bad(
                f"stored node (level {level}, index {index}) does not match the entries",
                index << level,
            )
        checked += 1
        if checked % _BATCH == 0:
            progress("nodes", checked, total)
        advance()
    if want_level < len(levels):
        raise _bad(
            f"stored node (level {want_level}, index {want_index}) is missing", want_index << want_level
        )
    progress("nodes", total, total)
    return levels, checked


def _root_at(levels: list[list[bytes]], size: int) -> bytes:
    return merkle.fold_right([levels[lvl][i] for lvl, i in merkle.perfect_subtrees(0, size)])


def verify_ledger(
    session: Session,
    ledger: Ledger,
    *,
    against: str | None = None,
    trusted: Sequence[NoteVerifier] = (),
    progress: Progress = _noop,
) -> VerifyReport:
    """Verify the whole stored ledger; raise ``LedgerIntegrityError`` at the first problem.

    Checkpoints must be signed by this ledger's current key or by one of the ``trusted`` verifier keys
    (e.g. the key in use before a key file was replaced). ``against`` is a signed checkpoint note saved
    earlier (by an auditor); it must verify the same way and be consistent with the current tree.
    """
    _check_storage_types(session)
    size = ledger.size(session)
    # millions of small objects (hashes, rows) and no cycles: full collections would cost a quarter of the run
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        leaves = _check_entries(session, size, progress)
        levels, nodes_checked = _check_nodes(session, leaves, progress)
    finally:
        if gc_was_enabled:
            gc.enable()
    root = _root_at(levels, size) if size else merkle.EMPTY_ROOT
    frontier = session.execute(select(LedgerHead.frontier).where(LedgerHead.id == HEAD_ID)).scalar_one()
    expected_frontier = b"".join(levels[lvl][i] for lvl, i in merkle.perfect_subtrees(0, size))
    if bytes(frontier) != expected_frontier:
        raise _bad("the ledger head's frontier disagrees with the stored nodes", None)

    verifiers = [ledger.verifier, *trusted] if ledger.can_sign else list(trusted)
    unknown: dict[str, list[int]] = {}  # signer key -> sizes of the checkpoints only it signed
    latest: int | None = None
    stored = session.execute(select(LedgerCheckpoint).order_by(LedgerCheckpoint.tree_size)).scalars().all()
    good_size = 0
    for row in stored:
        try:
            cp = _checkpoint(row.note, verifiers, ledger.origin, unknown)
        except ProofVerificationError as exc:
            raise _bad(f"checkpoint at size {row.tree_size} does not verify: {exc.message}", None) from exc
        if cp.tree_size != row.tree_size or cp.root_hash != bytes(row.root_hash):
            raise _bad(f"checkpoint row at size {row.tree_size} disagrees with its signed note", None)
        if cp.tree_size > size:
            raise _bad(f"signed checkpoint at size {cp.tree_size} exceeds the ledger size {size}", size)
        if cp.tree_size == 0 and cp.root_hash != merkle.EMPTY_ROOT:
            raise _bad("the checkpoint at size 0 does not carry the empty tree's root", None)
        if cp.tree_size and _root_at(levels, cp.tree_size) != cp.root_hash:
            raise _bad(
                f"the entries no longer hash to the root signed at size {cp.tree_size}: an entry in "
                f"[{good_size}, {cp.tree_size}) was changed and the tree rebuilt",
                good_size,
            )
        good_size = cp.tree_size
        latest = cp.tree_size
    progress("checkpoints", len(stored), len(stored))

    consistent_with: int | None = None
    if against is not None:
        saved = _verify_saved(session, ledger, levels, size, against, verifiers, unknown)
        consistent_with = saved.tree_size
    if unknown:
        raise _unknown_keys(unknown)
    return VerifyReport(size, root, nodes_checked, len(stored), latest, consistent_with)


def _verify_saved(
    session: Session,
    ledger: Ledger,
    levels: list[list[bytes]],
    size: int,
    note: str,
    verifiers: Sequence[NoteVerifier],
    unknown: dict[str, list[int]],
) -> Checkpoint:
    try:
        saved = _checkpoint(note, verifiers, ledger.origin, unknown, saved=True)
    except ProofVerificationError as exc:
        raise _bad(f"the saved checkpoint does not verify: {exc.message}", None) from exc
    if saved.tree_size > size:
        raise _bad(
            f"the saved checkpoint is at size {saved.tree_size} but the ledger now holds only {size} entries "
            "(entries were deleted)",
            size,
        )
    if saved.tree_size == 0:
        return saved
    if _root_at(levels, saved.tree_size) != saved.root_hash:
        raise _bad(
            f"the ledger is not consistent with the saved checkpoint at size {saved.tree_size}: "
            "history was rewritten",
            None,
        )
    # the same check as an external auditor makes: a consistency proof from the stored nodes
    proof = ledger.consistency_proof(session, saved.tree_size, size)
    try:
        merkle.verify_consistency(saved.tree_size, size, saved.root_hash, _root_at(levels, size), proof)
    except ProofVerificationError as exc:
        raise _bad(f"consistency proof from the saved checkpoint fails: {exc.message}", None) from exc
    return saved


# --- checkpoints signed by keys the verifier was not given -------------------------------------------------


def _signers(note: str) -> list[tuple[str, bytes]]:
    """``(key name, key id)`` of every signature line of a signed note (nothing is verified here)."""
    found = []
    sep = note.rfind("\n\n")
    for line in note[sep + 2 :].splitlines() if sep >= 0 else []:
        name, _, blob = line.removeprefix("\u2014 ").partition(" ")
        try:
            raw = base64.b64decode(blob, validate=True)
        except (ValueError, binascii.Error):
            continue
        if len(raw) > 4:
            found.append((name, raw[:4]))
    return found


def _checkpoint(
    note: str,
    verifiers: Sequence[NoteVerifier],
    origin: str,
    unknown: dict[str, list[int]],
    *,
    saved: bool = False,
) -> Checkpoint:
    """The checkpoint a note carries. Verified if a signature line names a key among ``verifiers`` (a bad
    signature then raises :class:`ProofVerificationError`: tampering); else parsed unverified and noted in
    ``unknown`` (key -> sizes), so that every other check still runs on it before :func:`_unknown_keys`."""
    known = {(v.name, v.key_id) for v in verifiers}
    signers = _signers(note)
    if not signers or any(s in known for s in signers):
        return verify_checkpoint(note, verifiers, origin=origin)
    sep = note.rfind("\n\n")
    cp_origin, size, root = parse_checkpoint_body(note[: sep + 1])
    if cp_origin != origin:
        raise ProofVerificationError(f"checkpoint is for log {cp_origin!r}, expected {origin!r}")
    for name, key_id in signers:
        label = f"{name}+{key_id.hex()}" + (" (the saved checkpoint)" if saved else "")
        unknown.setdefault(label, []).append(size)
    return Checkpoint(cp_origin, size, root, note)


def _unknown_keys(unknown: dict[str, list[int]]) -> UnknownSigningKey:
    keys = "; ".join(
        f"{key}: {len(sizes)} checkpoint(s), sizes {', '.join(map(str, sizes[:5]))}"
        + (" …" if len(sizes) > 5 else "")
        for key, sizes in sorted(unknown.items())
    )
    return UnknownSigningKey(
        f"unknown signing key — checkpoints are signed by key(s) this verifier was not given, so their "
        f"signatures could not be checked ({keys}). The entries, the Merkle tree and the roots the checkpoints "
        "name were checked and agree. Give the ledger's verifier key (the one auditors pinned; `pps audit "
        "public-key` on the original host) with --verifier-key, or run with the original key directory "
        "(PPS_KEY_DIR)",
        details={"keys": sorted(unknown)},
    )
