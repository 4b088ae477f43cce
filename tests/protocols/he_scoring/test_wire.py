"""The MODEL and RESULT frames (``protocols.he_scoring.wire``): round trips, and every malformed frame or
header is a protocol error with its code, never a crash."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.errors import InvalidParameters, ProtocolError
from protocols.he_scoring import (
    EncryptedModelMessage,
    InvalidCiphertext,
    InvalidContext,
    InvalidScoringModel,
    MessageType,
    ModelKind,
    Packing,
    Scorecard,
    ScorecardFeature,
    ScoreResultMessage,
    ScoringLimitExceeded,
    ScoringLimits,
    SlotLayout,
    check_public_context,
    decode_model,
    decode_result,
)
from protocols.he_scoring.wire import frame
from tests.protocols.he_scoring.common import (
    SLOTS,
)

names_strategy = st.lists(
    st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=20),
    min_size=1,
    max_size=6,
    unique=True,
)


@settings(max_examples=60, deadline=None)
@given(
    names=names_strategy,
    blobs=st.lists(st.binary(max_size=50), min_size=0, max_size=8),
    context_id=st.binary(min_size=32, max_size=32).map(bytes.hex),
    packing=st.sampled_from(list(Packing)),
)
def test_model_message_round_trip(names, blobs, context_id, packing) -> None:
    blobs = (blobs * 10)[: len(names) + 1] if blobs else [b""] * (len(names) + 1)
    message = EncryptedModelMessage(
        ModelKind.LOGISTIC, context_id, tuple(names), tuple(blobs), packing=packing
    )
    decoded = decode_model(message.to_bytes())
    assert decoded == message
    assert decoded.digest == message.digest


@settings(max_examples=60, deadline=None)
@given(
    edges=st.lists(
        st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), max_size=4, unique=True).map(
            sorted
        ),
        min_size=1,
        max_size=4,
    ),
    missing=st.lists(st.booleans(), min_size=4, max_size=4),
)
def test_scorecard_message_round_trip(edges, missing) -> None:
    bins = tuple((tuple(e), m) for e, m in zip(edges, missing, strict=False))
    names = tuple(f"f{i}" for i in range(len(bins)))
    count = sum(len(e) + 1 + int(m) for e, m in bins) + 1
    message = EncryptedModelMessage(ModelKind.SCORECARD, "ab" * 32, names, (b"x",) * count, bins)
    assert decode_model(message.to_bytes()) == message


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 5 * SLOTS),
    noise=st.floats(0, 10),
    kind=st.sampled_from(list(ModelKind)),
    packing=st.sampled_from(list(Packing)),
)
def test_result_message_round_trip(n, noise, kind, packing) -> None:
    count = SlotLayout(n, SLOTS, packing).n_ciphertexts
    blobs = tuple(b"r" * i for i in range(count))
    message = ScoreResultMessage(kind, "cd" * 32, "ef" * 32, n, SLOTS, packing, noise, blobs)
    assert decode_result(message.to_bytes()) == message


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(max_size=3000))
def test_random_bytes_are_refused_cleanly(garbage) -> None:
    with pytest.raises(InvalidContext):
        check_public_context(garbage)
    with pytest.raises(InvalidCiphertext):
        decode_model(garbage)
    with pytest.raises(InvalidCiphertext):
        decode_result(garbage)


HOSTILE_VALUES = [None, True, 7, -1, 1.5, "x", [], ["logistic"], {}, {"a": 1}, [[1]], "0" * 64]


@pytest.mark.parametrize("key", ["kind", "context_id", "features", "packing", "bins"])
def test_every_hostile_header_value_is_a_clear_refusal(bank, key: str) -> None:
    """Each header field replaced by values of every JSON type: always a protocol error, never a crash."""
    good = bank.encrypt_scorecard(Scorecard((ScorecardFeature("a", (0.0,), (1.0, 2.0)),)))
    base = {
        "kind": "scorecard",
        "context_id": good.context_id,
        "features": ["a"],
        "packing": "real",
        "bins": [{"edges": [0.0], "missing": False}],
    }
    for value in HOSTILE_VALUES:
        model = frame(MessageType.MODEL, {**base, key: value}, good.ciphertexts)
        try:
            decode_model(model)
        except ProtocolError:
            continue
    result_base = {
        "kind": "logistic",
        "context_id": good.context_id,
        "model_digest": good.context_id,
        "n_subjects": 1,
        "slots": 4096,
        "packing": "real",
        "noise_std": 0.0,
    }
    for value in HOSTILE_VALUES:
        head = {**result_base, key: value} if key in result_base else result_base
        try:
            decode_result(frame(MessageType.RESULT, head, good.ciphertexts[:1]))
        except ProtocolError:
            continue


def test_limits_validate_themselves() -> None:
    with pytest.raises(InvalidParameters):
        ScoringLimits(max_features=0)
    with pytest.raises(TypeError):
        ScoringLimits(max_subjects=1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameters):
        ScoringLimits(allowed_poly_modulus_degrees=(4096,))


# --- every malformed frame: its protocol error and code ------------------------------------------------------

GOOD_ID = "ab" * 32
LOGISTIC = {"kind": "logistic", "context_id": GOOD_ID, "features": ["a"], "packing": "real"}


def raw_frame(version: int, kind: int, header: bytes, blobs: list[bytes], tail: bytes = b"") -> bytes:
    body = b"".join(struct.pack("!I", len(b)) + b for b in blobs)
    return (
        b"PPHE" + bytes([version, kind]) + struct.pack("!I", len(header)) + header
        + struct.pack("!I", len(blobs)) + body + tail
    )  # fmt: skip


MALFORMED_FRAMES = {
    "not-bytes": (lambda: decode_model("PPHE"), InvalidCiphertext),  # type: ignore[arg-type]
    "too-short": (lambda: decode_model(b"PPHE\x01"), InvalidCiphertext),
    "bad-magic": (lambda: decode_model(b"XXHE" + raw_frame(1, 1, b"{}", [])[4:]), InvalidCiphertext),
    "other-version": (lambda: decode_model(raw_frame(2, 1, b"{}", [])), InvalidCiphertext),
    "a-result-for-a-model": (lambda: decode_model(raw_frame(1, 2, b"{}", [])), InvalidCiphertext),
    "unknown-type": (lambda: decode_result(raw_frame(1, 9, b"{}", [])), InvalidCiphertext),
    "header-not-json": (lambda: decode_model(raw_frame(1, 1, b"{nope", [])), InvalidCiphertext),
    "header-with-nan": (lambda: decode_model(raw_frame(1, 1, b'{"a":NaN}', [])), InvalidCiphertext),
    "header-not-object": (lambda: decode_model(raw_frame(1, 1, b"[]", [])), InvalidCiphertext),
    "trailing-bytes": (lambda: decode_model(frame(MessageType.MODEL, LOGISTIC, (b"w", b"b")) + b"!"), InvalidCiphertext),
    "truncated-blob": (lambda: decode_model(frame(MessageType.MODEL, LOGISTIC, (b"w", b"b"))[:-1]), InvalidCiphertext),
    "wrong-blob-count": (lambda: decode_model(frame(MessageType.MODEL, LOGISTIC, (b"w",))), InvalidCiphertext),
    "too-many-bytes": (
        lambda: decode_model(frame(MessageType.MODEL, LOGISTIC, (b"w", b"b")), ScoringLimits(max_model_bytes=20)),
        ScoringLimitExceeded,
    ),
    "too-many-ciphertexts": (
        lambda: decode_model(frame(MessageType.MODEL, LOGISTIC, (b"w", b"b")), ScoringLimits(max_model_ciphertexts=1)),
        ScoringLimitExceeded,
    ),
    "unknown-kind": (lambda: decode_model(frame(MessageType.MODEL, {**LOGISTIC, "kind": "tree"}, ())), InvalidScoringModel),
    "missing-key": (lambda: decode_model(frame(MessageType.MODEL, {"kind": "logistic"}, ())), InvalidScoringModel),
    "bad-context-id": (lambda: decode_model(frame(MessageType.MODEL, {**LOGISTIC, "context_id": "AB"}, ())), InvalidScoringModel),
    "control-character": (lambda: decode_model(frame(MessageType.MODEL, {**LOGISTIC, "features": ["a\x01b"]}, ())), InvalidScoringModel),
    "unknown-packing": (lambda: decode_model(frame(MessageType.MODEL, {**LOGISTIC, "packing": "dense"}, ())), InvalidScoringModel),
    "result-header": (lambda: decode_result(frame(MessageType.RESULT, {"kind": "logistic"}, ())), InvalidCiphertext),
    "result-negative-count": (
        lambda: decode_result(frame(MessageType.RESULT, {"kind": "logistic", "context_id": GOOD_ID, "model_digest": GOOD_ID,
                                                         "n_subjects": -1, "slots": 1, "packing": "real", "noise_std": 0}, ())),
        InvalidCiphertext,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(MALFORMED_FRAMES))
def test_each_malformed_frame_raises_its_protocol_error_and_code(case: str) -> None:
    call, error = MALFORMED_FRAMES[case]
    with pytest.raises(error) as raised:
        call()
    assert raised.value.code == error.code
    assert not isinstance(raised.value, ValueError)


def test_limits_refuse_bad_values_with_a_protocol_error() -> None:
    with pytest.raises(InvalidParameters) as raised:
        ScoringLimits(check_timeout_s=math.inf)
    assert raised.value.code == "invalid_parameters"
