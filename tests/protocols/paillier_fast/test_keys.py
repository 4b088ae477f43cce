"""Paillier keys (``protocols.paillier_fast.keys``): agreement with python-paillier, sizes, checks."""

from __future__ import annotations

import pytest
from gmpy2 import mpz
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import paillier_fast as pf
from protocols.errors import InvalidParameters


def test_default_key_is_2048_bits() -> None:
    pk, sk = pf.generate_keypair()  # the default size: 2048 bits
    assert pk.bits == 2048
    pool = pf.ObfuscatorPool(pk)
    assert pool.exp_bits == 1024
    (c,) = pf.encrypt_raw(pk, pf.encode_ints(pk, [-7]), pool)
    assert pf.to_signed(pk, sk.decrypt_raw([c])) == [-7]


def test_key_checks(keys: tuple[pf.PublicKey, pf.PrivateKey]) -> None:
    pk, _ = keys
    with pytest.raises(pf.PaillierError, match="at least 1024"):
        pf.generate_keypair(512)
    with pytest.raises(pf.PaillierError, match="odd modulus"):
        pf.PublicKey(2**2047)
    with pytest.raises(pf.PaillierError, match="p \\* q"):
        pf.PrivateKey(pk, 3, 5)
    other, _ = pf.generate_keypair(1024)
    with pytest.raises(pf.PaillierError, match="another key"):
        pf.encrypt_raw(other, [mpz(1)], pf.ObfuscatorPool(pk))
    with pytest.raises(pf.PaillierError, match="kind"):
        pf.ObfuscatorPool(pk, "weak")  # type: ignore[arg-type]
    assert pf.PublicKey.from_bytes(pk.to_bytes()) == pk


def test_key_errors_are_protocol_errors_with_codes(keys: tuple[pf.PublicKey, pf.PrivateKey]) -> None:
    pk, _ = keys
    for call in (lambda: pf.PublicKey(4), lambda: pf.generate_keypair(1000), lambda: pf.PrivateKey(pk, 3, 5)):
        with pytest.raises(InvalidParameters) as raised:
            call()
        assert raised.value.code == "invalid_parameters"
        assert not isinstance(raised.value, ValueError)
    assert pf.PaillierError is not ValueError and issubclass(InvalidParameters, pf.PaillierError)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2**1023, 2**1024 - 1).map(lambda v: v | 1))
def test_public_key_round_trip(n: int) -> None:
    assert pf.PublicKey.from_bytes(pf.PublicKey(n).to_bytes()) == pf.PublicKey(n)
