"""Encryption, homomorphic sums and the wire form (``protocols.paillier_fast.ciphertexts``), checked against
python-paillier."""

from __future__ import annotations

import numpy as np
import pytest
from gmpy2 import mpz
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import paillier_fast as pf
from protocols.errors import InvalidCiphertext


@pytest.mark.parametrize("kind", ["short_exponent", "full"])
def test_roundtrip_and_phe_agrees(keys: tuple[pf.PublicKey, pf.PrivateKey], kind: pf.ObfuscatorKind) -> None:
    pk, sk = keys
    pool = pf.ObfuscatorPool(pk, kind)
    values = np.array([0.0, 1.5, -2.25, 1e6, -1e-9])
    plain = pf.encode_fixed(pk, values, 40)
    cts = pf.encrypt_raw(pk, plain, pool)
    np.testing.assert_allclose(pf.decode_fixed(pk, sk.decrypt_raw(cts), 40), values, atol=1e-11)
    phe_sk = sk.to_phe()
    assert [phe_sk.raw_decrypt(int(c)) for c in cts] == [int(m) for m in plain]  # type: ignore[attr-defined]
    phe_pk = pk.to_phe()
    theirs = [phe_pk.raw_encrypt(int(m)) for m in plain]  # type: ignore[attr-defined]
    assert sk.decrypt_raw([mpz(c) for c in theirs]) == plain


def test_homomorphic_operations(keys: tuple[pf.PublicKey, pf.PrivateKey], pool: pf.ObfuscatorPool) -> None:
    pk, sk = keys
    a = pf.encrypt_raw(pk, pf.encode_ints(pk, [5, -3]), pool)
    b = pf.add_plain(pk, a, pf.encode_ints(pk, [10, -10]))
    assert pf.to_signed(pk, sk.decrypt_raw(b)) == [15, -13]
    r = pf.rerandomise(pk, b, pool)
    assert r != b
    assert sk.decrypt_raw(r) == sk.decrypt_raw(b)
    assert pf.to_signed(pk, sk.decrypt_raw([pf.product(a, pk.nsquare)])) == [2]


def test_rerandomised_sum_hides_the_added_plaintext(
    keys: tuple[pf.PublicKey, pf.PrivateKey], pool: pf.ObfuscatorPool
) -> None:
    """Without re-randomisation Enc(a) * (1 + v n) / Enc(a) = 1 + v n reveals v; with it, not."""
    pk, _ = keys
    (a,) = pf.encrypt_raw(pk, pf.encode_ints(pk, [42]), pool)
    v = pf.encode_ints(pk, [1234])
    (plain_sum,) = pf.add_plain(pk, [a], v)
    ratio = plain_sum * pow(int(a), -1, int(pk.nsquare)) % pk.nsquare
    assert (ratio - 1) % pk.n == 0 and (ratio - 1) // pk.n == v[0]  # the leak
    (fresh,) = pf.rerandomise(pk, [plain_sum], pool)
    ratio = fresh * pow(int(a), -1, int(pk.nsquare)) % pk.nsquare
    assert (ratio - 1) % pk.n != 0


def test_multi_exp_matches_naive(keys: tuple[pf.PublicKey, pf.PrivateKey], pool: pf.ObfuscatorPool) -> None:
    pk, _ = keys
    n2 = pk.nsquare
    bases = pool.take(60)
    rng = np.random.default_rng(3)
    for exps in (
        rng.integers(0, 2**20, 60),
        rng.integers(0, 2, 60),
        np.zeros(60, dtype=np.int64),
        np.r_[np.zeros(59, dtype=np.int64), 2**40],
    ):
        want = mpz(1)
        for b, e in zip(bases, exps.tolist(), strict=True):
            want = want * pow(int(b), e, int(n2)) % n2
        assert pf.multi_exp(bases, exps, n2) == want
        assert pf.multi_exp(bases, exps, n2, window=3) == want
    with pytest.raises(pf.PaillierError, match="non-negative"):
        pf.multi_exp(bases, -np.ones(60, dtype=np.int64), n2)
    with pytest.raises(pf.PaillierError, match="one per base"):
        pf.multi_exp(bases, np.ones(3, dtype=np.int64), n2)


def test_encrypted_column_dots(keys: tuple[pf.PublicKey, pf.PrivateKey], pool: pf.ObfuscatorPool) -> None:
    pk, sk = keys
    rng = np.random.default_rng(4)
    d = rng.normal(size=80)
    x = rng.normal(size=(80, 5))
    x[:, 1] = rng.integers(0, 2, 80)  # one-hot-like column
    cts = pf.encrypt_raw(pk, pf.encode_fixed(pk, d, 30), pool)
    xq = pf.quantize(x, 16)
    got = pf.decode_fixed(pk, sk.decrypt_raw(pf.encrypted_column_dots(pk, cts, xq)), 46)
    np.testing.assert_allclose(got, (xq / 2**16).T @ d, atol=1e-7)
    with pytest.raises(pf.PaillierError, match="integers"):
        pf.encrypted_column_dots(pk, cts, x)
    with pytest.raises(pf.PaillierError, match="one row per ciphertext"):
        pf.encrypted_column_dots(pk, cts, xq[:10])


def test_wire_format(keys: tuple[pf.PublicKey, pf.PrivateKey], pool: pf.ObfuscatorPool) -> None:
    pk, sk = keys
    cts = pf.encrypt_raw(pk, pf.encode_ints(pk, [1, 2, 3]), pool)
    data = pf.ciphertexts_to_bytes(pk, cts)
    assert len(data) == 3 * pk.ciphertext_bytes
    assert pf.ciphertexts_from_bytes(pk, data, 3) == cts
    with pytest.raises(pf.InvalidCiphertext, match="expected 3"):
        pf.ciphertexts_from_bytes(pk, data[:-1], 3)
    with pytest.raises(pf.InvalidCiphertext, match="out of range"):
        pf.ciphertexts_from_bytes(pk, b"\xff" * pk.ciphertext_bytes, 1)
    with pytest.raises(pf.InvalidCiphertext, match="out of range"):
        pf.ciphertexts_from_bytes(pk, bytes(pk.ciphertext_bytes), 1)
    with pytest.raises(pf.InvalidCiphertext):
        sk.decrypt_raw([mpz(0)])


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.integers(1, 2**2000), min_size=0, max_size=6))
def test_wire_round_trip(keys: tuple[pf.PublicKey, pf.PrivateKey], values: list[int]) -> None:
    pk, _ = keys
    cts = [mpz(v) for v in values]
    assert pf.ciphertexts_from_bytes(pk, pf.ciphertexts_to_bytes(pk, cts), len(cts)) == cts


def test_a_bad_ciphertext_is_an_invalid_ciphertext_with_its_code(
    keys: tuple[pf.PublicKey, pf.PrivateKey],
) -> None:
    pk, sk = keys
    for call in (lambda: pf.ciphertexts_from_bytes(pk, b"\x00", 1), lambda: sk.decrypt_raw([pk.nsquare])):
        with pytest.raises(InvalidCiphertext) as raised:
            call()
        assert raised.value.code == "invalid_ciphertext"
