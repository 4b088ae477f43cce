"""The binary bodies and the error envelope: every encode/decode pair round-trips, and what is not the format is
refused with InvalidInput (never an IndexError or a silent misread)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pps_wire import frames
from pps_wire.envelope import ErrorInfo, error_body, parse_error
from pps_wire.errors import InvalidInput

blobs = st.binary(max_size=300)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(blobs, blobs)
def test_psi_results_round_trip(setup: bytes, response: bytes) -> None:
    assert frames.unpack_psi_result(frames.pack_psi_result(setup, response)) == (setup, response)


@given(st.dictionaries(st.text(max_size=10), json_values, max_size=5), blobs)
def test_score_results_round_trip(header: dict[str, object], result: bytes) -> None:
    assert frames.unpack_score_result(frames.pack_score_result(header, result)) == (header, result)


@given(st.lists(blobs, max_size=frames.MAX_FRAMES))
def test_frame_batches_round_trip(batch: list[bytes]) -> None:
    assert frames.unpack_frames(frames.pack_frames(batch)) == batch


@given(st.binary(max_size=64))
def test_garbage_is_refused_cleanly(data: bytes) -> None:
    for unpack in (frames.unpack_psi_result, frames.unpack_score_result, frames.unpack_frames):
        with contextlib.suppress(InvalidInput):
            unpack(data)


def test_the_formats_refuse_what_they_must() -> None:
    packed = frames.pack_frames([b"a", b"bc"])
    with pytest.raises(InvalidInput, match="trailing"):
        frames.unpack_frames(packed + b"x")
    with pytest.raises(InvalidInput, match="truncated"):
        frames.unpack_frames(packed[:-1])
    with pytest.raises(InvalidInput, match="at most"):
        frames.unpack_frames(frames.pack_frames([b""] * (frames.MAX_FRAMES + 1)))
    with pytest.raises(InvalidInput, match="not a PSI result"):
        frames.unpack_psi_result(frames.pack_score_result({}, b""))
    with pytest.raises(InvalidInput, match="JSON object"):
        frames.unpack_score_result(frames.SCORE_RESULT_MAGIC + (2).to_bytes(4, "big") + b"[]")


@given(
    st.text(min_size=1, max_size=30),
    st.text(max_size=80),
    st.none() | st.text(max_size=20),
    st.dictionaries(st.text(max_size=8), json_values, max_size=4),
)
def test_the_error_envelope_round_trips(
    code: str, message: str, rid: str | None, details: dict[str, object]
) -> None:
    import json

    body = json.dumps(error_body(code, message, rid, details)).encode()
    assert parse_error(body) == ErrorInfo(code, message, rid, details)
    assert ErrorInfo(code, message, rid, details).body() == error_body(code, message, rid, details)


@pytest.mark.parametrize(
    "body",
    [b"", b"<html>", b"[]", b'{"error": "x"}', b'{"error": {"code": 1, "message": "m"}}', b'{"detail": "x"}'],
)
def test_what_is_not_an_envelope_is_none(body: bytes) -> None:
    assert parse_error(body) is None
