"""Encryptions of the release noise made ahead of time: the public-key encryption off the scoring's critical path.

Every block of scores leaves the safe-room with Gaussian noise added and *re-randomised*: a fresh public-key
encryption of the noise is added to the result (:func:`protocols.he_scoring.score`), so a result ciphertext
says nothing about the model's ciphertexts beyond the decrypted values. That fresh encryption is about 40 % of
the kernel's time (Gaussian samples, an encoding and an RLWE encryption per block of 8,192 subjects). None of
it depends on the model or the features, only on where the result lands: its parameters level (``parms_id``),
its scale, the noise's standard deviation and the packing. So it can be made before the job, while the
consents are decided, by other processes: a :class:`NoisePool` holds such encryptions per :class:`NoiseKey`,
and :func:`~protocols.he_scoring.score` takes one per block (and makes one inline when the pool is empty).

Who learns what: unchanged. Each pooled ciphertext is a fresh encryption of fresh Gaussian samples from the
operating system's CSPRNG, made with the bank's *public* key only, used **once** (taken out of the pool) and
then gone; a result's noise and randomness are as independent of every other result's as when made inline.
The pool is memory of the safe-room's process only; it never holds anything secret of the bank, and losing
it loses nothing but time. Assumption as for scoring: the safe-room is semi-honest (a dishonest safe-room
could skip the noise inline just as well).

Filling is CPU work under the GIL (TenSEAL does not release it): :meth:`NoisePool.fill` with a
:class:`~protocols.parallel.ChunkMapper` that runs chunks in worker processes makes them there (each worker
loads the public context once) and ships the serialised ciphertexts back (~260 kB each at N = 8192; loading
one costs well under a millisecond), so the coordinating process stays free for admission.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tenseal.sealapi as seal

from protocols.errors import InvalidParameters
from protocols.he_scoring.load import LoadedModel, PublicScoringContext
from protocols.he_scoring.seal_objects import seal_load, seal_save
from protocols.he_scoring.wire import MAX_SCORE_NOISE_STD, Packing
from protocols.parallel import ChunkMapper, InProcess, Shared

__all__ = ["NoiseKey", "NoisePool", "PoolStats", "gaussian", "noise_key"]

MAX_POOL_CIPHERTEXTS = 4096
"""Cap on what one pool keeps (all keys together): ~1 GB of ciphertexts at N = 8192."""


def gaussian(n: int, std: float, packing: Packing) -> list[Any]:
    """``n`` Gaussian samples (complex with independent parts, for complex packing) from the operating
    system's CSPRNG (Box-Muller)."""
    bits = np.frombuffer(os.urandom(16 * n), dtype=np.uint64).reshape(2, n)
    u1 = 1.0 - (bits[0] >> np.uint64(11)).astype(np.float64) * 2.0**-53
    u2 = (bits[1] >> np.uint64(11)).astype(np.float64) * 2.0**-53
    radius = std * np.sqrt(-2.0 * np.log(u1))
    if packing is Packing.COMPLEX:
        samples: list[Any] = (radius * np.exp(2j * np.pi * u2)).tolist()
    else:
        samples = (radius * np.cos(2 * np.pi * u2)).tolist()
    return samples


@dataclass(frozen=True)
class NoiseKey:
    """Where a result block lands: a pooled ciphertext fits a block only if all four are equal."""

    parms_id: tuple[int, ...]
    scale: float
    noise_std: float
    packing: Packing


def result_level(context: PublicScoringContext, model: LoadedModel) -> tuple[tuple[int, ...], float]:
    """The ``parms_id`` and scale of :func:`~protocols.he_scoring.score`'s result blocks for ``model``."""
    from protocols.he_scoring.server import plan_rescale

    parms = list(model.level.parms_id)
    if plan_rescale(model):
        chain = context.seal_context.get_context_data(parms)
        nxt = chain.next_context_data()
        last = chain.parms().coeff_modulus()[-1].value()
        return tuple(nxt.parms_id()), model.scale * model.scale / float(last)
    return tuple(parms), model.scale * model.scale


