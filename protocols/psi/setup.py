"""The server's expensive, cacheable half: its set (:class:`ServerSet`), a fresh server key and the SETUP made
with it (:func:`prepare_setup`), sharded over workers. A :class:`PreparedSetup` holds a secret: memory only."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from private_set_intersection import python as _psi

from protocols.errors import InvalidParameters
from protocols.parallel import ChunkMapper, InProcess, Shared, SpawnedProcesses, default_workers
from protocols.psi.messages import (
    MAX_HASH_RANGE,
    MAX_SHARDS,
    Normalise,
    PSIParams,
    SetupMessage,
    SetupStructure,
    message_digest,
)

_SET_DOMAIN = b"pps/psi/server-set/v1\n"

# --- the server set ---------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class ServerSet:
    """The server's items, deduplicated and sorted, with a digest of exactly this set (the cache key)."""

    items: tuple[str, ...]
    digest: str

    @classmethod
    def of(cls, items: Iterable[str]) -> ServerSet:
        """Canonicalise: items are expected in their canonical form, which the caller's ``normalise`` checks
        when a setup is prepared (in the workers, in parallel), not on every cache lookup."""
        if isinstance(items, str | bytes):
            raise TypeError("items must be an iterable of strings, not a single string")
        distinct = set(items)
        for x in distinct:
            if not isinstance(x, str) or not x or "\n" in x:
                raise InvalidParameters(
                    f"server set item {x!r} is not a non-empty string without line breaks"
                )
        unique = sorted(distinct)
        # No item is empty or holds the separator, so the joined string is an injective encoding of the set.
        blob = _SET_DOMAIN + "\n".join(unique).encode("utf-8", errors="surrogatepass")
        return cls(tuple(unique), hashlib.sha256(blob).hexdigest())

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"ServerSet(size={len(self.items)}, digest={self.digest[:16]}…)"


# --- setup (server side, the expensive part) ----------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class PreparedSetup:
    """A server key and the SETUP made with it for one exact server set. Holds a secret: memory only."""

    _server_key: bytes
    params: PSIParams
    set_digest: str
    server_set_size: int
    message: bytes
    """The encoded SETUP message, as sent to clients."""
    shard_count: int
    created_at: datetime
    setup_digest: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "setup_digest", message_digest(self.message))

    def __repr__(self) -> str:
        return (
            f"PreparedSetup(size={self.server_set_size}, shards={self.shard_count}, "
            f"structure={self.params.structure.name}, set={self.set_digest[:16]}…, key=<hidden>)"
        )


def _library_structure(kind: SetupStructure) -> Any:
    return _psi.DataStructure.GCS if kind is SetupStructure.GCS else _psi.DataStructure.RAW


def _make_shard(
    server_key: bytes, items: list[str], fpr: float, max_client_items: int, kind: int, normalise: Normalise
) -> bytes:
    """Validate and encrypt one shard (runs in a worker process, or in-process for one shard). An invalid item
    raises the caller's error (from ``normalise``); a valid one not in its canonical form, InvalidParameters."""
    for x in items:
        if normalise(x) != x:
            raise InvalidParameters(f"server set item {x!r} is not in normalised form")
    server = _psi.server.CreateFromKey(server_key, False)
    setup = server.CreateSetupMessage(fpr, max_client_items, items, _library_structure(SetupStructure(kind)))
    return bytes(setup.SerializeToString())


_ShardState = tuple[bytes, float, int, int, Normalise]


def _shard_state(payload: _ShardState) -> _ShardState:
    return payload


def _shard_chunk(state: _ShardState, items: list[str]) -> bytes:
    """An executor chunk: one shard, under the server key the worker received once."""
    server_key, fpr, max_client_items, kind, normalise = state
    return _make_shard(server_key, items, fpr, max_client_items, kind, normalise)


