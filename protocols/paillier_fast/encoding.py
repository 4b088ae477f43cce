"""Reals and integers as plaintexts mod ``n`` and back: fixed point ``round(x * 2^f)`` at a scale the caller
tracks (fixed per message, never chosen per value), negatives as ``n + v``, and the uniform masks."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

import numpy as np
from gmpy2 import mpz

from protocols.errors import EncodingOverflow
from protocols.paillier_fast.keys import PublicKey

HEADROOM_BITS = 64
"""Encoded magnitudes must stay below ``n / 2^HEADROOM_BITS``, leaving room for sums and products."""


def _max_abs(public_key: PublicKey) -> mpz:
    return public_key.n >> HEADROOM_BITS


def quantize(values: np.ndarray, frac_bits: int) -> np.ndarray:
    """``round(x * 2^frac_bits)`` as int64; refuses non-finite values and magnitudes beyond 2^62."""
    x = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise EncodingOverflow("cannot encode NaN or infinite values")
    scaled = np.rint(x * float(2**frac_bits))
    if scaled.size and float(np.max(np.abs(scaled))) >= 2.0**62:
        raise EncodingOverflow(f"values too large to encode with {frac_bits} fractional bits")
    return scaled.astype(np.int64)


def encode_fixed(public_key: PublicKey, values: np.ndarray, frac_bits: int) -> list[mpz]:
    """Reals as plaintext integers mod ``n`` at scale ``2^frac_bits`` (negative ``v`` as ``n + v``)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(x)):
        raise EncodingOverflow("cannot encode NaN or infinite values")
    n, bound = public_key.n, _max_abs(public_key)
    out = []
    scale = 2**frac_bits
    for v in x.tolist():
        m = mpz(round(v * scale)) if abs(v) < 2.0**52 else mpz(int(v)) * scale
        if abs(m) >= bound:
            raise EncodingOverflow(f"value {v!r} too large for a {public_key.bits}-bit key at 2^{frac_bits}")
        out.append(m % n)
    return out


def encode_ints(public_key: PublicKey, values: Iterable[int]) -> list[mpz]:
    """Signed integers as plaintexts mod ``n``."""
    n, bound = public_key.n, _max_abs(public_key)
    out = []
    for v in values:
        m = mpz(v)
        if abs(m) >= bound:
            raise EncodingOverflow("integer too large for the plaintext space")
        out.append(m % n)
    return out


def to_signed(public_key: PublicKey, plaintexts: Iterable[mpz]) -> list[int]:
    """Plaintexts in ``[0, n)`` as signed integers (values above ``n/2`` are negative)."""
    n, half = public_key.n, public_key.n // 2
    return [int(m - n) if m > half else int(m) for m in plaintexts]


def decode_fixed(public_key: PublicKey, plaintexts: Iterable[mpz], frac_bits: int) -> np.ndarray:
    """Signed fixed-point plaintexts at scale ``2^frac_bits`` as float64."""
    ints = to_signed(public_key, plaintexts)
    bound = int(_max_abs(public_key))
    if any(abs(v) >= bound for v in ints):
        raise EncodingOverflow("decoded value outside the encodable range (overflow or a missing unmask)")
    scale = 2**frac_bits
    return np.array([v / scale for v in ints], dtype=np.float64)


def random_masks(public_key: PublicKey, count: int) -> list[mpz]:
    """Uniform masks in ``Z_n``: a masked plaintext ``(v + mask) mod n`` is uniform whatever ``v`` is."""
    n = int(public_key.n)
    return [mpz(secrets.randbelow(n)) for _ in range(count)]
