"""Obfuscator pools (``protocols.paillier_fast.obfuscators``)."""

from __future__ import annotations

import pytest

from protocols import paillier_fast as pf
from protocols.errors import InvalidParameters


def test_pool_on_demand(keys: tuple[pf.PublicKey, pf.PrivateKey]) -> None:
    pk, _ = keys
    pool = pf.ObfuscatorPool(pk)
    pool.fill(5)
    got = pool.take(8)
    assert len(got) == 8 and len(set(got)) == 8
    assert pool.stats.on_demand == 3 and len(pool) == 0


@pytest.mark.slow
def test_pool_fill_in_processes(keys: tuple[pf.PublicKey, pf.PrivateKey]) -> None:
    pk, sk = keys
    pool = pf.ObfuscatorPool(pk)
    pool.fill(200, workers=2)
    assert len(pool) == 200
    cts = pf.encrypt_raw(pk, pf.encode_ints(pk, range(200)), pool)
    assert pf.to_signed(pk, sk.decrypt_raw(cts)) == list(range(200))
    assert pool.stats.on_demand == 0


def test_pool_errors_carry_their_code(keys: tuple[pf.PublicKey, pf.PrivateKey]) -> None:
    pk, _ = keys
    for call in (lambda: pf.ObfuscatorPool(pk, "weak"), lambda: pf.ObfuscatorPool(pk).fill(-1)):  # type: ignore[arg-type]
        with pytest.raises(InvalidParameters) as raised:
            call()
        assert raised.value.code == "invalid_parameters"
