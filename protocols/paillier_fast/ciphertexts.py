"""Encryption and the homomorphic operations on bare ``mpz`` ciphertexts, and their fixed-width wire form.

:func:`multi_exp` computes ``prod_i c_i^(e_i) mod n^2`` with Pippenger's bucket method (zero digits cost nothing,
so one-hot features cost one multiplication per non-zero); :func:`encrypted_column_dots` does ``sum_i m_i x_ij``
for every column of an integer matrix, shifting each column to be non-negative and adding the offset back with
one exponentiation of the shared product. Results are deterministic: re-randomise before they leave.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import gmpy2
import numpy as np
from gmpy2 import mpz

from protocols.errors import InvalidCiphertext, InvalidParameters
from protocols.paillier_fast.keys import _ONE, PublicKey
from protocols.paillier_fast.obfuscators import ObfuscatorPool
from protocols.parallel import ChunkMapper, Shared

ROWS_PER_BLOCK = 256
"""Smallest row block of :func:`encrypted_column_dots` on an executor (smaller blocks lose Pippenger's gain)."""


def encrypt_raw(public_key: PublicKey, plaintexts: Sequence[mpz], pool: ObfuscatorPool) -> list[mpz]:
    """``(1 + m n) * y^n mod n^2`` for plaintexts in ``[0, n)``."""
    if pool.public_key != public_key:
        raise InvalidParameters("the obfuscator pool belongs to another key")
    n, n2 = public_key.n, public_key.nsquare
    obfs = pool.take(len(plaintexts))
    return [(_ONE + m * n) * r % n2 for m, r in zip(plaintexts, obfs, strict=True)]


def add_plain(public_key: PublicKey, ciphertexts: Sequence[mpz], plaintexts: Sequence[mpz]) -> list[mpz]:
    """``Enc(a) * (1 + b n)`` = ``Enc(a + b)``: deterministic, so re-randomise before it leaves."""
    n, n2 = public_key.n, public_key.nsquare
    return [c * (_ONE + m * n) % n2 for c, m in zip(ciphertexts, plaintexts, strict=True)]


def rerandomise(public_key: PublicKey, ciphertexts: Sequence[mpz], pool: ObfuscatorPool) -> list[mpz]:
    """Multiply each ciphertext by a fresh obfuscator: same plaintext, unlinkable ciphertext."""
    if pool.public_key != public_key:
        raise InvalidParameters("the obfuscator pool belongs to another key")
    n2 = public_key.nsquare
    return [c * r % n2 for c, r in zip(ciphertexts, pool.take(len(ciphertexts)), strict=True)]


def product(ciphertexts: Iterable[mpz], modulus: mpz) -> mpz:
    """``prod c_i mod n^2`` = the encryption of the sum."""
    acc = mpz(1)
    for c in ciphertexts:
        acc = acc * c % modulus
    return acc


def best_window(count: int, bits: int) -> int:
    """The Pippenger window minimising ``ceil(bits / w) (count + 2^(w+1))`` multiplications."""
    best, best_cost = 1, math.inf
    for w in range(1, 17):
        cost = math.ceil(bits / w) * (count + 2 ** (w + 1))
        if cost < best_cost:
            best, best_cost = w, cost
    return best


def multi_exp(bases: Sequence[mpz], exponents: np.ndarray, modulus: mpz, window: int | None = None) -> mpz:
    """``prod_i bases[i]^exponents[i] mod modulus`` for non-negative int64 exponents (Pippenger buckets)."""
    e = np.asarray(exponents)
    if e.ndim != 1 or len(e) != len(bases):
        raise InvalidParameters("multi_exp: exponents must be one-dimensional, one per base")
    if e.size == 0:
        return mpz(1)
    if e.dtype.kind not in "iu" or int(e.min()) < 0:
        raise InvalidParameters("multi_exp: exponents must be non-negative integers")
    nz = np.flatnonzero(e)
    if nz.size == 0:
        return mpz(1)
    ev = e[nz].astype(np.int64)
    bits = int(ev.max()).bit_length()
    w = window or best_window(int(nz.size), bits)
    mask = (1 << w) - 1
    n_windows = (bits + w - 1) // w
    idx = nz.tolist()
    result: mpz | None = None
    for k in range(n_windows - 1, -1, -1):
        if result is not None:
            result = gmpy2.powmod(result, 1 << w, modulus)
        digits = ((ev >> (k * w)) & mask).tolist()
        buckets: list[mpz | None] = [None] * (mask + 1)
        for i, dgt in zip(idx, digits, strict=True):
            if dgt:
                b = buckets[dgt]
                buckets[dgt] = bases[i] if b is None else b * bases[i] % modulus
        running: mpz | None = None
        acc: mpz | None = None
        for v in range(mask, 0, -1):
            b = buckets[v]
            if b is not None:
                running = b if running is None else running * b % modulus
            if running is not None:
                acc = running if acc is None else acc * running % modulus
        if acc is not None:
            result = acc if result is None else result * acc % modulus
    return mpz(1) if result is None else result


def encrypted_column_dots(
    public_key: PublicKey,
    ciphertexts: Sequence[mpz],
    matrix: np.ndarray,
    total: mpz | None = None,
    *,
    executor: ChunkMapper | None = None,
) -> list[mpz]:
    """``Enc(sum_i m_i X[i, j])`` for every column ``j`` of an int64 matrix (rows = ciphertexts).

    ``total`` may pass ``prod_i c_i`` if the caller already has it. The results are deterministic functions
    of the inputs: re-randomise (or mask with a fresh encryption) before they leave. With ``executor`` (a pool
    or Ray: a :class:`~protocols.parallel.ChunkMapper`) and more than one worker, row blocks run on its workers; the ciphertexts
    returned are the same.
    """
    x = np.asarray(matrix)
    if x.ndim != 2 or x.shape[0] != len(ciphertexts):
        raise InvalidParameters("encrypted_column_dots: the matrix needs one row per ciphertext")
    if x.dtype.kind not in "iu":
        raise InvalidParameters("encrypted_column_dots: the matrix must hold integers (quantize first)")
    if executor is not None and not executor.in_process and len(ciphertexts) >= 2 * ROWS_PER_BLOCK:
        return _column_dots_on_executor(public_key, ciphertexts, x, executor)
    return _column_dots(public_key.nsquare, ciphertexts, x, total)


def _column_dots(n2: mpz, ciphertexts: Sequence[mpz], x: np.ndarray, total: mpz | None) -> list[mpz]:
    if total is None and x.size and int(x.min()) < 0:
        total = product(ciphertexts, n2)
    out = []
    for j in range(x.shape[1]):
        col = x[:, j].astype(np.int64)
        offset = min(int(col.min()), 0) if col.size else 0
        acc = multi_exp(ciphertexts, col - offset, n2)
        if offset:
            assert total is not None
            acc = acc * gmpy2.powmod(total, offset, n2) % n2
        out.append(acc)
    return out


# --- on an executor ---------------------------------------------------------------------------------------------


def _column_dots_chunk(n2: mpz, block: tuple[list[mpz], np.ndarray]) -> list[mpz]:
    ciphertexts, matrix = block
    return _column_dots(n2, ciphertexts, matrix, None)


def _column_dots_on_executor(
    public_key: PublicKey, ciphertexts: Sequence[mpz], x: np.ndarray, executor: ChunkMapper
) -> list[mpz]:
    """Row blocks on the executor's workers, the blocks' per-column ciphertexts multiplied here: the same group
    element as the whole computation (``prod_i c_i^(x_ij)`` mod ``n^2``), so the same ciphertexts."""
    n2 = public_key.nsquare
    rows = len(ciphertexts)
    block = max(ROWS_PER_BLOCK, -(-rows // max(1, executor.workers)))
    blocks = (
        (list(ciphertexts[lo : lo + block]), np.ascontiguousarray(x[lo : lo + block]))
        for lo in range(0, rows, block)
    )
    shared: Any = Shared("paillier-column-dots", n2, _identity)
    out = [mpz(1)] * x.shape[1]
    for part in executor.map_chunks(_column_dots_chunk, blocks, shared=shared, total=-(-rows // block)):
        out = [a * b % n2 for a, b in zip(out, part, strict=True)]
    return out


def _identity(payload: Any) -> Any:
    return payload


# --- wire format ----------------------------------------------------------------------------------------------------


def ciphertexts_to_bytes(public_key: PublicKey, ciphertexts: Sequence[mpz]) -> bytes:
    """Fixed-width big-endian ciphertexts (``ciphertext_bytes`` each), concatenated."""
    width = public_key.ciphertext_bytes
    return b"".join(bytes(c.to_bytes(width, "big")) for c in ciphertexts)


def ciphertexts_from_bytes(public_key: PublicKey, data: bytes, count: int) -> list[mpz]:
    """The inverse of :func:`ciphertexts_to_bytes`; every ciphertext must be in ``(0, n^2)``."""
    width = public_key.ciphertext_bytes
    if len(data) != width * count:
        raise InvalidCiphertext(f"expected {count} ciphertexts of {width} bytes, got {len(data)} bytes")
    n2 = public_key.nsquare
    out = []
    for k in range(count):
        c = mpz.from_bytes(data[k * width : (k + 1) * width], "big")
        if not 0 < c < n2:
            raise InvalidCiphertext(f"ciphertext {k} out of range for this key")
        out.append(c)
    return out
