"""Tampering with the stored ledger, directly in the database, is detected with the first bad index."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Connection, text

from pps.errors import LedgerIntegrityError
from pps.ledger.entry import Actor, EntryDraft
from pps.ledger.verify import verify_ledger
from pps.runtime import Runtime
from pps_wire import merkle
from tests.helpers import uscc_for

pytestmark = pytest.mark.db

N = 40
CHECKPOINT_AT = 30


@pytest.fixture
def ledger(runtime: Runtime) -> tuple[Runtime, str]:
    """A ledger of N entries with a checkpoint at CHECKPOINT_AT (returned, as an auditor would keep it)."""
    actor = Actor("org_bank", "bank")
    with runtime.db.transaction() as s:
        runtime.ledger.append_many(
            s,
            [
                EntryDraft(action="test.access", actor=actor, subjects=(uscc_for(i % 3),), request_id=f"r{i}")
                for i in range(CHECKPOINT_AT)
            ],
        )
        saved = runtime.ledger.publish_checkpoint(s).note
        runtime.ledger.append_many(
            s, [EntryDraft(action="test.later", actor=actor) for _ in range(N - CHECKPOINT_AT)]
        )
    with runtime.db.transaction(write=False) as s:
        verify_ledger(s, runtime.ledger, against=saved)  # intact to begin with
    return runtime, saved


def tamper(rt: Runtime, sql: Callable[[Connection], None]) -> None:
    with rt.db.engine.begin() as conn:
        sql(conn)


def entry_bytes(conn: Connection, idx: int) -> bytes:
    return bytes(
        conn.execute(text("SELECT entry FROM ledger_entries WHERE idx = :i"), {"i": idx}).scalar_one()
    )


def set_entry(conn: Connection, idx: int, data: bytes, *, fix_leaf: bool = False) -> None:
    conn.execute(text("UPDATE ledger_entries SET entry = :e WHERE idx = :i"), {"e": data, "i": idx})
    if fix_leaf:
        conn.execute(
            text("UPDATE ledger_entries SET leaf_hash = :h WHERE idx = :i"),
            {"h": merkle.leaf_hash(data), "i": idx},
        )


def all_leaf_hashes(conn: Connection) -> list[bytes]:
    return [bytes(r[0]) for r in conn.execute(text("SELECT leaf_hash FROM ledger_entries ORDER BY idx"))]


def rebuild_tree(conn: Connection, leaves: list[bytes]) -> None:
    """What an attacker with database access does to hide an edit: recompute every node and the head."""
    levels, frontier = merkle.perfect_levels(leaves)
    conn.execute(text("DELETE FROM ledger_nodes"))
    rows = [{"l": lvl, "i": i, "h": h} for lvl, hs in enumerate(levels) for i, h in enumerate(hs)]
    conn.execute(text('INSERT INTO ledger_nodes (level, "index", hash) VALUES (:l, :i, :h)'), rows)
    conn.execute(
        text("UPDATE ledger_head SET size = :n, frontier = :f"), {"n": len(leaves), "f": b"".join(frontier)}
    )


def expect_bad(
    rt: Runtime, first_bad: int | None, *, against: str | None = None, match: str | None = None
) -> None:
    with pytest.raises(LedgerIntegrityError, match=match) as info, rt.db.transaction(write=False) as s:
        verify_ledger(s, rt.ledger, against=against)
    assert info.value.first_bad_index == first_bad, info.value.message


def test_edited_entry(ledger: tuple[Runtime, str]) -> None:
    rt, _ = ledger
    tamper(rt, lambda c: set_entry(c, 12, entry_bytes(c, 12).replace(b"r12", b"r99")))
    expect_bad(rt, 12, match="leaf hash")


def test_edited_entry_with_its_leaf_hash_recomputed(ledger: tuple[Runtime, str]) -> None:
    rt, _ = ledger
    forged = lambda c: entry_bytes(c, 7).replace(b'"role":"bank"', b'"role":"auditor"')
    tamper(rt, lambda c: set_entry(c, 7, forged(c), fix_leaf=True))
    expect_bad(rt, 7, match="does not match the entries")


def test_deleted_entry(ledger: tuple[Runtime, str]) -> None:
    rt, _ = ledger

    def delete(c: Connection) -> None:
        c.execute(text("DELETE FROM ledger_entry_subjects WHERE idx = 9"))
        c.execute(text("DELETE FROM ledger_entries WHERE idx = 9"))

    tamper(rt, delete)
    expect_bad(rt, 9, match="missing")


def test_deleted_last_entry(ledger: tuple[Runtime, str]) -> None:
    rt, _ = ledger
    tamper(rt, lambda c: c.execute(text("DELETE FROM ledger_entries WHERE idx = :i"), {"i": N - 1}))
    expect_bad(rt, N - 1, match=f"should hold {N}")


def test_inserted_entry(ledger: tuple[Runtime, str]) -> None:
    rt, _ = ledger

    def insert(c: Connection) -> None:
        data = entry_bytes(c, N - 1).replace(f'"index":{N - 1}'.encode(), f'"index":{N}'.encode())
        c.execute(
            text(
                "INSERT INTO ledger_entries (idx, entry, leaf_hash, time, actor_org_id, action, purpose, request_id) "
                "SELECT :n, :e, :h, time, actor_org_id, action, purpose, request_id FROM ledger_entries WHERE idx = :p"
            ),
            {"n": N, "e": data, "h": merkle.leaf_hash(data), "p": N - 1},
        )

    tamper(rt, insert)
    expect_bad(rt, N, match="beyond the ledger size")


def test_reordered_entries(ledger: tuple[Runtime, str]) -> None:
    rt, _ = ledger

    def swap(c: Connection) -> None:
        a, b = entry_bytes(c, 3), entry_bytes(c, 4)
        set_entry(c, 3, b, fix_leaf=True)
        set_entry(c, 4, a, fix_leaf=True)

    tamper(rt, swap)
    expect_bad(rt, 3)


def test_edited_indexed_column(ledger: tuple[Runtime, str]) -> None:
    rt, _ = ledger
    tamper(rt, lambda c: c.execute(text("UPDATE ledger_entries SET action = 'test.hidden' WHERE idx = 21")))
    expect_bad(rt, 21, match="indexed columns")


def test_removed_subject_index_row(ledger: tuple[Runtime, str]) -> None:
    rt, _ = ledger
    tamper(rt, lambda c: c.execute(text("DELETE FROM ledger_entry_subjects WHERE idx = 14")))
    expect_bad(rt, 14, match="subject index")


def test_edited_node(ledger: tuple[Runtime, str]) -> None:
    rt, _ = ledger
    tamper(
        rt,
        lambda c: c.execute(
            text("UPDATE ledger_nodes SET hash = :h WHERE level = 2 AND " + '"index"' + " = 3"),
            {"h": b"\x00" * 32},
        ),
    )
    expect_bad(rt, 12, match="level 2, index 3")


def test_forged_checkpoint(ledger: tuple[Runtime, str]) -> None:
    rt, _ = ledger
    tamper(
        rt,
        lambda c: c.execute(
            text(
                "UPDATE ledger_checkpoints SET note = replace(note, '\n30\n', '\n29\n') WHERE tree_size = 30"
            )
        ),
    )
    expect_bad(rt, None, match="does not verify")


def test_history_rewritten_and_rehashed_is_caught_by_the_signed_checkpoint(
    ledger: tuple[Runtime, str],
) -> None:
    """An attacker with database access edits an entry and recomputes every hash; only signatures stop them."""
    rt, _ = ledger

    def rewrite(c: Connection) -> None:
        set_entry(c, 5, entry_bytes(c, 5).replace(b'"r5"', b'"rX"'), fix_leaf=True)
        c.execute(text("UPDATE ledger_entries SET request_id = 'rX' WHERE idx = 5"))
        rebuild_tree(c, all_leaf_hashes(c))

    tamper(rt, rewrite)
    expect_bad(rt, 0, match="root signed at size 30")


def test_truncation_after_a_saved_checkpoint(ledger: tuple[Runtime, str]) -> None:
    """Deleting recent entries and the checkpoints that cover them still fails against the auditor's copy."""
    rt, saved = ledger

    def truncate(c: Connection) -> None:
        leaves = all_leaf_hashes(c)[:20]
        c.execute(text("DELETE FROM ledger_entry_subjects WHERE idx >= 20"))
        c.execute(text("DELETE FROM ledger_entries WHERE idx >= 20"))
        c.execute(text("DELETE FROM ledger_checkpoints"))
        rebuild_tree(c, leaves)

    tamper(rt, truncate)
    with rt.db.transaction(write=False) as s:
        verify_ledger(s, rt.ledger)  # self-consistent now: only the auditor's saved checkpoint can tell
    expect_bad(rt, 20, against=saved, match="entries were deleted")
