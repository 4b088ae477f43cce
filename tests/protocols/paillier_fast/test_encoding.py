"""Fixed-point encoding (``protocols.paillier_fast.encoding``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import paillier_fast as pf
from protocols.errors import EncodingOverflow


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(-1e9, 1e9, allow_nan=False), min_size=1, max_size=8), st.integers(0, 48))
def test_fixed_point_roundtrip(values: list[float], frac_bits: int) -> None:
    pk = pf.PublicKey(2**1023 + 1155)  # any odd modulus: encoding does not need a real key
    x = np.array(values)
    got = pf.decode_fixed(pk, pf.encode_fixed(pk, x, frac_bits), frac_bits)
    np.testing.assert_allclose(got, np.round(x * 2**frac_bits) / 2**frac_bits, rtol=1e-15, atol=0)


def test_encoding_refuses_nan_inf_and_overflow(keys: tuple[pf.PublicKey, pf.PrivateKey]) -> None:
    pk, _ = keys
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(pf.EncodingOverflow, match="NaN or infinite"):
            pf.encode_fixed(pk, np.array([1.0, bad]), 16)
        with pytest.raises(pf.EncodingOverflow):
            pf.quantize(np.array([bad]), 16)
    with pytest.raises(pf.EncodingOverflow, match="too large"):
        pf.encode_fixed(pk, np.array([1e300]), 16)
    with pytest.raises(pf.EncodingOverflow, match="too large"):
        pf.quantize(np.array([1e15]), 16)
    with pytest.raises(pf.EncodingOverflow, match="outside the encodable range"):
        pf.decode_fixed(pk, [pk.n // 3], 0)  # e.g. a value still masked


def test_encoding_errors_carry_their_code() -> None:
    with pytest.raises(EncodingOverflow) as raised:
        pf.quantize(np.array([np.nan]), 8)
    assert raised.value.code == "encoding_overflow"
    assert not isinstance(raised.value, ValueError)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(-(2**900), 2**900), min_size=1, max_size=8))
def test_integer_round_trip(values: list[int]) -> None:
    pk = pf.PublicKey(2**1023 + 1155)
    assert pf.to_signed(pk, pf.encode_ints(pk, values)) == values
