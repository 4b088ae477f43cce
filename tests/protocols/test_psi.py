"""PSI between a bank's customer list and the consented subjects (``protocols.psi``).

Correctness (both modes, both data structures, sharded = unsharded), the setup cache and its invalidation,
what each party can observe, and hostile bytes: every malformed message is a clear ``InvalidInput`` and
never takes the process down (the cases the library itself would abort on run in a subprocess).
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from private_set_intersection import python as lib

import protocols.psi as psi
from pps.errors import InvalidInput, InvalidUSCC
from protocols.psi import (
    CacheOutcome,
    ClientStage,
    InvalidPSIMessage,
    MessageType,
    PSIClient,
    PSIParams,
    PSIServer,
    PSISetTooLarge,
    PSIStageError,
    RequestMessage,
    ResponseMessage,
    ServerSet,
    ServerStage,
    SetupCache,
    SetupMessage,
    SetupStructure,
    decode_request,
    decode_response,
    decode_setup,
    prepare_setup,
    run_locally,
)
from tests.helpers import uscc_for

ROOT = Path(__file__).resolve().parents[2]
NOT_A_POINT = b"\x02" + (1).to_bytes(32, "big")  # x = 1 is not the x coordinate of a P-256 point
X_TOO_LARGE = b"\x03" + b"\xff" * 32  # x >= p
SERVER_N = 1_500
SMALL = PSIParams(max_client_items=1_000)


@pytest.fixture(scope="module")
def server_set() -> ServerSet:
    return ServerSet.of(uscc_for(i) for i in range(SERVER_N))


@pytest.fixture(scope="module")
def prepared(server_set: ServerSet) -> psi.PreparedSetup:
    return prepare_setup(server_set, SMALL, shards=3, workers=1)


@pytest.fixture(scope="module")
def prepared_raw(server_set: ServerSet) -> psi.PreparedSetup:
    return prepare_setup(
        server_set, PSIParams(max_client_items=1_000, structure=SetupStructure.RAW), workers=1
    )


def client_set(overlap: int, outside: int, seed: int = 0) -> tuple[list[str], set[str]]:
    """``overlap`` random members of the server set and ``outside`` non-members, shuffled."""
    rng = random.Random(seed)
    inside = [uscc_for(i) for i in rng.sample(range(SERVER_N), overlap)]
    others = [uscc_for(SERVER_N + 10_000 + i) for i in rng.sample(range(100_000), outside)]
    items = inside + others
    rng.shuffle(items)
    return items, set(inside)


def wrong_check_character(code: str) -> str:
    return code[:17] + ("0" if code[17] != "0" else "1")


def session(
    setup: psi.PreparedSetup, items: list[str], *, reveal: bool
) -> tuple[PSIClient, PSIServer, bytes, bytes]:
    client = PSIClient(items, reveal_intersection=reveal, max_items=setup.params.max_client_items)
    server = PSIServer(setup, reveal_intersection=reveal)
    request = client.create_request()
    return client, server, request, server.process_request(request)


# --- correctness ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("structure", ["gcs", "raw"])
@pytest.mark.parametrize(("overlap", "outside", "seed"), [(0, 40, 1), (1, 0, 2), (37, 63, 3), (120, 5, 4)])
def test_intersection_is_correct(
    request: pytest.FixtureRequest, structure: str, overlap: int, outside: int, seed: int
) -> None:
    setup = request.getfixturevalue("prepared" if structure == "gcs" else "prepared_raw")
    items, expected = client_set(overlap, outside, seed)
    result, _ = run_locally(items, setup, reveal_intersection=True)
    assert result.intersection == expected
    assert result.size == overlap
    assert result.client_set_size == len(items)
    assert result.server_set_size == SERVER_N


@pytest.mark.parametrize("structure", ["gcs", "raw"])
def test_size_only_mode_gives_only_the_size(request: pytest.FixtureRequest, structure: str) -> None:
    setup = request.getfixturevalue("prepared" if structure == "gcs" else "prepared_raw")
    items, expected = client_set(25, 75, seed=7)
    client, server, _, response = session(setup, items, reveal=False)
    result = client.finish(server.setup_message(), response)
    assert result.size == len(expected)
    assert result.intersection is None
    # The server sorts its answer, so the order of the points says nothing about which items matched...
    points = decode_response(response).points
    assert list(points) == sorted(points)
    # ...and the library refuses to name the matches to a size-only client.
    shard = psi._library_setup(decode_setup(server.setup_message())._parsed[0], setup.params.structure)
    resp = lib.Response()
    resp.encrypted_elements.extend(points)
    with pytest.raises(RuntimeError, match="reveal_intersection == false"):
        client._client.GetIntersection(shard, resp)


def test_client_items_are_normalised_and_deduplicated(prepared: psi.PreparedSetup) -> None:
    member = uscc_for(5)
    result, transcript = run_locally(
        [member.lower(), f"  {member} ", member], prepared, reveal_intersection=True
    )
    assert result.intersection == {member}
    assert result.client_set_size == 1
    assert transcript.client_set_size == 1


def test_empty_server_set_gives_an_empty_intersection() -> None:
    setup = prepare_setup(ServerSet.of([]), SMALL, workers=1)
    result, _ = run_locally([uscc_for(1), uscc_for(2)], setup, reveal_intersection=True)
    assert result.size == 0
    assert result.intersection == frozenset()
    assert result.server_set_size == 0


def test_sharded_setup_gives_the_same_result_as_unsharded(server_set: ServerSet) -> None:
    items, expected = client_set(80, 120, seed=11)
    for shards in (1, 2, 5):
        setup = prepare_setup(server_set, SMALL, shards=shards, workers=1)
        assert setup.shard_count == shards
        for reveal in (True, False):
            result, _ = run_locally(items, setup, reveal_intersection=reveal)
            assert result.size == len(expected)
            if reveal:
                assert result.intersection == expected


def test_parallel_setup_in_spawned_workers_gives_the_same_result(server_set: ServerSet) -> None:
    items, expected = client_set(50, 50, seed=12)
    for structure in SetupStructure:
        setup = prepare_setup(
            server_set, PSIParams(max_client_items=1_000, structure=structure), shards=2, workers=2
        )
        assert setup.shard_count == (2 if structure is SetupStructure.GCS else 1)  # RAW shards are merged
        result, _ = run_locally(items, setup, reveal_intersection=True)
        assert result.intersection == expected


def test_shards_are_a_secret_random_partition(server_set: ServerSet, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not by USCC order: otherwise a size-only client could tell per-shard counts apart by item prefix."""
    seen: list[list[str]] = []
    real = psi._make_shard

    def spy(key: bytes, items: list[str], *args: object) -> bytes:
        seen.append(list(items))
        return real(key, items, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(psi, "_make_shard", spy)
    prepare_setup(server_set, SMALL, shards=3, workers=1)
    prepare_setup(server_set, SMALL, shards=3, workers=1)
    first, second = seen[:3], seen[3:]
    assert sorted(x for part in first for x in part) == list(server_set.items)
    assert all(abs(len(p) - SERVER_N / 3) <= 1 for p in first)
    rank = {x: i for i, x in enumerate(server_set.items)}
    for part in first:  # not contiguous ranges of the sorted set (which would follow the USCC prefix)
        ranks = [rank[x] for x in part]
        assert max(ranks) - min(ranks) + 1 > 2 * len(part)
    assert [set(p) for p in first] != [set(p) for p in second]  # fresh partition each time


def test_each_setup_has_a_fresh_server_key(server_set: ServerSet) -> None:
    a = prepare_setup(server_set, SMALL, shards=1, workers=1)
    b = prepare_setup(server_set, SMALL, shards=1, workers=1)
    assert a.set_digest == b.set_digest
    assert a._server_key != b._server_key
    assert a.message != b.message


def test_prepared_setup_repr_hides_the_key(prepared: psi.PreparedSetup) -> None:
    assert prepared._server_key.hex() not in repr(prepared)
    assert "hidden" in repr(prepared)


# --- the setup cache ------------------------------------------------------------------------------------


def test_cache_returns_the_same_setup_for_the_same_set(server_set: ServerSet) -> None:
    cache = SetupCache()
    first, outcome = cache.get_or_prepare("bank-a", "credit", server_set, SMALL, workers=1)
    assert outcome is CacheOutcome.MISS
    again = ServerSet.of(reversed(server_set.items))  # same set, other order: same digest
    second, outcome = cache.get_or_prepare("bank-a", "credit", again, SMALL, workers=1)
    assert outcome is CacheOutcome.HIT
    assert second is first
    items, expected = client_set(10, 10, seed=21)
    assert run_locally(items, second, reveal_intersection=True)[0].intersection == expected


def test_cache_is_invalidated_by_a_changed_set(server_set: ServerSet) -> None:
    cache = SetupCache()
    old, _ = cache.get_or_prepare("bank-a", "credit", server_set, SMALL, workers=1)
    revoked = ServerSet.of(server_set.items[1:])  # one subject withdrew consent
    assert revoked.digest != server_set.digest
    assert cache.lookup("bank-a", "credit", revoked, SMALL).outcome is CacheOutcome.SET_CHANGED
    assert len(cache) == 0  # the stale entry (and its key) is gone
    new, outcome = cache.get_or_prepare("bank-a", "credit", revoked, SMALL, workers=1)
    assert outcome is CacheOutcome.MISS
    assert new is not old and new._server_key != old._server_key
    withdrawn = server_set.items[0]
    result, _ = run_locally([withdrawn, server_set.items[1]], new, reveal_intersection=True)
    assert result.intersection == {server_set.items[1]}


def test_cache_explicit_invalidation_and_scoping(server_set: ServerSet) -> None:
    cache = SetupCache()
    setup = prepare_setup(server_set, SMALL, shards=1, workers=1)
    cache.store("bank-a", "credit", setup)
    cache.store("bank-a", "marketing", setup)
    cache.store("bank-b", "credit", setup)
    assert cache.lookup("bank-c", "credit", server_set, SMALL).outcome is CacheOutcome.MISS
    assert cache.invalidate("bank-a", "credit") == 1
    assert cache.lookup("bank-a", "credit", server_set, SMALL).outcome is CacheOutcome.MISS
    assert cache.lookup("bank-a", "marketing", server_set, SMALL).outcome is CacheOutcome.HIT
    assert cache.invalidate("bank-a") == 1
    assert cache.lookup("bank-b", "credit", server_set, SMALL).outcome is CacheOutcome.HIT
    other = PSIParams(max_client_items=500)
    assert cache.lookup("bank-b", "credit", server_set, other).outcome is CacheOutcome.PARAMS_CHANGED
    assert len(cache) == 0


def test_cache_lifetime_and_use_count_are_bounded(server_set: ServerSet) -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    cache = SetupCache(max_age=timedelta(minutes=10), max_uses=2)
    setup = prepare_setup(server_set, SMALL, shards=1, workers=1, now=t0)
    cache.store("bank-a", "credit", setup)
    lookup = cache.lookup_at_time
    assert (
        lookup("bank-a", "credit", server_set, SMALL, t0 + timedelta(minutes=9)).outcome is CacheOutcome.HIT
    )
    assert (
        lookup("bank-a", "credit", server_set, SMALL, t0 + timedelta(minutes=10)).outcome
        is CacheOutcome.EXPIRED
    )
    cache.store("bank-a", "credit", setup)
    assert lookup("bank-a", "credit", server_set, SMALL, t0).outcome is CacheOutcome.HIT
    assert lookup("bank-a", "credit", server_set, SMALL, t0).outcome is CacheOutcome.HIT
    assert lookup("bank-a", "credit", server_set, SMALL, t0).outcome is CacheOutcome.USED_UP
    with pytest.raises(ValueError, match="max_age"):
        SetupCache(max_age=psi.MAX_SETUP_AGE + timedelta(seconds=1))
    small = SetupCache(max_entries=2)
    for bank in ("a", "b", "c"):
        small.store(bank, "credit", setup)
    assert len(small) == 2
    assert small.lookup("a", "credit", server_set, SMALL).outcome is CacheOutcome.MISS  # oldest evicted


# --- what each party can observe ----------------------------------------------------------------------


def test_server_sees_only_the_request_and_learns_only_the_client_set_size(
    prepared: psi.PreparedSetup,
) -> None:
    items, _ = client_set(30, 70, seed=31)
    _, server, request, _ = session(prepared, items, reveal=True)
    for item in items:  # neither the items nor their plain hashes are on the wire
        assert item.encode() not in request
        assert hashlib.sha256(item.encode()).digest()[:8] not in request
    assert len(request) == 4 + 2 + 1 + 4 + 33 * len(items)
    transcript = server.transcript()
    assert transcript.client_set_size == len(items)
    assert transcript.server_set_size == SERVER_N
    assert set(vars(server)) == {
        "_setup",
        "reveal_intersection",
        "stage",
        "_client_set_size",
        "_request_digest",
        "_response_digest",
    }
    # A fresh client key per session: the same customer list gives unlinkable requests.
    again = PSIClient(items, reveal_intersection=True, max_items=1_000).create_request()
    assert not set(decode_request(request).points) & set(decode_request(again).points)


def test_client_view_reveals_the_server_set_size_only_through_the_setup(server_set: ServerSet) -> None:
    other = ServerSet.of(uscc_for(50_000 + i) for i in range(SERVER_N))
    bigger = ServerSet.of(uscc_for(i) for i in range(SERVER_N * 2))
    raw = PSIParams(max_client_items=1_000, structure=SetupStructure.RAW)
    setups = [prepare_setup(s, raw, workers=1) for s in (server_set, other, bigger)]
    # Same-size sets give same-size setups; the size is stated (and implied by the structure).
    assert len(setups[0].message) == len(setups[1].message) < len(setups[2].message)
    assert [decode_setup(s.message).server_set_size for s in setups] == [SERVER_N, SERVER_N, 2 * SERVER_N]
    # The response depends only on the client's own set size, not on the server set or the overlap.
    items, _ = client_set(40, 60, seed=41)
    lengths = {len(session(s, items, reveal=True)[3]) for s in setups}
    assert lengths == {4 + 2 + 16 + 16 + 4 + 33 * len(items)}


def test_gcs_false_positive_bound_is_stated(prepared: psi.PreparedSetup) -> None:
    result, _ = run_locally([uscc_for(1)], prepared, reveal_intersection=True)
    assert result.fpr == SMALL.fpr
    assert decode_setup(prepared.message).fpr == SMALL.fpr


# --- limits and invalid USCCs ---------------------------------------------------------------------------


def test_client_set_above_the_limit_is_refused_before_any_work() -> None:
    with pytest.raises(PSISetTooLarge, match="at most 10"):
        PSIClient(["not even a USCC"] * 11, reveal_intersection=True, max_items=10)


def test_request_above_the_setup_limit_is_refused_by_the_server(server_set: ServerSet) -> None:
    setup = prepare_setup(server_set, PSIParams(max_client_items=5), workers=1)
    request = PSIClient(
        [uscc_for(i) for i in range(6)], reveal_intersection=True, max_items=6
    ).create_request()
    server = PSIServer(setup, reveal_intersection=True)
    with pytest.raises(PSISetTooLarge, match="at most 5"):
        server.process_request(request)
    assert server.stage is ServerStage.AWAITING_REQUEST


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (wrong_check_character(uscc_for(3)), "check character"),
        (uscc_for(3)[:17], "18 characters"),
        ("91320500MA1XXXXXI0", "not allowed"),
        (12345, "string"),
    ],
)
def test_invalid_usccs_are_refused(bad: object, why: str) -> None:
    with pytest.raises(InvalidUSCC, match=why) as info:
        PSIClient([uscc_for(1), bad], reveal_intersection=True)  # type: ignore[list-item]
    assert info.value.details == {"index": 1}


