"""Fixtures of the Paillier tests: a 1024-bit key pair (test-only size) and an obfuscator pool."""

from __future__ import annotations

import pytest

from protocols import paillier_fast as pf


@pytest.fixture(scope="module")
def keys() -> tuple[pf.PublicKey, pf.PrivateKey]:
    return pf.generate_keypair(1024)  # test-only size


@pytest.fixture(scope="module")
def pool(keys: tuple[pf.PublicKey, pf.PrivateKey]) -> pf.ObfuscatorPool:
    return pf.ObfuscatorPool(keys[0])
