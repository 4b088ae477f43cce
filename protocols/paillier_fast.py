"""Paillier on raw integers with gmpy2: the hot path of vertical logistic regression.

This is a *sharp* module (the hazmat of :mod:`protocols.vertical_lr`): it works on bare ``gmpy2.mpz``
ciphertexts and integer plaintexts and leaves it to the caller to keep scales, masks and re-randomisation
right. ``python-paillier`` (``phe``) generates the keys and is the reference the tests check against; its one
``EncryptedNumber`` object per value, floating exponents and ``r^n`` per encryption are what makes it slow
(about 16 s per gradient step at 1,000 rows x 20 features), not the arithmetic.

Scheme
------
Paillier with ``g = n + 1``: ``Enc(m; r) = (1 + m n) * r^n mod n^2`` (no exponentiation for ``g^m``), additive:
``Enc(a) Enc(b) = Enc(a + b)``, ``Enc(a)^k = Enc(k a)``. Decryption uses the CRT (exponentiations mod ``p^2``
and ``q^2`` with ``p - 1`` and ``q - 1``), as ``phe`` does. Keys are 2048-bit by default
(:data:`DEFAULT_KEY_BITS`, about 112-bit security; the tests use 1024 bits for speed and say so).

Plaintexts are integers mod ``n``; a negative ``v`` is ``n + v``. :func:`encode_fixed` maps reals to
fixed-point integers ``round(x * 2^f)``; a product of two encodings has scale ``2^(f1 + f2)``, and the caller
tracks the scale (``frac_bits``): exponents are fixed per message, never chosen per value (a per-value exponent,
as in ``phe``, leaks each value's magnitude).

Obfuscators
-----------
Each encryption and each re-randomisation costs one *obfuscator* ``r^n mod n^2``, the only expensive part of an
encryption. :class:`ObfuscatorPool` computes them ahead of use, optionally in a process pool, in one of two
kinds:

* ``"full"``: ``r`` uniform in ``Z_n^*``, ``r^n mod n^2`` by ``powmod`` (a 2048-bit exponent mod a 4096-bit
  modulus, about 9 ms each on the reference machine). Standard Paillier: IND-CPA under the decisional
  composite residuosity (DCR) assumption.
* ``"short_exponent"`` (the default): the variant of Damgård, Jurik and Nielsen ("A generalization of Paillier's
  public-key system with applications to electronic voting", IJIS 2010, section 4; also Intel IPCL's and
  SecretFlow HEU's DJN mode). The pool draws ``x`` in ``Z_n^*`` once, sets ``h = -x^2 mod n`` and
  ``h_s = h^n mod n^2``, and each obfuscator is ``h_s^a mod n^2`` with ``a`` uniform in ``[0, 2^ceil(k/2))``
  (``k`` = bits of ``n``: 1024-bit ``a`` for a 2048-bit key). ``h_s`` is kept private to the party that
  encrypts (it is never sent), which can only remove information from an attacker's view. **Security
  assumption**: DCR *and* that ``h_s^a`` with a short ``a`` is indistinguishable from a random element of
  the subgroup ``<h_s>`` (the DJN short-exponent assumption, which follows from DCR plus the hardness of
  discrete logarithms with short exponents in ``Z_n^*``; generic attacks on a 1024-bit exponent cost about
  2^512). With a fixed-base table of ``h_s^(v 2^(8 i))`` (16 MB at 2048 bits, 0.16 s to build), one obfuscator
  is 127 multiplications mod ``n^2`` instead of about 2,400: about 14x cheaper than ``"full"``.

Both kinds give ciphertexts that any Paillier implementation decrypts (``phe`` included): they are of the form
``(1 + m n) y^n`` for some ``y``.

Homomorphic gradient sums
-------------------------
:func:`multi_exp` computes ``prod_i c_i^(e_i) mod n^2`` for non-negative integer exponents with Pippenger's
bucket method: per window of ``w`` bits, each base is multiplied into the bucket of its digit, and the buckets
are combined with ``2^(w+1)`` multiplications; the window is chosen per call to minimise
``ceil(bits / w) (m + 2^(w+1))``. Zero digits cost nothing, so one-hot features cost one multiplication per
non-zero. :func:`encrypted_column_dots` does ``sum_i m_i x_ij`` for every column ``j`` of an integer matrix by
shifting each column to be non-negative (``x - min``) and adding ``min * sum_i m_i`` back with one exponentiation
by the (possibly negative) offset of the shared product ``prod_i c_i``.

Errors are subclasses of :class:`PaillierError` (a ``ValueError``): non-finite or too-large values to encode
(:class:`EncodingOverflow`), ciphertexts out of range or of another key (:class:`InvalidCiphertext`).
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import TYPE_CHECKING, Any, Literal

import gmpy2
import numpy as np
from gmpy2 import mpz

DEFAULT_KEY_BITS = 2048
MIN_KEY_BITS = 1024
"""1024 bits is for tests only (about 80-bit security); production keys are 2048 bits or more."""
HEADROOM_BITS = 64
"""Encoded magnitudes must stay below ``n / 2^HEADROOM_BITS``, leaving room for sums and products."""
FIXED_BASE_WINDOW = 8

if (
    TYPE_CHECKING
):  # an executor of pps.infra.executor (a process pool, Ray) may be passed; nothing else of pps
    from pps.infra.executor import Executor

ObfuscatorKind = Literal["full", "short_exponent"]
_ONE = mpz(1)  # mpz constants: the gmpy2 stubs type ``mpz - int`` as mpc


class PaillierError(ValueError):
    """Base of this module's errors."""