def test_empty_and_wrongly_typed_client_sets_are_refused() -> None:
    with pytest.raises(InvalidInput, match="empty"):
        PSIClient([], reveal_intersection=True)
    with pytest.raises(TypeError, match="single string"):
        PSIClient(uscc_for(1), reveal_intersection=True)


def test_server_set_items_are_validated_when_the_setup_is_made() -> None:
    with pytest.raises(InvalidUSCC, match="18-character"):
        ServerSet.of([uscc_for(1), "short"])
    with pytest.raises(InvalidUSCC, match="check character"):
        prepare_setup(ServerSet.of([uscc_for(1), wrong_check_character(uscc_for(2))]), SMALL, workers=1)
    with pytest.raises(InvalidUSCC, match="normalised"):
        prepare_setup(ServerSet.of([uscc_for(1).lower()]), SMALL, workers=1)  # 91320500eapn7m482p


def test_parameters_are_checked_up_front(server_set: ServerSet) -> None:
    with pytest.raises(ValueError, match="fpr"):
        PSIParams(fpr=0.0)
    with pytest.raises(ValueError, match="max_client_items"):
        PSIParams(max_client_items=psi.MAX_CLIENT_ITEMS + 1)
    with pytest.raises(ValueError, match="shards"):
        prepare_setup(server_set, SMALL, shards=0, workers=1)
    with pytest.raises(ValueError, match="hash range"):  # the library's int64 would overflow
        prepare_setup(server_set, PSIParams(fpr=1e-15, max_client_items=1_000_000), workers=1)


