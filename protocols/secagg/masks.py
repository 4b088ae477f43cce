"""The masks: key agreement, the ChaCha20 PRG and the commitment to a self-mask seed.

A pairwise mask is ``PRG(HKDF(X25519(s_sk_i, s_pk_j)))``, a self-mask ``PRG(HKDF(b_i))``, both bound to the round's
session; the PRG is the ChaCha20 keystream, each 64-bit word reduced to 62 bits (uniform: the modulus is a power
of two).
"""

from __future__ import annotations

import hashlib

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocols.errors import InvalidParameters, InvalidSecAggMessage
from protocols.secagg.params import DOMAIN, FIELD_MASK, U64


def hkdf(secret: bytes, salt: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=DOMAIN + b"/" + label).derive(secret)


def prg(seed: bytes, dim: int) -> U64:
    """``dim`` uniform elements of Z_{2^62}: the ChaCha20 keystream under ``seed`` (32 bytes), 8 bytes each."""
    if len(seed) != 32:
        raise InvalidParameters("a PRG seed is 32 bytes")
    enc = Cipher(algorithms.ChaCha20(seed, b"\x00" * 16), mode=None).encryptor()
    words = np.frombuffer(enc.update(bytes(8 * dim)), dtype="<u8").astype(np.uint64)
    return words & FIELD_MASK


def pub(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def priv_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def load_pub(raw: bytes, what: str) -> X25519PublicKey:
    try:
        return X25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise InvalidSecAggMessage(f"{what}: not an X25519 public key") from None


def agree(sk: X25519PrivateKey, pk: X25519PublicKey, what: str) -> bytes:
    try:
        return sk.exchange(pk)
    except ValueError:  # an all-zero shared secret: a low-order public key
        raise InvalidSecAggMessage(f"{what}: key agreement failed (low-order public key)") from None


def pairwise_mask(sk: X25519PrivateKey, pk: X25519PublicKey, session: bytes, dim: int) -> U64:
    return prg(hkdf(agree(sk, pk, "pairwise mask"), session, b"pairwise-mask"), dim)


def self_mask(b: bytes, session: bytes, dim: int) -> U64:
    return prg(hkdf(b, session, b"self-mask"), dim)


def commit(session: bytes, b: bytes) -> bytes:
    return hashlib.sha256(DOMAIN + b"/commit/" + session + b).digest()
