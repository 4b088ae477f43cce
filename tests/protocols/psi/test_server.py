"""The safe-room's half (``protocols.psi.server``): it learns only the client set's size, one request per
session, and hostile requests change nothing."""

from __future__ import annotations

import hashlib
import os
import random

import pytest

import protocols.psi as psi
from protocols.errors import ProtocolError
from protocols.psi import (
    InvalidPSIMessage,
    PSIClient,
    PSIParams,
    PSIServer,
    PSISetTooLarge,
    RequestMessage,
    ServerSet,
    ServerStage,
    decode_request,
    decode_response,
    prepare_setup,
)
from tests.helpers import uscc_for
from tests.protocols.psi.common import (
    NOT_A_POINT,
    SERVER_N,
    X_TOO_LARGE,
    canonical,
    client_set,
    session,
)


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
    again = PSIClient(items, normalise=canonical, reveal_intersection=True, max_items=1_000).create_request()
    assert not set(decode_request(request).points) & set(decode_request(again).points)


def test_request_above_the_setup_limit_is_refused_by_the_server(server_set: ServerSet) -> None:
    setup = prepare_setup(server_set, PSIParams(max_client_items=5), normalise=canonical, workers=1)
    request = PSIClient(
        [uscc_for(i) for i in range(6)], normalise=canonical, reveal_intersection=True, max_items=6
    ).create_request()
    server = PSIServer(setup, reveal_intersection=True)
    with pytest.raises(PSISetTooLarge, match="at most 5"):
        server.process_request(request)
    assert server.stage is ServerStage.AWAITING_REQUEST


def test_mode_mismatch_is_refused(prepared: psi.PreparedSetup) -> None:
    request = PSIClient(
        [uscc_for(1)], normalise=canonical, reveal_intersection=True, max_items=1_000
    ).create_request()
    with pytest.raises(InvalidPSIMessage, match="asks for the intersection"):
        PSIServer(prepared, reveal_intersection=False).process_request(request)


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
        with pytest.raises(ProtocolError):
            server.process_request(data)
        assert server.stage is ServerStage.AWAITING_REQUEST and server.transcript().client_set_size is None
    # ...and the server still works afterwards.
    server = PSIServer(prepared, reveal_intersection=True)
    assert decode_response(server.process_request(valid_messages["request"]))