def test_client_refuses_a_setup_with_a_worse_false_positive_rate(server_set: ServerSet) -> None:
    setup = prepare_setup(server_set, PSIParams(fpr=0.01, max_client_items=100), workers=1)
    client = PSIClient([uscc_for(1)], reveal_intersection=True, max_items=100, max_fpr=1e-6)
    server = PSIServer(setup, reveal_intersection=True)
    response = server.process_request(client.create_request())
    with pytest.raises(InvalidPSIMessage, match="false-positive rate"):
        client.finish(server.setup_message(), response)


# --- stages ----------------------------------------------------------------------------------------------


def test_stages_are_enforced(prepared: psi.PreparedSetup) -> None:
    client = PSIClient([uscc_for(1)], reveal_intersection=True, max_items=1_000)
    server = PSIServer(prepared, reveal_intersection=True)
    with pytest.raises(PSIStageError):
        client.finish(server.setup_message(), b"")
    request = client.create_request()
    with pytest.raises(PSIStageError):
        client.create_request()
    response = server.process_request(request)
    assert server.stage is ServerStage.RESPONDED
    with pytest.raises(PSIStageError, match="already answered"):
        server.process_request(request)  # one request per session
    assert client.finish(server.setup_message(), response).size == 1
    assert client.stage is ClientStage.DONE
    with pytest.raises(PSIStageError):
        client.finish(server.setup_message(), response)


