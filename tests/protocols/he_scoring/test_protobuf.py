"""TenSEAL's formats read without TenSEAL (``protocols.he_scoring.protobuf``)."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.he_scoring import (
    ContextHasSecretKey,
    InvalidCiphertext,
    InvalidContext,
    decode_ckks_vector,
)
from protocols.he_scoring.protobuf import encode_ckks_vector, parse_context, pb_len, pb_varint, read_varint
from tests.protocols.he_scoring.common import (
    SLOTS,
)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, 2**32 - 1), payload=st.binary(max_size=200), scale=st.floats(allow_nan=False))
def test_tenseal_vector_round_trip(size, payload, scale) -> None:
    vector = decode_ckks_vector(encode_ckks_vector(payload, size, scale))
    assert (vector.size, vector.seal_bytes, vector.scale) == (size, payload, scale)


def test_the_sdk_vector_encoding_is_read_by_tenseal(bank) -> None:
    full = ts.context_from(bank.secret_context_bytes())
    values = ts.ckks_vector_from(full, bank._encrypt_value(0.625)).decrypt()
    assert len(values) == SLOTS
    assert np.allclose(values, 0.625, atol=1e-6)


@settings(max_examples=200, deadline=None)
@given(value=st.integers(0, 2**64 - 1), prefix=st.binary(max_size=5))
def test_varint_round_trip(value: int, prefix: bytes) -> None:
    encoded = pb_varint(value)
    assert read_varint(prefix + encoded, len(prefix)) == (value, len(prefix) + len(encoded))


MALFORMED_VECTORS = {
    "empty": b"",
    "truncated-varint": b"\x08\xff",
    "unknown-field": pb_len(9, b"x"),
    "wrong-wire-type": b"\x15\x00\x00\x00\x00",
    "truncated-field": pb_len(2, b"abcdef")[:-2],
    "two-ciphertexts": pb_len(1, pb_varint(1)) + pb_len(2, b"a") + pb_len(2, b"b"),
    "varint-too-long": b"\x08" + b"\xff" * 11,
}


@pytest.mark.parametrize("case", sorted(MALFORMED_VECTORS))
def test_a_malformed_vector_is_an_invalid_ciphertext(case: str) -> None:
    with pytest.raises(InvalidCiphertext) as raised:
        decode_ckks_vector(MALFORMED_VECTORS[case])
    assert raised.value.code == "invalid_ciphertext"


MALFORMED_CONTEXTS = {
    "garbage": (b"\xff\xff", InvalidContext),
    "no-parameters": (pb_len(2, pb_len(1, b"key")), InvalidContext),
    "no-public-part": (pb_len(1, b"parms"), InvalidContext),
    "symmetric": (pb_len(1, b"parms") + pb_len(2, pb_len(1, b"key")) + b"\x20\x01", InvalidContext),
    "galois-keys": (pb_len(1, b"parms") + pb_len(2, pb_len(1, b"key") + pb_len(5, b"g")), InvalidContext),
    "secret-key": (pb_len(1, b"parms") + pb_len(2, pb_len(1, b"key")) + pb_len(3, pb_len(1, b"s")), ContextHasSecretKey),
    "private-part": (pb_len(1, b"parms") + pb_len(2, pb_len(1, b"key")) + pb_len(3, b""), ContextHasSecretKey),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(MALFORMED_CONTEXTS))
def test_a_malformed_context_raises_its_protocol_error_and_code(case: str) -> None:
    data, error = MALFORMED_CONTEXTS[case]
    with pytest.raises(error) as raised:
        parse_context(data)
    assert raised.value.code == error.code
