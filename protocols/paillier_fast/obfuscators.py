"""Obfuscators ``y^n mod n^2``, the one expensive part of an encryption, computed ahead of use: ``"full"`` (``r^n``,
uniform ``r``: DCR) or ``"short_exponent"`` (Damgård-Jurik-Nielsen, ``h_s^a`` with a short ``a`` from a fixed-base
table: DCR and the DJN short-exponent assumption), in this process, a process pool or on an executor."""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Literal

import gmpy2
from gmpy2 import mpz

from protocols.errors import InvalidParameters
from protocols.lifetime import die_with_parent
from protocols.paillier_fast.keys import PublicKey
from protocols.parallel import ChunkMapper, Shared

FIXED_BASE_WINDOW = 8
ObfuscatorKind = Literal["full", "short_exponent"]


def _fixed_base_table(base: mpz, modulus: mpz, exp_bits: int, window: int) -> list[list[mpz]]:
    rows = []
    b = base
    for _ in range((exp_bits + window - 1) // window):
        row = [mpz(1), b]
        for _ in range(2**window - 2):
            row.append(row[-1] * b % modulus)
        rows.append(row)
        b = row[-1] * b % modulus  # base^(2^window)
    return rows


def _short_exponent_obfuscators(n: int, hs: int, count: int, exp_bits: int) -> list[mpz]:
    n2 = mpz(n) * mpz(n)
    table = _fixed_base_table(mpz(hs), n2, exp_bits, FIXED_BASE_WINDOW)
    return _from_table(table, n2, exp_bits, count)


def _from_table(table: list[list[mpz]], n2: mpz, exp_bits: int, count: int) -> list[mpz]:
    nbytes = (exp_bits + 7) // 8
    out = []
    for _ in range(count):
        a = secrets.randbits(exp_bits).to_bytes(nbytes, "little")
        acc = mpz(1)
        for row, digit in zip(table, a, strict=True):
            if digit:
                acc = acc * row[digit] % n2
        out.append(acc)
    return out


def _full_obfuscators(n: int, count: int) -> list[mpz]:
    nn = mpz(n)
    n2 = nn * nn
    out = []
    for _ in range(count):
        r = mpz(secrets.randbelow(n - 1) + 1)
        out.append(gmpy2.powmod(r, nn, n2))
    return out


def _obfuscator_worker(kind: str, n: int, hs: int, count: int, exp_bits: int) -> list[mpz]:
    if kind == "full":
        return _full_obfuscators(n, count)
    return _short_exponent_obfuscators(n, hs, count, exp_bits)


@dataclass
class PoolStats:
    precomputed: int = 0
    taken: int = 0
    on_demand: int = 0
    precompute_seconds: float = 0.0


class ObfuscatorPool:
    """Obfuscators ``y^n mod n^2`` for one public key, computed ahead (:meth:`fill`) or on demand.

    Each obfuscator is used once (:meth:`take` removes it). ``kind`` is ``"short_exponent"`` (DJN; see the
    module docstring for its assumption) or ``"full"`` (``r^n`` with uniform ``r``).
    """

    def __init__(self, public_key: PublicKey, kind: ObfuscatorKind = "short_exponent") -> None:
        if kind not in ("full", "short_exponent"):
            raise InvalidParameters(f"obfuscator kind must be 'full' or 'short_exponent', got {kind!r}")
        self.public_key = public_key
        self.kind: ObfuscatorKind = kind
        self.exp_bits = (public_key.bits + 1) // 2
        self._pool: list[mpz] = []
        self.stats = PoolStats()
        self._hs = mpz(0)
        self._table: list[list[mpz]] | None = None
        if kind == "short_exponent":
            n = public_key.n
            while True:
                x = mpz(secrets.randbelow(int(n) - 2) + 2)
                if gmpy2.gcd(x, n) == 1:
                    break
            self._hs = gmpy2.powmod((-x * x) % n, n, public_key.nsquare)

    def __len__(self) -> int:
        return len(self._pool)

    def fill(self, count: int, workers: int = 1, *, executor: ChunkMapper | None = None) -> None:
        """Compute ``count`` more obfuscators, in ``workers`` processes if more than one, or on ``executor``'s
        workers (a :class:`~protocols.parallel.ChunkMapper`; each builds the fixed-base table once per fill, chunks are counts)."""
        import time

        if count < 0 or workers < 1:
            raise InvalidParameters("fill: count must be >= 0 and workers >= 1")
        start = time.perf_counter()
        if executor is not None and count >= 64:
            self._pool.extend(_fill_on_executor(self, count, executor))
        elif workers == 1 or count < 64:
            self._pool.extend(self._generate(count))
        else:
            fill_pools([(self, count)], workers, _timed=False)
        self.stats.precomputed += count
        self.stats.precompute_seconds += time.perf_counter() - start

    def _chunks(self, count: int, workers: int) -> list[int]:
        return [
            c for c in (count // workers + (1 if i < count % workers else 0) for i in range(workers)) if c
        ]

    def _generate(self, count: int) -> list[mpz]:
        if self.kind == "full":
            return _full_obfuscators(int(self.public_key.n), count)
        if self._table is None:
            self._table = _fixed_base_table(
                self._hs, self.public_key.nsquare, self.exp_bits, FIXED_BASE_WINDOW
            )
        return _from_table(self._table, self.public_key.nsquare, self.exp_bits, count)

    def take(self, count: int) -> list[mpz]:
        """``count`` unused obfuscators (computed now, in this process, for any the pool lacks)."""
        if count <= len(self._pool):
            out = self._pool[len(self._pool) - count :]
            del self._pool[len(self._pool) - count :]
        else:
            missing = count - len(self._pool)
            out = self._pool + self._generate(missing)
            self._pool = []
            self.stats.on_demand += missing
        self.stats.taken += count
        return out


def fill_pools(requests: Sequence[tuple[ObfuscatorPool, int]], workers: int, *, _timed: bool = True) -> None:
    """Fill several pools (e.g. both parties' in a benchmark) with one process pool of ``workers`` processes."""
    import time

    if workers < 1 or any(c < 0 for _, c in requests):
        raise InvalidParameters("fill_pools: counts must be >= 0 and workers >= 1")
    start = time.perf_counter()
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=die_with_parent,  # a killed caller takes its pool with it (protocols.lifetime)
        initargs=(os.getpid(),),
    ) as ex:
        jobs = [
            (
                pool,
                ex.submit(
                    _obfuscator_worker, pool.kind, int(pool.public_key.n), int(pool._hs), c, pool.exp_bits
                ),
            )
            for pool, count in requests
            for c in pool._chunks(count, workers)
        ]
        for pool, job in jobs:
            pool._pool.extend(job.result())
    if _timed:
        for pool, count in requests:
            pool.stats.precomputed += count
            pool.stats.precompute_seconds += (time.perf_counter() - start) / len(requests)


# --- on an executor (a warm process pool or Ray) -------------------------------------------------------------------

OBFUSCATORS_PER_CHUNK = 256
"""Obfuscators per executor chunk (about 0.3 s of one worker at 2048 bits with the short-exponent table)."""


def _obfuscator_state(
    payload: tuple[str, int, int, int],
) -> tuple[str, int, mpz, int, list[list[mpz]] | None]:
    """Once per worker and fill: the short-exponent fixed-base table (16 MB at 2048 bits, 0.16 s)."""
    kind, n, hs, exp_bits = payload
    n2 = mpz(n) * mpz(n)
    table = None if kind == "full" else _fixed_base_table(mpz(hs), n2, exp_bits, FIXED_BASE_WINDOW)
    return kind, n, n2, exp_bits, table


def _obfuscator_chunk(state: tuple[str, int, mpz, int, list[list[mpz]] | None], count: int) -> list[mpz]:
    _kind, n, n2, exp_bits, table = state
    if table is None:
        return _full_obfuscators(n, count)
    return _from_table(table, n2, exp_bits, count)


def _fill_on_executor(pool: ObfuscatorPool, count: int, executor: ChunkMapper) -> list[mpz]:
    counts = [min(OBFUSCATORS_PER_CHUNK, count - k) for k in range(0, count, OBFUSCATORS_PER_CHUNK)]
    shared = Shared(
        "paillier-obfuscators",
        (pool.kind, int(pool.public_key.n), int(pool._hs), pool.exp_bits),
        _obfuscator_state,
    )
    out: list[mpz] = []
    for part in executor.map_chunks(_obfuscator_chunk, counts, shared=shared):
        out.extend(part)
    return out


@dataclass
class Timer:
    """Accumulated seconds per named step (for benchmarks and reports)."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + value