def test_mode_mismatch_is_refused(prepared: psi.PreparedSetup) -> None:
    request = PSIClient([uscc_for(1)], reveal_intersection=True, max_items=1_000).create_request()
    with pytest.raises(InvalidPSIMessage, match="asks for the intersection"):
        PSIServer(prepared, reveal_intersection=False).process_request(request)


# --- hostile bytes ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def valid_messages(prepared: psi.PreparedSetup) -> dict[str, bytes]:
    _, server, request, response = session(prepared, [uscc_for(i) for i in range(5)], reveal=True)
    return {"setup": server.setup_message(), "request": request, "response": response}


DECODERS = {"setup": decode_setup, "request": decode_request, "response": decode_response}


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=600),
    prefix=st.sampled_from([b"", b"PPSI\x01\x01", b"PPSI\x01\x02", b"PPSI\x01\x03"]),
)
def test_random_bytes_are_a_clear_error(data: bytes, prefix: bytes) -> None:
    for name, decode in DECODERS.items():
        try:
            decode(prefix + data)
        except InvalidInput:
            pass
        else:  # only a setup with random protobuf shards can parse; it must still be a well-formed message
            assert name == "setup"


@pytest.mark.parametrize("name", ["setup", "request", "response"])
def test_truncated_empty_and_extended_messages_are_refused(
    valid_messages: dict[str, bytes], name: str
) -> None:
    good = valid_messages[name]
    DECODERS[name](good)
    cuts = sorted({0, 1, 4, 5, 6, 7, 10, 20, len(good) // 2, len(good) - 33, len(good) - 1})
    for cut in cuts:
        with pytest.raises(InvalidPSIMessage):
            DECODERS[name](good[:cut])
    with pytest.raises(InvalidPSIMessage):
        DECODERS[name](good + b"\x00")
    with pytest.raises(InvalidPSIMessage, match="must be bytes"):
        DECODERS[name](good.decode("latin-1"))  # type: ignore[arg-type]


def test_wrong_type_of_message_is_refused(valid_messages: dict[str, bytes]) -> None:
    for expected, decode in DECODERS.items():
        for name, data in valid_messages.items():
            if name != expected:
                with pytest.raises(InvalidPSIMessage, match=f"expected a PSI {expected.upper()} message"):
                    decode(data)


def test_hostile_requests_to_the_server(
    prepared: psi.PreparedSetup, valid_messages: dict[str, bytes]
) -> None:
    rng = random.Random(5)
    hostile = [
        b"",
        os.urandom(100),
        valid_messages["setup"],
        valid_messages["response"],
        valid_messages["request"][:-1],
        RequestMessage(True, (NOT_A_POINT,)).to_bytes(),
        RequestMessage(True, (X_TOO_LARGE,)).to_bytes(),
        RequestMessage(True, tuple(b"\x03" + rng.randbytes(32) for _ in range(20))).to_bytes(),
        RequestMessage(True, (b"\x04" + bytes(32),)).to_bytes(),
    ]
    hostile.append(hostile[-1][:7] + (2**32 - 1).to_bytes(4, "big") + hostile[-1][11:])  # count lies
    for data in hostile:
        server = PSIServer(prepared, reveal_intersection=True)
        with pytest.raises(InvalidInput):
            server.process_request(data)
        assert server.stage is ServerStage.AWAITING_REQUEST and server.transcript().client_set_size is None
    # ...and the server still works afterwards.
    server = PSIServer(prepared, reveal_intersection=True)
    assert decode_response(server.process_request(valid_messages["request"]))


def test_hostile_responses_to_the_client(prepared: psi.PreparedSetup) -> None:
    items = [uscc_for(i) for i in range(5)]
    client, server, _, response = session(prepared, items, reveal=True)
    setup = server.setup_message()
    good = decode_response(response)
    forged = [
        ResponseMessage(good.request_digest, good.setup_digest, good.points[:-1]).to_bytes(),
        ResponseMessage(b"\x00" * 16, good.setup_digest, good.points).to_bytes(),
        ResponseMessage(good.request_digest, b"\x00" * 16, good.points).to_bytes(),
        ResponseMessage(good.request_digest, good.setup_digest, (NOT_A_POINT,) * 5).to_bytes(),
    ]
    for data in forged:
        with pytest.raises(InvalidPSIMessage):
            client.finish(setup, data)
        assert client.stage is ClientStage.AWAITING_RESPONSE
    other = prepare_setup(ServerSet.of(items), SMALL, workers=1).message  # another key and set
    with pytest.raises(InvalidPSIMessage, match="not made with this setup"):
        client.finish(other, response)
    assert client.finish(setup, response).size == 5  # the session survives all of it


@settings(max_examples=50, deadline=None)
@given(
    reveal=st.booleans(),
    points=st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=20),
    prefix=st.sampled_from([2, 3]),
    digests=st.tuples(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16)),
)
def test_message_round_trips(
    reveal: bool, points: list[bytes], prefix: int, digests: tuple[bytes, bytes]
) -> None:
    pts = tuple(bytes([prefix]) + p for p in points)
    request = RequestMessage(reveal, pts)
    assert decode_request(request.to_bytes()) == request
    response = ResponseMessage(*digests, pts)
    assert decode_response(response.to_bytes()) == response
    shard = lib.ServerSetup()
    shard.raw.encrypted_elements.extend(sorted(set(pts)))
    setup = SetupMessage(SetupStructure.RAW, 0.5, 7, len(set(pts)), (shard.SerializeToString(),))
    assert decode_setup(setup.to_bytes()) == setup


