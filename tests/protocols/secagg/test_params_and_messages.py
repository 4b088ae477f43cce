"""The round's parameters and frames (``protocols.secagg.params``, ``protocols.secagg.messages``): checked at the
door, each refusal a protocol error with its code; every frame round-trips."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import InvalidParameters
from protocols.secagg import (
    MAX_DIM,
    MODULUS,
    SHAMIR_PRIME,
    InvalidSecAggMessage,
    MsgType,
    RoundInfo,
    SecAggClient,
    SecAggParams,
    SecAggStageError,
    decode_frame,
    encode_frame,
    peek_type,
    prg,
    shamir_split,
    survivors_frame,
)
from protocols.secagg.messages import Reader, _parse_masked, ids_body, parse_ids


def test_parameters_are_checked_at_the_door() -> None:
    with pytest.raises(InvalidParameters, match="majority"):
        SecAggParams(n=4, threshold=2, dim=1, clip_norm=1.0)
    with pytest.raises(InvalidParameters, match="wrap"):
        SecAggParams(n=10, threshold=6, dim=1, clip_norm=1.0, levels=1 << 30, max_weight=1 << 30)
    with pytest.raises(InvalidParameters, match="clip_norm"):
        SecAggParams(n=3, threshold=2, dim=1, clip_norm=float("nan"))
    with pytest.raises(
        InvalidParameters, match="3 to 1000 banks"
    ):  # two banks would each learn the other's update
        SecAggParams(n=2, threshold=2, dim=1, clip_norm=1.0)
    assert SHAMIR_PRIME > 2**256


def test_each_bad_parameter_is_a_protocol_error_with_its_code() -> None:
    cases = [
        lambda: SecAggParams(n=3, threshold=2, dim=0, clip_norm=1.0),
        lambda: SecAggParams(n=3, threshold=2, dim=MAX_DIM + 1, clip_norm=1.0),
        lambda: SecAggClient(RoundInfo("f", 1, SecAggParams(n=3, threshold=2, dim=1, clip_norm=1.0)), 4),
        lambda: shamir_split(SHAMIR_PRIME, 2, [1, 2]),
        lambda: shamir_split(1, 3, [1, 2]),
        lambda: prg(b"short", 4),
    ]
    for call in cases:
        with pytest.raises(InvalidParameters) as raised:
            call()
        assert raised.value.code == "invalid_parameters"


INFO = RoundInfo("fed", 7, SecAggParams(n=5, threshold=3, dim=4, clip_norm=1.0))


@settings(max_examples=100, deadline=None)
@given(mtype=st.sampled_from(list(MsgType)), sender=st.integers(1, 5), body=st.binary(max_size=200))
def test_frame_round_trip(mtype: MsgType, sender: int, body: bytes) -> None:
    frame = decode_frame(INFO, encode_frame(INFO, mtype, sender, body), mtype)
    assert (frame.mtype, frame.round_no, frame.sender, frame.body) == (mtype, 7, sender, body)
    assert peek_type(encode_frame(INFO, mtype, sender, body)) is mtype


@settings(max_examples=100, deadline=None)
@given(u2=st.sets(st.integers(1, 5), min_size=1), data=st.data())
def test_survivors_round_trip(u2: set[int], data: st.DataObject) -> None:
    u3 = data.draw(st.sets(st.sampled_from(sorted(u2))))
    r = Reader(decode_frame(INFO, survivors_frame(INFO, u2, u3), MsgType.SURVIVORS).body, "SURVIVORS")
    assert {r.u16() for _ in range(r.u16())} == u2
    assert {r.u16() for _ in range(r.u16())} == u3
    r.end()
    assert parse_ids(INFO, encode_frame(INFO, MsgType.SURVIVORS, 1, ids_body(u3)), MsgType.SURVIVORS) == u3


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.integers(0, MODULUS - 1), min_size=5, max_size=5), sender=st.integers(1, 5))
def test_masked_input_round_trip(values: list[int], sender: int) -> None:
    y = np.array(values, dtype=np.uint64)
    body = struct.pack(">I", len(y)) + y.astype(">u8").tobytes()
    got_sender, got = _parse_masked(INFO, encode_frame(INFO, MsgType.MASKED_INPUT, sender, body))
    assert got_sender == sender and got.tolist() == values


MALFORMED = {
    "not-bytes": (lambda: decode_frame(INFO, "PSAG", MsgType.UNMASK), InvalidSecAggMessage),  # type: ignore[arg-type]
    "too-short": (lambda: decode_frame(INFO, b"PSAG", MsgType.UNMASK), InvalidSecAggMessage),
    "bad-magic": (lambda: peek_type(b"XXXX" + bytes(50)), InvalidSecAggMessage),
    "unknown-type": (lambda: peek_type(b"PSAG\x01\x63" + bytes(50)), InvalidSecAggMessage),
    "other-version": (lambda: peek_type(b"PSAG\x02\x01" + bytes(50)), InvalidSecAggMessage),
    "expected-another-type": (lambda: decode_frame(INFO, encode_frame(INFO, MsgType.KEYS, 1, b""), MsgType.SHARES), SecAggStageError),
    "another-round": (lambda: decode_frame(INFO, encode_frame(RoundInfo("fed", 8, INFO.params), MsgType.KEYS, 1, b""), MsgType.KEYS), SecAggStageError),
    "sender-not-in-round": (lambda: decode_frame(INFO, encode_frame(INFO, MsgType.KEYS, 6, b""), MsgType.KEYS), SecAggStageError),
    "trailing-bytes": (lambda: parse_ids(INFO, encode_frame(INFO, MsgType.SURVIVORS, 1, ids_body({1}) + b"\x00"), MsgType.SURVIVORS), InvalidSecAggMessage),
    "truncated-ids": (lambda: parse_ids(INFO, encode_frame(INFO, MsgType.SURVIVORS, 1, ids_body({1, 2})[:-1]), MsgType.SURVIVORS), InvalidSecAggMessage),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_each_malformed_frame_raises_its_protocol_error_and_code(case: str) -> None:
    call, error = MALFORMED[case]
    with pytest.raises(error) as raised:
        call()
    assert raised.value.code == error.code
    assert not isinstance(raised.value, ValueError)
