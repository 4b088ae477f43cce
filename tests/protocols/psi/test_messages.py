"""The PSI frames (``protocols.psi.messages``): round trips, and every malformed, truncated or foreign message
is a protocol error with its code, never a crash."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from private_set_intersection import python as lib

from protocols.psi import (
    InvalidPSIMessage,
    MessageType,
    PSISetTooLarge,
    RequestMessage,
    ResponseMessage,
    SetupMessage,
    SetupStructure,
    decode_request,
    decode_response,
    decode_setup,
)

DECODERS = {"setup": decode_setup, "request": decode_request, "response": decode_response}


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


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=600),
    prefix=st.sampled_from([b"", b"PPSI\x01\x01", b"PPSI\x01\x02", b"PPSI\x01\x03"]),
)
def test_random_bytes_are_a_clear_error(data: bytes, prefix: bytes) -> None:
    for name, decode in DECODERS.items():
        try:
            decode(prefix + data)
        except (InvalidPSIMessage, PSISetTooLarge):
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


def test_message_type_constants_are_distinct() -> None:
    assert {m.value for m in MessageType} == {1, 2, 3}


def frame(kind: int, body: bytes, version: int = 1) -> bytes:
    return b"PPSI" + bytes([version, kind]) + body


POINT = b"\x02" + bytes(32)
MALFORMED = {
    "request-not-bytes": (lambda: decode_request("PPSI"), InvalidPSIMessage),  # type: ignore[arg-type]
    "request-bad-magic": (lambda: decode_request(b"XXSI\x01\x02" + bytes(5)), InvalidPSIMessage),
    "request-other-version": (lambda: decode_request(frame(2, bytes(5), version=9)), InvalidPSIMessage),
    "request-no-header": (lambda: decode_request(frame(2, b"\x01")), InvalidPSIMessage),
    "request-reveal-flag": (lambda: decode_request(frame(2, b"\x07" + (1).to_bytes(4, "big") + POINT)), InvalidPSIMessage),
    "request-no-items": (lambda: decode_request(frame(2, b"\x01" + bytes(4))), InvalidPSIMessage),
    "request-too-many": (lambda: decode_request(frame(2, b"\x01" + (2**24).to_bytes(4, "big"))), PSISetTooLarge),
    "request-count-lies": (lambda: decode_request(frame(2, b"\x01" + (2).to_bytes(4, "big") + POINT)), InvalidPSIMessage),
    "request-not-a-point": (lambda: decode_request(frame(2, b"\x01" + (1).to_bytes(4, "big") + b"\x04" + bytes(32))), InvalidPSIMessage),
    "response-no-header": (lambda: decode_response(frame(3, bytes(20))), InvalidPSIMessage),
    "response-too-many": (lambda: decode_response(frame(3, bytes(32) + (2**24).to_bytes(4, "big"))), InvalidPSIMessage),
    "setup-unknown-structure": (lambda: decode_setup(frame(1, bytes([9]) + bytes(20))), InvalidPSIMessage),
    "setup-bad-fpr": (lambda: decode_setup(frame(1, SetupMessage(SetupStructure.RAW, 0.5, 1, 0, ()).to_bytes()[6:].replace(b"?\xe0", b"\x7f\xf8"))), InvalidPSIMessage),
    "setup-no-shards": (lambda: decode_setup(SetupMessage(SetupStructure.RAW, 0.5, 1, 0, ()).to_bytes()), InvalidPSIMessage),
    "setup-shard-not-protobuf": (lambda: decode_setup(SetupMessage(SetupStructure.RAW, 0.5, 1, 0, (b"\xff",)).to_bytes()), InvalidPSIMessage),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_each_malformed_message_raises_its_protocol_error_and_code(case: str) -> None:
    call, error = MALFORMED[case]
    with pytest.raises(error) as raised:
        call()
    assert raised.value.code == error.code
    assert not isinstance(raised.value, ValueError)
