"""Shamir secret sharing over the prime field ``GF(2^521 - 1)`` (secrets are 256-bit integers)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

from protocols.errors import InvalidParameters, SecAggAborted
from protocols.secagg.params import SHAMIR_PRIME


def shamir_split(secret: int, threshold: int, xs: Sequence[int]) -> dict[int, int]:
    """Shares ``{x: f(x)}`` of a random polynomial of degree ``threshold - 1`` with ``f(0) = secret``."""
    if not 0 <= secret < SHAMIR_PRIME:
        raise InvalidParameters("secret out of the field")
    if not 1 <= threshold <= len(xs) or len(set(xs)) != len(xs) or any(not 0 < x < SHAMIR_PRIME for x in xs):
        raise InvalidParameters("need distinct non-zero x values and 1 <= threshold <= their number")
    coeffs = [secret] + [secrets.randbelow(SHAMIR_PRIME) for _ in range(threshold - 1)]
    out = {}
    for x in xs:
        y = 0
        for c in reversed(coeffs):
            y = (y * x + c) % SHAMIR_PRIME
        out[x] = y
    return out


def shamir_combine(shares: Mapping[int, int], threshold: int) -> int:
    """``f(0)`` from ``threshold`` shares (Lagrange); fewer than ``threshold`` is refused."""
    if len(shares) < threshold:
        raise SecAggAborted(f"{len(shares)} shares cannot rebuild a secret shared {threshold}-of-n")
    pts = sorted(shares.items())[:threshold]
    secret = 0
    for i, (xi, yi) in enumerate(pts):
        num, den = 1, 1
        for j, (xj, _) in enumerate(pts):
            if i != j:
                num = num * xj % SHAMIR_PRIME
                den = den * (xj - xi) % SHAMIR_PRIME
        secret = (secret + yi * num * pow(den, -1, SHAMIR_PRIME)) % SHAMIR_PRIME
    return secret