def prepare_setup(
    server_set: ServerSet,
    params: PSIParams | None = None,
    *,
    normalise: Normalise,
    shards: int | None = None,
    workers: int | None = None,
    now: datetime | None = None,
    executor: ChunkMapper | None = None,
) -> PreparedSetup:
    """Make a fresh server key and the SETUP for ``server_set``: the expensive, cacheable half.

    ``shards`` (default: ``workers``) random shards are encrypted by ``workers`` (default: the usable cores)
    spawned processes; with one worker everything runs in this process. The client pays one decryption of
    its set per GCS shard, so more shards than cores only costs the client. RAW shards are merged into one.
    Spawned workers import the caller's ``__main__`` module, which must therefore be import-safe (the usual
    ``if __name__ == "__main__":`` guard); servers, pytest and Ray workers are. With ``executor`` (a
    :class:`~protocols.parallel.ChunkMapper`: a warm pool or Ray) the shards run on its workers instead
    (``workers`` defaults to its worker count), the server key shipped once per worker. Every item is checked
    with ``normalise`` there (see :data:`~protocols.psi.messages.Normalise`).
    """
    if not isinstance(server_set, ServerSet):
        raise TypeError(
            f"server_set must be a ServerSet (use ServerSet.of(items)), got {type(server_set).__name__}"
        )
    params = params or PSIParams()
    if workers is None:
        workers = executor.workers if executor is not None else default_workers()
    shards = workers if shards is None else shards
    for name, value in (("workers", workers), ("shards", shards)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SHARDS:
            raise InvalidParameters(f"{name} must be an int in [1, {MAX_SHARDS}], got {value!r}")
    n = len(server_set)
    if n > 2**32 - 1:
        raise InvalidParameters(f"server set of {n} items is too large for one setup")
    k = max(1, min(shards, n))
    fpr_shard = params.fpr / k if params.structure is SetupStructure.GCS else params.fpr
    hash_range = max(params.max_client_items, -(-n // k)) * params.max_client_items / fpr_shard
    if params.structure is SetupStructure.GCS and hash_range > MAX_HASH_RANGE:
        raise InvalidParameters(
            f"fpr={params.fpr} with max_client_items={params.max_client_items}, {k} shards and {n} items "
            f"needs a GCS hash range of {hash_range:.3g}, above the library's limit {MAX_HASH_RANGE:.3g}: "
            "raise fpr or lower max_client_items"
        )

    server_key = bytes(_psi.server.CreateWithNewKey(False).GetPrivateKeyBytes())
    # A secret, uniformly random partition: the client must not be able to tell which shard an item is in.
    order = np.random.default_rng(secrets.randbits(128)).permutation(n).tolist()
    parts = [[server_set.items[i] for i in order[j::k]] for j in range(k)]
    if executor is None:  # processes of our own, ended when the setup is made
        executor = InProcess() if k == 1 or workers == 1 else SpawnedProcesses(min(workers, k))
    shared = Shared(
        secrets.token_hex(16),  # names this setup's state; says nothing of the key
        (server_key, fpr_shard, params.max_client_items, int(params.structure), normalise),
        _shard_state,
    )
    blobs = list(executor.map_chunks(_shard_chunk, parts, shared=shared))
    if params.structure is SetupStructure.RAW and len(blobs) > 1:
        merged = _psi.ServerSetup()
        points: list[bytes] = []
        for blob in blobs:
            points.extend(_psi.ServerSetup.FromString(blob).raw.encrypted_elements)
        merged.raw.encrypted_elements.extend(sorted(points))
        blobs = [bytes(merged.SerializeToString())]
    message = SetupMessage(params.structure, params.fpr, params.max_client_items, n, tuple(blobs)).to_bytes()
    return PreparedSetup(
        _server_key=server_key,
        params=params,
        set_digest=server_set.digest,
        server_set_size=n,
        message=message,
        shard_count=len(blobs),
        created_at=now or datetime.now(UTC),
    )
