"""The bank's half (``protocols.psi.client``): correct intersections in both modes and structures, its own
checks, and hostile server messages refused or made safe (the library alone would abort)."""

from __future__ import annotations

import textwrap

import pytest
from private_set_intersection import python as lib

import protocols.psi as psi
from protocols.errors import InvalidParameters
from protocols.psi import (
    ClientStage,
    InvalidPSIMessage,
    PSIClient,
    PSIParams,
    PSIServer,
    PSISetTooLarge,
    PSIStageError,
    ResponseMessage,
    ServerSet,
    ServerStage,
    decode_response,
    decode_setup,
    prepare_setup,
    run_locally,
)
from protocols.psi.messages import library_setup
from tests.helpers import uscc_for
from tests.protocols.psi.common import (
    NOT_A_POINT,
    SERVER_N,
    SMALL,
    NotAnItem,
    _run,
    canonical,
    client_set,
    session,
    wrong_check_character,
)


@pytest.mark.parametrize("structure", ["gcs", "raw"])
@pytest.mark.parametrize(("overlap", "outside", "seed"), [(0, 40, 1), (1, 0, 2), (37, 63, 3), (120, 5, 4)])
def test_intersection_is_correct(
    request: pytest.FixtureRequest, structure: str, overlap: int, outside: int, seed: int
) -> None:
    setup = request.getfixturevalue("prepared" if structure == "gcs" else "prepared_raw")
    items, expected = client_set(overlap, outside, seed)
    result, _ = run_locally(items, setup, normalise=canonical, reveal_intersection=True)
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
    shard = library_setup(decode_setup(server.setup_message())._parsed[0], setup.params.structure)
    resp = lib.Response()
    resp.encrypted_elements.extend(points)
    with pytest.raises(RuntimeError, match="reveal_intersection == false"):
        client._client.GetIntersection(shard, resp)


def test_gcs_false_positive_bound_is_stated(prepared: psi.PreparedSetup) -> None:
    result, _ = run_locally([uscc_for(1)], prepared, normalise=canonical, reveal_intersection=True)
    assert result.fpr == SMALL.fpr
    assert decode_setup(prepared.message).fpr == SMALL.fpr


def test_client_items_are_normalised_and_deduplicated(prepared: psi.PreparedSetup) -> None:
    member = uscc_for(5)
    result, transcript = run_locally(
        [member.lower(), f"  {member} ", member], prepared, normalise=canonical, reveal_intersection=True
    )
    assert result.intersection == {member}
    assert result.client_set_size == 1
    assert transcript.client_set_size == 1


def test_client_set_above_the_limit_is_refused_before_any_work() -> None:
    with pytest.raises(PSISetTooLarge, match="at most 10"):
        PSIClient(["not even a USCC"] * 11, normalise=canonical, reveal_intersection=True, max_items=10)


@pytest.mark.parametrize(("bad", "why"), [(uscc_for(3)[:17], "18 characters"), (12345, "string")])
def test_an_invalid_item_raises_the_callers_error_naming_its_position(bad: object, why: str) -> None:
    """The protocol knows nothing of what an item is: the caller's ``normalise`` decides, with its own error."""
    with pytest.raises(NotAnItem, match=why) as info:
        PSIClient([uscc_for(1), bad], normalise=canonical, reveal_intersection=True)  # type: ignore[list-item]
    assert info.value.__notes__ == ["customer list item 1"]


def test_the_services_uscc_check_plugs_in() -> None:
    from pps.errors import InvalidUSCC
    from pps.identity.uscc import validate_uscc

    with pytest.raises(InvalidUSCC, match="check character"):
        PSIClient([wrong_check_character(uscc_for(3))], normalise=validate_uscc, reveal_intersection=True)


def test_empty_and_wrongly_typed_client_sets_are_refused() -> None:
    with pytest.raises(InvalidParameters, match="empty") as empty:
        PSIClient([], normalise=canonical, reveal_intersection=True)
    assert empty.value.code == "invalid_parameters"
    with pytest.raises(TypeError, match="single string"):
        PSIClient(uscc_for(1), normalise=canonical, reveal_intersection=True)


def test_client_refuses_a_setup_with_a_worse_false_positive_rate(server_set: ServerSet) -> None:
    setup = prepare_setup(
        server_set, PSIParams(fpr=0.01, max_client_items=100), normalise=canonical, workers=1
    )
    client = PSIClient(
        [uscc_for(1)], normalise=canonical, reveal_intersection=True, max_items=100, max_fpr=1e-6
    )
    server = PSIServer(setup, reveal_intersection=True)
    response = server.process_request(client.create_request())
    with pytest.raises(InvalidPSIMessage, match="false-positive rate"):
        client.finish(server.setup_message(), response)


def test_stages_are_enforced(prepared: psi.PreparedSetup) -> None:
    client = PSIClient([uscc_for(1)], normalise=canonical, reveal_intersection=True, max_items=1_000)
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
    other = prepare_setup(
        ServerSet.of(items), SMALL, normalise=canonical, workers=1
    ).message  # another key and set
    with pytest.raises(InvalidPSIMessage, match="not made with this setup"):
        client.finish(other, response)
    assert client.finish(setup, response).size == 5  # the session survives all of it


_HOSTILE_SETUPS = textwrap.dedent(
    """
    import os, random, sys
    from private_set_intersection import python as lib
    import protocols.psi as psi
    from protocols.psi import *
    from tests.helpers import uscc_for
    from tests.protocols.psi.common import canonical

    items = [uscc_for(i) for i in range(300)]
    setup = prepare_setup(ServerSet.of(items), PSIParams(max_client_items=100), normalise=canonical, shards=2, workers=1)
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
        client = PSIClient(items[:20] + [uscc_for(10_000)], normalise=canonical, reveal_intersection=True, max_items=100)
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