class EncodingOverflow(PaillierError):
    """A value is not finite, or too large for the plaintext space at the requested scale."""


class InvalidCiphertext(PaillierError):
    """A ciphertext is out of range, malformed, or belongs to another key."""


# --- keys -----------------------------------------------------------------------------------------------------


class PublicKey:
    """A Paillier public key ``n`` with ``g = n + 1``."""

    __slots__ = ("bits", "ciphertext_bytes", "fingerprint", "n", "nsquare")

    def __init__(self, n: int) -> None:
        if n < 2 ** (MIN_KEY_BITS - 1) or n % 2 == 0:
            raise PaillierError(f"public key: n must be an odd modulus of at least {MIN_KEY_BITS} bits")
        self.n = mpz(n)
        self.nsquare = self.n * self.n
        self.bits = int(self.n.bit_length())
        self.ciphertext_bytes = (int(self.nsquare.bit_length()) + 7) // 8
        self.fingerprint = hashlib.sha256(self.to_bytes()).hexdigest()[:32]

    def to_bytes(self) -> bytes:
        return bytes(self.n.to_bytes((self.bits + 7) // 8, "big"))

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicKey:
        return cls(int.from_bytes(data, "big"))

    @classmethod
    def from_phe(cls, key: object) -> PublicKey:
        return cls(int(key.n))  # type: ignore[attr-defined]

    def to_phe(self) -> object:
        from phe import paillier

        return paillier.PaillierPublicKey(int(self.n))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and self.n == other.n

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        return f"PublicKey(bits={self.bits}, fingerprint={self.fingerprint})"


class PrivateKey:
    """The factors of ``n`` with the CRT constants for decryption. Never leaves its holder."""

    __slots__ = ("_hp", "_hq", "_p", "_psquare", "_q", "_q_inv_p", "_qsquare", "public_key")

    def __init__(self, public_key: PublicKey, p: int, q: int) -> None:
        if p == q or mpz(p) * mpz(q) != public_key.n:
            raise PaillierError("private key: p * q must equal the public key's n, with p != q")
        if p > q:  # CRT below assumes nothing about order, but keep it canonical
            p, q = q, p
        self.public_key = public_key
        self._p, self._q = mpz(p), mpz(q)
        self._psquare, self._qsquare = self._p * self._p, self._q * self._q
        g = public_key.n + _ONE
        self._hp = gmpy2.invert(self._l(gmpy2.powmod(g, self._p - _ONE, self._psquare), self._p), self._p)
        self._hq = gmpy2.invert(self._l(gmpy2.powmod(g, self._q - _ONE, self._qsquare), self._q), self._q)
        self._q_inv_p = gmpy2.invert(self._q, self._p)

    @staticmethod
    def _l(x: mpz, d: mpz) -> mpz:
        return (x - _ONE) // d

    @classmethod
    def from_phe(cls, public_key: PublicKey, key: object) -> PrivateKey:
        return cls(public_key, int(key.p), int(key.q))  # type: ignore[attr-defined]

    def to_phe(self) -> object:
        from phe import paillier

        return paillier.PaillierPrivateKey(self.public_key.to_phe(), int(self._p), int(self._q))

    def decrypt_raw(self, ciphertexts: Iterable[mpz]) -> list[mpz]:
        """Plaintext integers in ``[0, n)`` (use :func:`to_signed` / :func:`decode_fixed` for values)."""
        p, q, pp, qq = self._p, self._q, self._psquare, self._qsquare
        out = []
        n2 = self.public_key.nsquare
        for c in ciphertexts:
            if not 0 < c < n2:
                raise InvalidCiphertext("ciphertext out of range for this key")
            mp = self._l(gmpy2.powmod(c, p - _ONE, pp), p) * self._hp % p
            mq = self._l(gmpy2.powmod(c, q - _ONE, qq), q) * self._hq % q
            out.append(mq + ((mp - mq) * self._q_inv_p % p) * q)
        return out

    def __repr__(self) -> str:
        return f"PrivateKey({self.public_key!r})"


def generate_keypair(bits: int = DEFAULT_KEY_BITS) -> tuple[PublicKey, PrivateKey]:
    """A fresh key pair, generated by ``phe`` (its prime generation), converted to raw integers."""
    if bits < MIN_KEY_BITS or bits % 256:
        raise PaillierError(f"key bits must be a multiple of 256 and at least {MIN_KEY_BITS}, got {bits}")
    from phe import paillier

    pk, sk = paillier.generate_paillier_keypair(n_length=bits)
    public = PublicKey.from_phe(pk)
    return public, PrivateKey.from_phe(public, sk)


# --- fixed-point encoding -----------------------------------------------------------------------------------------


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


# --- obfuscators ------------------------------------------------------------------------------------------------


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
            raise PaillierError(f"obfuscator kind must be 'full' or 'short_exponent', got {kind!r}")
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

    def fill(self, count: int, workers: int = 1, *, executor: Executor | None = None) -> None:
        """Compute ``count`` more obfuscators, in ``workers`` processes if more than one, or on ``executor``'s
        workers (:mod:`pps.infra.executor`; each builds the fixed-base table once per fill, chunks are counts)."""
        import time

        if count < 0 or workers < 1:
            raise PaillierError("fill: count must be >= 0 and workers >= 1")
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
        raise PaillierError("fill_pools: counts must be >= 0 and workers >= 1")
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as ex:
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


# --- on an executor (pps.infra.executor: a warm process pool or Ray) -----------------------------------------------------

OBFUSCATORS_PER_CHUNK = 256
"""Obfuscators per executor chunk (about 0.3 s of one worker at 2048 bits with the short-exponent table)."""
ROWS_PER_BLOCK = 256
"""Smallest row block of :func:`encrypted_column_dots` on an executor (smaller blocks lose Pippenger's gain)."""


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


def _fill_on_executor(pool: ObfuscatorPool, count: int, executor: Executor) -> list[mpz]:
    from pps.infra.executor import Shared

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


def _column_dots_chunk(n2: mpz, block: tuple[list[mpz], np.ndarray]) -> list[mpz]:
    ciphertexts, matrix = block
    return _column_dots(n2, ciphertexts, matrix, None)


def _column_dots_on_executor(
    public_key: PublicKey, ciphertexts: Sequence[mpz], x: np.ndarray, executor: Executor
) -> list[mpz]:
    """Row blocks on the executor's workers, the blocks' per-column ciphertexts multiplied here: the same group
    element as the whole computation (``prod_i c_i^(x_ij)`` mod ``n^2``), so the same ciphertexts."""
    from pps.infra.executor import Shared

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


# --- encryption and homomorphic operations -------------------------------------------------------------------------


def encrypt_raw(public_key: PublicKey, plaintexts: Sequence[mpz], pool: ObfuscatorPool) -> list[mpz]:
    """``(1 + m n) * y^n mod n^2`` for plaintexts in ``[0, n)``."""
    if pool.public_key != public_key:
        raise PaillierError("the obfuscator pool belongs to another key")
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
        raise PaillierError("the obfuscator pool belongs to another key")
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
        raise PaillierError("multi_exp: exponents must be one-dimensional, one per base")
    if e.size == 0:
        return mpz(1)
    if e.dtype.kind not in "iu" or int(e.min()) < 0:
        raise PaillierError("multi_exp: exponents must be non-negative integers")
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
    executor: Executor | None = None,
) -> list[mpz]:
    """``Enc(sum_i m_i X[i, j])`` for every column ``j`` of an int64 matrix (rows = ciphertexts).

    ``total`` may pass ``prod_i c_i`` if the caller already has it. The results are deterministic functions
    of the inputs: re-randomise (or mask with a fresh encryption) before they leave. With ``executor`` (a pool
    or Ray, :mod:`pps.infra.executor`) and more than one worker, row blocks run on its workers; the ciphertexts
    returned are the same.
    """
    x = np.asarray(matrix)
    if x.ndim != 2 or x.shape[0] != len(ciphertexts):
        raise PaillierError("encrypted_column_dots: the matrix needs one row per ciphertext")
    if x.dtype.kind not in "iu":
        raise PaillierError("encrypted_column_dots: the matrix must hold integers (quantize first)")
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


@dataclass
class Timer:
    """Accumulated seconds per named step (for benchmarks and reports)."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + value
