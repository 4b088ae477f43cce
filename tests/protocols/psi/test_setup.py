"""The server's setup (``protocols.psi.setup``): sharded equals unsharded, shards are a secret random partition,
every setup has a fresh key, items are checked with the caller's ``normalise``, parameters up front."""

from __future__ import annotations

import hashlib

import pytest

import protocols.psi as psi
from protocols.errors import InvalidParameters
from protocols.psi import (
    PSIParams,
    ServerSet,
    SetupStructure,
    decode_setup,
    prepare_setup,
    run_locally,
)
from protocols.psi import setup as psi_setup
from tests.helpers import uscc_for
from tests.protocols.psi.common import (
    SERVER_N,
    SMALL,
    NotAnItem,
    canonical,
    client_set,
    session,
)


def test_empty_server_set_gives_an_empty_intersection() -> None:
    setup = prepare_setup(ServerSet.of([]), SMALL, normalise=canonical, workers=1)
    result, _ = run_locally([uscc_for(1), uscc_for(2)], setup, normalise=canonical, reveal_intersection=True)
    assert result.size == 0
    assert result.intersection == frozenset()
    assert result.server_set_size == 0


def test_sharded_setup_gives_the_same_result_as_unsharded(server_set: ServerSet) -> None:
    items, expected = client_set(80, 120, seed=11)
    for shards in (1, 2, 5):
        setup = prepare_setup(server_set, SMALL, normalise=canonical, shards=shards, workers=1)
        assert setup.shard_count == shards
        for reveal in (True, False):
            result, _ = run_locally(items, setup, normalise=canonical, reveal_intersection=reveal)
            assert result.size == len(expected)
            if reveal:
                assert result.intersection == expected


def test_parallel_setup_in_spawned_workers_gives_the_same_result(server_set: ServerSet) -> None:
    items, expected = client_set(50, 50, seed=12)
    for structure in SetupStructure:
        setup = prepare_setup(
            server_set,
            PSIParams(max_client_items=1_000, structure=structure),
            normalise=canonical,
            shards=2,
            workers=2,
        )
        assert setup.shard_count == (2 if structure is SetupStructure.GCS else 1)  # RAW shards are merged
        result, _ = run_locally(items, setup, normalise=canonical, reveal_intersection=True)
        assert result.intersection == expected


def test_shards_are_a_secret_random_partition(server_set: ServerSet, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not by USCC order: otherwise a size-only client could tell per-shard counts apart by item prefix."""
    seen: list[list[str]] = []
    real = psi_setup._make_shard

    def spy(key: bytes, items: list[str], *args: object) -> bytes:
        seen.append(list(items))
        return real(key, items, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(psi_setup, "_make_shard", spy)
    prepare_setup(server_set, SMALL, normalise=canonical, shards=3, workers=1)
    prepare_setup(server_set, SMALL, normalise=canonical, shards=3, workers=1)
    first, second = seen[:3], seen[3:]
    assert sorted(x for part in first for x in part) == list(server_set.items)
    assert all(abs(len(p) - SERVER_N / 3) <= 1 for p in first)
    rank = {x: i for i, x in enumerate(server_set.items)}
    for part in first:  # not contiguous ranges of the sorted set (which would follow the USCC prefix)
        ranks = [rank[x] for x in part]
        assert max(ranks) - min(ranks) + 1 > 2 * len(part)
    assert [set(p) for p in first] != [set(p) for p in second]  # fresh partition each time


def test_each_setup_has_a_fresh_server_key(server_set: ServerSet) -> None:
    a = prepare_setup(server_set, SMALL, normalise=canonical, shards=1, workers=1)
    b = prepare_setup(server_set, SMALL, normalise=canonical, shards=1, workers=1)
    assert a.set_digest == b.set_digest
    assert a._server_key != b._server_key
    assert a.message != b.message


def test_prepared_setup_repr_hides_the_key(prepared: psi.PreparedSetup) -> None:
    assert prepared._server_key.hex() not in repr(prepared)
    assert "hidden" in repr(prepared)


def test_client_view_reveals_the_server_set_size_only_through_the_setup(server_set: ServerSet) -> None:
    other = ServerSet.of(uscc_for(50_000 + i) for i in range(SERVER_N))
    bigger = ServerSet.of(uscc_for(i) for i in range(SERVER_N * 2))
    raw = PSIParams(max_client_items=1_000, structure=SetupStructure.RAW)
    setups = [prepare_setup(s, raw, normalise=canonical, workers=1) for s in (server_set, other, bigger)]
    # Same-size sets give same-size setups; the size is stated (and implied by the structure).
    assert len(setups[0].message) == len(setups[1].message) < len(setups[2].message)
    assert [decode_setup(s.message).server_set_size for s in setups] == [SERVER_N, SERVER_N, 2 * SERVER_N]
    # The response depends only on the client's own set size, not on the server set or the overlap.
    items, _ = client_set(40, 60, seed=41)
    lengths = {len(session(s, items, reveal=True)[3]) for s in setups}
    assert lengths == {4 + 2 + 16 + 16 + 4 + 33 * len(items)}


def test_server_set_items_are_validated_when_the_setup_is_made() -> None:
    for bad in ("", "two\nlines", 7):
        with pytest.raises(InvalidParameters, match="line breaks"):
            ServerSet.of([uscc_for(1), bad])  # type: ignore[list-item]
    with pytest.raises(NotAnItem, match="18 characters"):  # the caller's check, in the workers
        prepare_setup(ServerSet.of([uscc_for(1), "short"]), SMALL, normalise=canonical, workers=1)
    with pytest.raises(InvalidParameters, match="normalised") as raised:
        prepare_setup(ServerSet.of([uscc_for(1).lower()]), SMALL, normalise=canonical, workers=1)
    assert raised.value.code == "invalid_parameters"


def test_a_set_of_usccs_has_the_digest_it_always_had() -> None:
    """The cache key of a set of 18-character items did not change when the USCC check left the protocol."""
    items = [uscc_for(i) for i in range(3)]
    blob = b"pps/psi/server-set/v1\n" + "\n".join(sorted(items)).encode()
    assert ServerSet.of(items).digest == hashlib.sha256(blob).hexdigest()


def test_parameters_are_checked_up_front(server_set: ServerSet) -> None:
    with pytest.raises(InvalidParameters, match="fpr"):
        PSIParams(fpr=0.0)
    with pytest.raises(InvalidParameters, match="max_client_items"):
        PSIParams(max_client_items=psi.MAX_CLIENT_ITEMS + 1)
    with pytest.raises(InvalidParameters, match="shards"):
        prepare_setup(server_set, SMALL, normalise=canonical, shards=0, workers=1)
    with pytest.raises(InvalidParameters, match="hash range") as raised:  # the library's int64 would overflow
        prepare_setup(
            server_set, PSIParams(fpr=1e-15, max_client_items=1_000_000), normalise=canonical, workers=1
        )
    assert raised.value.code == "invalid_parameters"