def noise_key(context: PublicScoringContext, model: LoadedModel, noise_std: float) -> NoiseKey:
    if not (0.0 <= noise_std <= MAX_SCORE_NOISE_STD):
        raise InvalidParameters(f"noise_std must be in [0, {MAX_SCORE_NOISE_STD:g}], got {noise_std!r}")
    parms, scale = result_level(context, model)
    return NoiseKey(parms, scale, float(noise_std), model.packing)


@dataclass
class PoolStats:
    made: int = 0
    taken: int = 0
    missed: int = 0


class _Maker:
    """A context's own encoder and encryptor (so that making never contends with scoring's objects)."""

    def __init__(self, context: PublicScoringContext) -> None:
        self.context = context
        self.encoder = seal.CKKSEncoder(context.seal_context)
        self.encryptor = seal.Encryptor(context.seal_context, context.public_key)
        self.lock = threading.Lock()

    def make(self, key: NoiseKey) -> Any:
        plain = seal.Plaintext()
        with self.lock:
            if key.noise_std > 0:
                samples = gaussian(self.context.slots, key.noise_std, key.packing)
                self.encoder.encode(samples, list(key.parms_id), key.scale, plain)
            else:
                self.encoder.encode(0.0, list(key.parms_id), key.scale, plain)
            out = seal.Ciphertext()
            self.encryptor.encrypt(plain, out)
        return out


def _worker_state(context_bytes: bytes) -> _Maker:
    from protocols.he_scoring.load import check_public_context

    return _Maker(check_public_context(context_bytes))


def _make_chunk(state: _Maker, chunk: tuple[NoiseKey, int]) -> list[bytes]:
    key, count = chunk
    return [seal_save(state.make(key)) for _ in range(count)]


class NoisePool:
    """Pre-made encryptions of release noise for one public context (see the module's docstring).

    Thread-safe: :meth:`take` from scoring threads, :meth:`fill` from another thread or process pool.
    """

    def __init__(self, context: PublicScoringContext, *, capacity: int = MAX_POOL_CIPHERTEXTS) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise InvalidParameters(f"capacity must be a non-negative int, got {capacity!r}")
        self.context = context
        self.capacity = capacity
        self.stats = PoolStats()
        self._maker = _Maker(context)
        self._items: dict[NoiseKey, deque[Any]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._items.values())

    def available(self, key: NoiseKey) -> int:
        with self._lock:
            return len(self._items.get(key, ()))

    def _room(self, wanted: int) -> int:
        return max(0, min(wanted, self.capacity - len(self)))

    def _add(self, key: NoiseKey, ciphertexts: Iterable[Any]) -> int:
        added = 0
        with self._lock:
            queue = self._items.setdefault(key, deque())
            for ct in ciphertexts:
                queue.append(ct)
                added += 1
            self.stats.made += added
        return added

    def fill(self, key: NoiseKey, count: int, *, executor: ChunkMapper | None = None) -> int:
        """Make ``count`` encryptions for ``key`` (fewer if the pool is at capacity); returns how many were added.

        With an executor whose chunks run in other processes, they are made there (the coordinating process
        only loads them); otherwise in the calling thread."""
        count = self._room(count)
        if count == 0:
            return 0
        if executor is None or executor.in_process or isinstance(executor, InProcess):
            return self._add(key, (self._maker.make(key) for _ in range(count)))
        per = max(1, -(-count // max(1, executor.workers)))
        chunks = [(key, min(per, count - start)) for start in range(0, count, per)]
        digest = hashlib.sha256(self.context.context_bytes).hexdigest()[:16]
        shared: Shared[_Maker] = Shared(f"noise-{digest}", self.context.context_bytes, _worker_state)
        added = 0
        for blobs in executor.map_chunks(_make_chunk, chunks, shared=shared, total=len(chunks)):
            added += self._add(
                key, (seal_load(seal.Ciphertext(), self.context.seal_context, b) for b in blobs)
            )
        return added

    def take(self, key: NoiseKey) -> Any | None:
        """One pre-made encryption for ``key``, removed from the pool (never handed out twice); None if empty."""
        with self._lock:
            queue = self._items.get(key)
            if queue:
                self.stats.taken += 1
                return queue.popleft()
            self.stats.missed += 1
            return None

    def make(self, key: NoiseKey) -> Any:
        """One encryption made now (what :func:`~protocols.he_scoring.score` does on a miss)."""
        return self._maker.make(key)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
