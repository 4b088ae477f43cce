"""The ledger contract: appends, roots, proofs, checkpoints, queries, concurrency, fail-closed.

Runs on SQLite by default and on PostgreSQL when PPS_TEST_DATABASE_URL is set (see conftest).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from pps.errors import InvalidInput, InvalidProofRequest, NotFound
from pps.ledger.entry import Actor, EntryDraft, ObjectRef, Release
from pps.ledger.store import EntryFilter
from pps.ledger.verify import verify_ledger
from pps.runtime import Runtime
from pps_wire import merkle
from pps_wire.checkpoint import verify_checkpoint
from tests.helpers import uscc_for

pytestmark = pytest.mark.db

BANK = Actor("org_bank", "bank")
OTHER = Actor("org_other", "data_provider")


def draft(i: int, actor: Actor = BANK, subjects: tuple[str, ...] = ()) -> EntryDraft:
    return EntryDraft(
        action="test.access" if i % 2 else "test.other",
        actor=actor,
        objects=(ObjectRef("thing", f"t{i}"),),
        subjects=subjects,
        purpose="loan_underwriting",
        consent_ids=("c2", "c1"),
        released=(Release(to="org_bank", what="score"),),
        request_id=f"r{i}",
        detail={"n": i},
    )


def all_leaves(rt: Runtime) -> list[bytes]:
    with rt.db.transaction(write=False) as s:
        return [e.leaf_hash for e in rt.ledger.entries(s, EntryFilter(), limit=100_000)]


def test_appends_get_dense_indices_and_canonical_bytes(runtime: Runtime) -> None:
    with runtime.db.transaction() as s:
        a = runtime.ledger.append(s, draft(0))
        b = runtime.ledger.append_many(s, [draft(1), draft(2)])
    assert [a.index, *(x.index for x in b)] == [0, 1, 2]
    assert a.entry.startswith(
        b'{"action":"test.other","actor":{"org":"org_bank","role":"bank","token":null,"via":"api"}'
    )
    assert b'"consent_ids":["c1","c2"]' in a.entry  # sorted, so the same access always hashes the same way
    assert a.leaf_hash == merkle.leaf_hash(a.entry)


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_roots_and_proofs_match_a_full_rebuild(runtime: Runtime, batch: int) -> None:
    n = 0
    while n < 70:
        with runtime.db.transaction() as s:
            runtime.ledger.append_many(s, [draft(n + k) for k in range(batch)])
        n += batch
    leaves = all_leaves(runtime)
    assert len(leaves) == n
    with runtime.db.transaction(write=False) as s:
        assert runtime.ledger.root(s) == merkle.mth(leaves)
        for size in (1, 2, 3, 5, 8, 13, 33, n):
            root = merkle.mth(leaves[:size])
            assert runtime.ledger.root(s, size) == root
            for index in {0, size // 2, size - 1}:
                proof = runtime.ledger.inclusion_proof(s, index, size)
                merkle.verify_inclusion(index, size, leaves[index], proof, root)
            if size < n:
                proof = runtime.ledger.consistency_proof(s, size, n)
                merkle.verify_consistency(size, n, root, merkle.mth(leaves), proof)


def test_proofs_beyond_the_tree_are_refused(runtime: Runtime) -> None:
    with runtime.db.transaction() as s:
        runtime.ledger.append_many(s, [draft(i) for i in range(5)])
    with runtime.db.transaction(write=False) as s:
        with pytest.raises(InvalidProofRequest):
            runtime.ledger.inclusion_proof(s, 0, 6)
        with pytest.raises(InvalidProofRequest):
            runtime.ledger.inclusion_proof(s, 5, 5)
        with pytest.raises(InvalidProofRequest):
            runtime.ledger.consistency_proof(s, 3, 6)
        with pytest.raises(InvalidProofRequest):
            runtime.ledger.consistency_proof(s, 0, 5)
        with pytest.raises(NotFound):
            runtime.ledger.entry(s, 5)


def test_checkpoints_are_signed_and_published_once_per_size(runtime: Runtime) -> None:
    with runtime.db.transaction() as s:
        empty = runtime.ledger.publish_checkpoint(s)
    assert (empty.tree_size, empty.root_hash) == (0, merkle.EMPTY_ROOT)
    with runtime.db.transaction() as s:
        runtime.ledger.append_many(s, [draft(i) for i in range(10)])
        cp = runtime.ledger.publish_checkpoint(s)
        again = runtime.ledger.publish_checkpoint(s)
    assert again == cp
    parsed = verify_checkpoint(cp.note, runtime.ledger.verifier, origin=runtime.ledger.origin)
    assert parsed.tree_size == 10
    assert parsed.root_hash == merkle.mth(all_leaves(runtime))
    with runtime.db.transaction(write=False) as s:
        assert [c.tree_size for c in runtime.ledger.checkpoints(s)] == [0, 10]
        assert runtime.ledger.checkpoint_at(s, 10) == cp
        past = runtime.ledger.publish_checkpoint(s, size=4)  # a past size can be signed too
    assert verify_checkpoint(past.note, runtime.ledger.verifier).root_hash == merkle.mth(
        all_leaves(runtime)[:4]
    )


def test_filters_and_pagination(runtime: Runtime) -> None:
    subject = uscc_for(1)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with runtime.db.transaction() as s:
        for i in range(20):
            actor = BANK if i % 4 else OTHER
            subjects = (subject,) if i % 5 == 0 else ()
            runtime.ledger.append(s, draft(i, actor, subjects), now=t0 + timedelta(hours=i))
    with runtime.db.transaction(write=False) as s:
        led = runtime.ledger
        assert [e.index for e in led.entries(s, EntryFilter(subject=subject))] == [0, 5, 10, 15]
        assert [e.index for e in led.entries(s, EntryFilter(actor_org_id="org_other"))] == [0, 4, 8, 12, 16]
        assert len(led.entries(s, EntryFilter(action="test.access"))) == 10
        assert len(led.entries(s, EntryFilter(action="test.*"))) == 20
        assert len(led.entries(s, EntryFilter(action="test%"))) == 0  # LIKE wildcards are escaped
        window = EntryFilter(since=t0 + timedelta(hours=3), until=t0 + timedelta(hours=6))
        assert [e.index for e in led.entries(s, window)] == [3, 4, 5]
        page1 = led.entries(s, EntryFilter(), limit=7)
        page2 = led.entries(s, EntryFilter(), after=page1[-1].index, limit=7)
        assert [e.index for e in page1 + page2] == list(range(14))
        assert led.touches(s, 5, org_id="org_x", uscc=subject)
        assert not led.touches(s, 6, org_id="org_x", uscc=subject)
        assert led.touches(s, 6, org_id="org_bank", uscc=None)


def test_bad_entries_are_refused_and_change_nothing(runtime: Runtime) -> None:
    with runtime.db.transaction() as s:
        runtime.ledger.append(s, draft(0))
    for detail in ({"x": 1.5}, {"x": 2**60}, {"x": object()}, {"x": "y" * 1_100_000}, {"ключ": 1}):
        with pytest.raises(InvalidInput), runtime.db.transaction() as s:
            runtime.ledger.append(s, EntryDraft(action="bad", actor=BANK, detail=detail))
    with runtime.db.transaction(write=False) as s:
        assert runtime.ledger.size(s) == 1
        verify_ledger(s, runtime.ledger)


def test_a_failed_transaction_leaves_neither_access_nor_entry(runtime: Runtime) -> None:
    """Fail closed: the ledger entry and the access it records commit together or not at all."""
    from pps.infra.storage.tables import Organization, Role
    from pps.ledger.entry import OPERATOR

    def access_then_crash() -> None:
        with runtime.db.transaction() as s:
            runtime.identity.create_org(s, name="Half-made bank", role=Role.bank, uscc=None, actor=OPERATOR)
            raise RuntimeError("crash after the entry, before commit")

    with pytest.raises(RuntimeError):
        access_then_crash()
    with runtime.db.transaction(write=False) as s:
        assert s.query(Organization).count() == 0
        assert runtime.ledger.size(s) == 0


def test_when_the_entry_cannot_be_written_the_access_fails(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pps.infra.storage.tables import Organization, Role
    from pps.ledger.entry import OPERATOR

    def broken(*_a: object, **_k: object) -> None:
        raise OSError("ledger storage unavailable")

    monkeypatch.setattr(runtime.ledger, "append_many", broken)
    with pytest.raises(OSError, match="ledger storage"), runtime.db.transaction() as s:
        runtime.identity.create_org(s, name="Unlogged bank", role=Role.bank, uscc=None, actor=OPERATOR)
    monkeypatch.undo()
    with runtime.db.transaction(write=False) as s:
        assert s.query(Organization).count() == 0
        assert runtime.ledger.size(s) == 0


@pytest.mark.slow
def test_concurrent_appends_never_share_an_index_or_corrupt_the_root(runtime: Runtime) -> None:
    threads, per_thread = 8, 25
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                with runtime.db.transaction() as s:
                    if i % 5 == 0:
                        runtime.ledger.append_many(s, [draft(t * 1000 + i), draft(t * 1000 + i + 500)])
                    else:
                        runtime.ledger.append(s, draft(t * 1000 + i))
                    if i % 7 == 0:
                        runtime.ledger.publish_checkpoint(s)
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert errors == []
    expected = threads * (per_thread + per_thread // 5)
    leaves = all_leaves(runtime)
    assert len(leaves) == expected
    with runtime.db.transaction(write=False) as s:
        assert runtime.ledger.size(s) == expected
        assert runtime.ledger.root(s) == merkle.mth(leaves)
        report = verify_ledger(s, runtime.ledger)
    assert report.tree_size == expected
    assert report.checkpoints_checked >= 1


@pytest.mark.slow
def test_verify_sees_one_snapshot_while_the_service_writes(runtime: Runtime) -> None:
    """On PostgreSQL, READ COMMITTED would show verify a ledger that grows between its queries."""
    with runtime.db.transaction() as s:
        runtime.ledger.append_many(s, [draft(i) for i in range(3000)])
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            with runtime.db.transaction() as s:
                runtime.ledger.append(s, draft(i))
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(3):
            with runtime.db.transaction(write=False, snapshot=True) as s:
                verify_ledger(s, runtime.ledger)
    finally:
        stop.set()
        thread.join()