_HOSTILE_SETUPS = textwrap.dedent(
    """
    import os, random, sys
    from private_set_intersection import python as lib
    import protocols.psi as psi
    from protocols.psi import *
    from tests.helpers import uscc_for

    items = [uscc_for(i) for i in range(300)]
    setup = prepare_setup(ServerSet.of(items), PSIParams(max_client_items=100), shards=2, workers=1)
    good = decode_setup(setup.message)
    gcs = lib.ServerSetup.FromString(good.shards[0])

    def shard(**fields):
        s = lib.ServerSetup()
        kind = fields.pop("kind", "gcs")
        part = getattr(s, kind)
        for name, value in fields.items():
            setattr(part, name, value)
        return s.SerializeToString()

    hostile = {
        "gcs_negative_div": shard(div=-1, hash_range=gcs.gcs.hash_range, bits=gcs.gcs.bits),
        "gcs_huge_div": shard(div=2_000_000_000, hash_range=gcs.gcs.hash_range, bits=gcs.gcs.bits),
        "gcs_zero_hash_range": shard(div=gcs.gcs.div, hash_range=0, bits=gcs.gcs.bits),
        "bloom_empty_bits": shard(kind="bloom_filter", num_hash_functions=10, bits=b""),
        "bloom_huge_k": shard(kind="bloom_filter", num_hash_functions=2**31 - 1, bits=b"abc"),
        "nothing": b"",
        "raw_short_points": shard(kind="raw"),
    }
    rng = random.Random(0)
    for i in range(300):  # structurally valid GCS with truncated or random bits: reaches the library
        bits = gcs.gcs.bits[: rng.randrange(len(gcs.gcs.bits))] if i % 2 else rng.randbytes(rng.randrange(1, 400))
        hostile[f"gcs_bits_{i}"] = shard(div=rng.randrange(0, 63), hash_range=rng.randrange(1, 2**62), bits=bits)
    refused = processed = 0
    for name, blob in hostile.items():
        message = SetupMessage(good.structure, good.fpr, good.max_client_items, 300, (blob,)).to_bytes()
        client = PSIClient(items[:20] + [uscc_for(10_000)], reveal_intersection=True, max_items=100)
        server = PSIServer(setup, reveal_intersection=True)
        real = decode_response(server.process_request(client.create_request()))
        response = ResponseMessage(real.request_digest, psi.message_digest(message), real.points).to_bytes()
        try:
            client.finish(message, response)
            processed += 1
        except InvalidPSIMessage:
            refused += 1
    print("alive", refused, processed)
    """
)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    inherited = os.environ.get("PYTHONPATH")  # e.g. client/ in a development checkout without make install
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *([inherited] if inherited else [])])}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_hostile_setups_never_crash_the_client_process() -> None:
    """Setups the library would abort, hang or read out of bounds on are refused or made safe."""
    done = _run(_HOSTILE_SETUPS)
    assert done.returncode == 0, done.stderr[-2000:]
    alive, refused, processed = done.stdout.split()
    assert alive == "alive" and int(refused) >= 7 and int(refused) + int(processed) == 307


@pytest.mark.slow
def test_the_library_alone_aborts_on_a_hostile_setup() -> None:
    """The control: without the checks above, one hostile field kills the process (SIGABRT)."""
    code = textwrap.dedent(
        """
        from private_set_intersection import python as lib
        server = lib.server.CreateWithNewKey(True)
        client = lib.client.CreateWithNewKey(True)
        setup = server.CreateSetupMessage(1e-6, 10, ["a", "b"], lib.DataStructure.GCS)
        response = server.ProcessRequest(client.CreateRequest(["a"]))
        setup.gcs.hash_range = 0
        client.GetIntersection(setup, response)
        print("survived")
        """
    )
    done = _run(code)
    assert done.returncode != 0 and "survived" not in done.stdout


def test_message_type_constants_are_distinct() -> None:
    assert {m.value for m in MessageType} == {1, 2, 3}
