"""Private set intersection (PSI) of a bank's customer list with the subjects that consented to that bank.

Two parties, ECDH-PSI as implemented by the maintained ``openmined-psi`` package (P-256, hash-to-curve with
SHA-256; this module does no curve arithmetic of its own):

* the **client** (:class:`PSIClient`) is the bank, holding its customer list ``C`` (USCCs);
* the **server** (:class:`PSIServer`) is the safe-room, holding ``S``: the USCCs of the subjects whose
  consent covers *this bank* for *this purpose*.

Messages and stages
-------------------
::

    server                                     client (fresh key c for every query)
    ------                                     ------
    prepare_setup(S)  -> key s, SETUP          PSIClient(C, reveal_intersection=...)     stage NEW
                          <----- REQUEST ----- create_request()  {H(y)^c : y in C}     -> AWAITING_RESPONSE
    process_request() -> RESPONSE ---------->  (and SETUP: {H(x)^s : x in S}, compressed)
      {H(y)^(c·s)}                             finish(SETUP, RESPONSE) -> PSIResult     -> DONE

``SETUP`` is the server set encrypted under the server key ``s`` and compressed into one Golomb-compressed
set (GCS) per shard, or sent as the sorted raw points (RAW, exact but ~7x larger). ``REQUEST`` is the client
set encrypted under the client key; ``RESPONSE`` re-encrypts it under ``s``. The client strips ``c`` and tests
each ``H(y)^s`` against every shard of ``SETUP``. With ``reveal_intersection=False`` the server sorts the
response, so the client can count matches but not tell which of its items matched.

Every message is framed (magic ``PPSI``, version, type) and decoded by exactly one function per type
(:func:`decode_setup`, :func:`decode_request`, :func:`decode_response`), which checks lengths, counts and
the fields the library would otherwise trust; everything that fails raises :class:`InvalidPSIMessage`.
Wire format (integers big-endian, points are 33-byte compressed P-256 points)::

    frame    = "PPSI" | version u8 (=1) | type u8 (1 SETUP, 2 REQUEST, 3 RESPONSE) | body
    SETUP    = structure u8 (1 GCS, 2 RAW) | fpr f64 | max_client_items u32 | server_set_size u32
               | shard_count u16 | shard_count x (length u32 | psi_proto.ServerSetup protobuf)
    REQUEST  = reveal_intersection u8 | count u32 | count x point
    RESPONSE = sha256(REQUEST)[:16] | sha256(SETUP)[:16] | count u32 | count x point

Who learns what (semi-honest parties: each follows the protocol and may compute on what it sees)
------------------------------------------------------------------------------------------------
* **The client (bank)** learns ``C ∩ S`` (``reveal_intersection=True``) or only ``|C ∩ S|``
  (``False``), and ``|S|``. The set size is not hidden: ``SETUP`` carries ``server_set_size`` openly,
  because the library's data structures give it away anyway (RAW has one point per element; a GCS has one
  Golomb code per element and ``hash_range = max(n_max, |shard|) · n_max / fpr_shard``), so pretending
  otherwise would mislead. It also learns the number of shards. Nothing else about ``S``: deciding whether
  some ``x`` is in ``S`` needs ``H(x)^s``, which only the server can compute, one request item at a time.
* **False positives.** A GCS answers membership up to a false-positive rate: ``fpr`` bounds the
  probability that *any* of up to ``max_client_items`` client items is reported in the intersection
  although it is not (each of ``k`` shards gets ``fpr / k``). A false positive is a wrong answer, not a
  leak: the item is *not* in ``S``. It means the bank may believe a customer consented when it did not —
  so a PSI result is never evidence of consent; every later operation checks consent again. RAW has no
  false positives.
* **The server (safe-room)** learns ``|C|`` after deduplication (the number of points in ``REQUEST``) and
  the chosen mode — not the items (the points are ``H(y)^c`` under a fresh client key, DDH-hard to invert
  or to link across queries) and not the intersection or its size (only the client can compute those).
  Its only input from the client is the ``REQUEST`` message. The server cannot check that the points
  encode valid USCCs or the bank's real customers; it can only bound their number.
* **Size-only mode and shards.** In size-only mode the client sees one count per shard. Shards are a
  *secret uniformly random* partition of ``S`` (not by USCC prefix), so the split of the count across
  shards says nothing about which of the client's items matched, within one query.

Setup cost, sharding and the cache (reuse of the server key)
-----------------------------------------------------------
Encrypting ``S`` dominates: ~60-90 µs per element, ~60-90 s for 10^6 on one core. :func:`prepare_setup`
splits ``S`` into ``k`` shards and encrypts them in ``k`` spawned worker processes under *one* server key
(the client's single ``REQUEST`` is re-encrypted once; it is tested against every shard). The secret key
travels to the workers over the local pipe and nowhere else — or, when an executor is given
(:mod:`pps.infra.executor`; a Ray cluster), once per worker through that executor, whose nodes are inside the
safe-room's trust boundary, and every worker drops it when the setup is made (warm workers keep no key).
:class:`SetupCache` keeps a :class:`PreparedSetup` (server key + ``SETUP``) per (bank, purpose), valid only
for the exact server set (its digest) and parameters it was made for; a changed consent set gives another
digest and the entry is dropped (``SET_CHANGED``). Reusing ``s`` across queries has a price, which is why
the cache lifetime is bounded (``max_age`` <= :data:`MAX_SETUP_AGE`, ``max_uses``):

* The client's decrypted response items ``H(y)^s`` are deterministic for the key's lifetime, so a bank can
  link its items across its repeated queries: in size-only mode, one small query pins down which of the
  (unordered) matched items of every earlier large query it was — differencing becomes cheap. Rate
  limiting and the ledger are the service's defence; the guarantee of size-only mode holds per query.
* ``SETUP`` is identical across cache hits, so the bank sees that ``S`` did not change in between (it
  would see that from ``server_set_size`` and its own results anyway).
* One key serves one (bank, purpose, exact set): setups never share a key across banks or purposes.

What the caller (the service) must do around this module
--------------------------------------------------------
* Form ``S`` from the *consent* of this bank for this purpose (policy engine, at the time of the query),
  before calling :func:`prepare_setup` or the cache; this module does no consent filtering.
* Record the request and the result as ledger entries (:meth:`PSIServer.transcript` has the facts:
  sizes, digests, mode — no items, no key), and apply rate limits and, for size-only mode, a minimum
  client set size if the policy wants one.
* Call :meth:`SetupCache.invalidate` when consent of (bank, purpose) changes; the digest check catches a
  changed set anyway, but invalidation also frees the key at once.
* Keep :class:`PreparedSetup` in memory only; never log, persist or return its key.
"""

from __future__ import annotations

import enum
import hashlib
import math
import os
import secrets
import struct
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from private_set_intersection import python as _psi

from pps_wire.errors import InvalidInput, InvalidUSCC
from pps_wire.uscc import validate_uscc

if TYPE_CHECKING:
    from pps.infra.executor import Executor

__all__ = [
    "DEFAULT_FPR",
    "DEFAULT_MAX_CLIENT_ITEMS",
    "MAX_CLIENT_ITEMS",
    "MAX_SETUP_AGE",
    "CacheLookup",
    "CacheOutcome",
    "ClientStage",
    "InvalidPSIMessage",
    "MessageType",
    "PSIClient",
    "PSIParams",
    "PSIResult",
    "PSIServer",
    "PSISetTooLarge",
    "PSIStageError",
    "PreparedSetup",
    "RequestMessage",
    "ResponseMessage",
    "ServerSet",
    "ServerStage",
    "ServerTranscript",
    "SetupCache",
    "SetupMessage",
    "SetupStructure",
    "decode_request",
    "decode_response",
    "decode_setup",
    "prepare_setup",
]

# --- constants -------------------------------------------------------------------------------------------

MAGIC: Final = b"PPSI"
VERSION: Final = 1
POINT_BYTES: Final = 33
"""A compressed P-256 point: 0x02 or 0x03, then the 32-byte x coordinate."""
DIGEST_BYTES: Final = 16

DEFAULT_FPR: Final = 1e-6
"""Probability that a query of up to ``max_client_items`` items reports at least one false member."""
DEFAULT_MAX_CLIENT_ITEMS: Final = 100_000
MAX_CLIENT_ITEMS: Final = 1_000_000
"""Hard ceiling on any client set: the request of 10^6 items is ~33 MB and costs ~2 min to process."""
MAX_SHARDS: Final = 256
MAX_SETUP_BYTES: Final = 512 * 1024 * 1024
MAX_SETUP_AGE: Final = timedelta(hours=24)
"""No cached server key lives longer than this, whatever the cache is configured to."""
DEFAULT_SETUP_MAX_AGE: Final = timedelta(minutes=30)
DEFAULT_SETUP_MAX_USES: Final = 100
_MAX_HASH_RANGE: Final = 2**62
"""The library keeps a GCS hash range in an int64; stay well clear of overflow."""
_MAX_GCS_DIV: Final = 62
_GCS_PADDING: Final = b"\x00" * 16
"""Zero bytes appended to a received GCS bit string (see :func:`_library_setup`)."""

_FRAME_HEAD = struct.Struct("!4sBB")
_SETUP_HEAD = struct.Struct("!BdIIH")
_REQUEST_HEAD = struct.Struct("!BI")
_RESPONSE_HEAD = struct.Struct(f"!{DIGEST_BYTES}s{DIGEST_BYTES}sI")
_U32 = struct.Struct("!I")
_SET_DOMAIN = b"pps/psi/server-set/v1\n"


class MessageType(enum.IntEnum):
    SETUP = 1
    """server -> client: the server set under the server key, one data structure per shard."""
    REQUEST = 2
    """client -> server: the client set under the client's fresh key."""
    RESPONSE = 3
    """server -> client: the request re-encrypted under the server key (sorted in size-only mode)."""


class SetupStructure(enum.IntEnum):
    GCS = 1
    """Golomb-compressed set: ~log2(n_max / fpr) + 1.5 bits per server element; false positives <= fpr."""
    RAW = 2
    """The sorted encrypted points, 35 bytes per server element; exact, all shards merged into one."""


class ServerStage(enum.Enum):
    AWAITING_REQUEST = "awaiting_request"
    RESPONDED = "responded"


class ClientStage(enum.Enum):
    NEW = "new"
    AWAITING_RESPONSE = "awaiting_response"
    DONE = "done"


# --- errors ----------------------------------------------------------------------------------------------


class InvalidPSIMessage(InvalidInput):
    """Bytes that are not a well-formed PSI message of the expected type, or that do not fit this session."""

    code = "invalid_psi_message"


class PSISetTooLarge(InvalidInput):
    """A client set (or a request) has more items than the limit the server's setup was made for."""

    code = "psi_set_too_large"


class PSIStageError(InvalidInput):
    """A protocol step was taken out of order (e.g. a second request for one session)."""

    code = "psi_wrong_stage"


# --- parameters ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PSIParams:
    """What a setup is made for; part of the cache key. Checked once, here."""

    fpr: float = DEFAULT_FPR
    max_client_items: int = DEFAULT_MAX_CLIENT_ITEMS
    structure: SetupStructure = SetupStructure.GCS

    def __post_init__(self) -> None:
        if not isinstance(self.fpr, float):
            raise TypeError(f"fpr must be a float, got {type(self.fpr).__name__}")
        if not (math.isfinite(self.fpr) and 0.0 < self.fpr < 1.0):
            raise ValueError(f"fpr must be in (0, 1), got {self.fpr!r}")
        if isinstance(self.max_client_items, bool) or not isinstance(self.max_client_items, int):
            raise TypeError(f"max_client_items must be an int, got {type(self.max_client_items).__name__}")
        if not 1 <= self.max_client_items <= MAX_CLIENT_ITEMS:
            raise ValueError(
                f"max_client_items must be in [1, {MAX_CLIENT_ITEMS}], got {self.max_client_items}"
            )
        if not isinstance(self.structure, SetupStructure):
            raise TypeError(f"structure must be a SetupStructure, got {self.structure!r}")


# --- messages: encoding and the one validation point per type ---------------------------------------------


@dataclass(frozen=True)
class SetupMessage:
    structure: SetupStructure
    fpr: float
    """Total false-positive bound of the query (the shards share it)."""
    max_client_items: int
    server_set_size: int
    shards: tuple[bytes, ...]
    """Serialised ``psi_proto.ServerSetup`` messages of the library, one per shard."""
    _parsed: tuple[Any, ...] = field(default=(), compare=False, repr=False)
    """The shards as checked library messages (filled by :func:`decode_setup`)."""

    def to_bytes(self) -> bytes:
        parts = [
            _FRAME_HEAD.pack(MAGIC, VERSION, MessageType.SETUP),
            _SETUP_HEAD.pack(
                self.structure, self.fpr, self.max_client_items, self.server_set_size, len(self.shards)
            ),
        ]
        for shard in self.shards:
            parts += [_U32.pack(len(shard)), shard]
        return b"".join(parts)


@dataclass(frozen=True)
class RequestMessage:
    reveal_intersection: bool
    points: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        head = _FRAME_HEAD.pack(MAGIC, VERSION, MessageType.REQUEST)
        return (
            head + _REQUEST_HEAD.pack(int(self.reveal_intersection), len(self.points)) + b"".join(self.points)
        )


@dataclass(frozen=True)
class ResponseMessage:
    request_digest: bytes
    setup_digest: bytes
    points: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        head = _FRAME_HEAD.pack(MAGIC, VERSION, MessageType.RESPONSE)
        body = _RESPONSE_HEAD.pack(self.request_digest, self.setup_digest, len(self.points))
        return head + body + b"".join(self.points)


def message_digest(data: bytes) -> bytes:
    """The 16-byte digest that binds a response to its request and setup (mix-up detection, not a MAC)."""
    return hashlib.sha256(data).digest()[:DIGEST_BYTES]


def _open_frame(data: object, expected: MessageType) -> memoryview:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidPSIMessage(f"a PSI {expected.name} message must be bytes, got {type(data).__name__}")
    view = memoryview(data).cast("B")
    if len(view) < _FRAME_HEAD.size:
        raise InvalidPSIMessage(f"a PSI {expected.name} message of {len(view)} bytes is too short to be one")
    magic, version, kind = _FRAME_HEAD.unpack_from(view)
    if magic != MAGIC:
        raise InvalidPSIMessage(f"not a PSI message (expected it to start with {MAGIC!r})")
    if version != VERSION:
        raise InvalidPSIMessage(f"PSI message version {version} is not supported (expected {VERSION})")
    if kind != expected:
        name = MessageType(kind).name if kind in MessageType._value2member_map_ else f"unknown type {kind}"
        raise InvalidPSIMessage(f"expected a PSI {expected.name} message, got {name}")
    return view[_FRAME_HEAD.size :]


def _split_points(body: memoryview, offset: int, count: int, what: str) -> tuple[bytes, ...]:
    expected = offset + POINT_BYTES * count
    if len(body) != expected:
        raise InvalidPSIMessage(
            f"PSI {what} body has {len(body)} bytes; {count} points need exactly {expected} "
            f"({offset} + {POINT_BYTES} x {count})"
        )
    raw = bytes(body[offset:])
    prefixes = set(raw[::POINT_BYTES])
    if not prefixes <= {2, 3}:
        raise InvalidPSIMessage(f"PSI {what} holds something that is not a compressed P-256 point")
    return tuple(raw[i : i + POINT_BYTES] for i in range(0, len(raw), POINT_BYTES))


def decode_request(data: bytes) -> RequestMessage:
    """Parse and check a REQUEST; raise :class:`InvalidPSIMessage` saying what is wrong."""
    body = _open_frame(data, MessageType.REQUEST)
    if len(body) < _REQUEST_HEAD.size:
        raise InvalidPSIMessage("PSI REQUEST is truncated (no header)")
    reveal, count = _REQUEST_HEAD.unpack_from(body)
    if reveal not in (0, 1):
        raise InvalidPSIMessage(f"PSI REQUEST reveal flag must be 0 or 1, got {reveal}")
    if count == 0:
        raise InvalidPSIMessage("PSI REQUEST holds no items")
    if count > MAX_CLIENT_ITEMS:
        raise PSISetTooLarge(
            f"PSI REQUEST holds {count} items; no request may hold more than {MAX_CLIENT_ITEMS}"
        )
    return RequestMessage(bool(reveal), _split_points(body, _REQUEST_HEAD.size, count, "REQUEST"))


def decode_response(data: bytes) -> ResponseMessage:
    """Parse and check a RESPONSE; raise :class:`InvalidPSIMessage` saying what is wrong."""
    body = _open_frame(data, MessageType.RESPONSE)
    if len(body) < _RESPONSE_HEAD.size:
        raise InvalidPSIMessage("PSI RESPONSE is truncated (no header)")
    request_digest, setup_digest, count = _RESPONSE_HEAD.unpack_from(body)
    if count > MAX_CLIENT_ITEMS:
        raise InvalidPSIMessage(f"PSI RESPONSE claims {count} items, more than any request may hold")
    points = _split_points(body, _RESPONSE_HEAD.size, count, "RESPONSE")
    return ResponseMessage(request_digest, setup_digest, points)


def decode_setup(data: bytes) -> SetupMessage:
    """Parse and check a SETUP, including every field the library would trust blindly.

    The library aborts or reads out of bounds on some hostile setups (a GCS hash range of 0, a negative or
    huge Golomb divisor, a Bloom filter without bits or with 2^31 hash functions); this refuses them first.
    """
    body = _open_frame(data, MessageType.SETUP)
    if len(data) > MAX_SETUP_BYTES:
        raise InvalidPSIMessage(f"PSI SETUP of {len(data)} bytes exceeds the limit of {MAX_SETUP_BYTES}")
    if len(body) < _SETUP_HEAD.size:
        raise InvalidPSIMessage("PSI SETUP is truncated (no header)")
    structure, fpr, max_client_items, server_set_size, shard_count = _SETUP_HEAD.unpack_from(body)
    if structure not in SetupStructure._value2member_map_:
        raise InvalidPSIMessage(f"PSI SETUP names unknown data structure {structure}")
    if not (math.isfinite(fpr) and 0.0 < fpr < 1.0):
        raise InvalidPSIMessage(f"PSI SETUP false-positive rate must be in (0, 1), got {fpr!r}")
    if not 1 <= max_client_items <= MAX_CLIENT_ITEMS:
        raise InvalidPSIMessage(f"PSI SETUP max_client_items {max_client_items} is out of range")
    if not 1 <= shard_count <= MAX_SHARDS:
        raise InvalidPSIMessage(f"PSI SETUP must have 1 to {MAX_SHARDS} shards, got {shard_count}")
    kind = SetupStructure(structure)
    offset = _SETUP_HEAD.size
    shards: list[bytes] = []
    parsed: list[Any] = []
    for i in range(shard_count):
        if len(body) < offset + _U32.size:
            raise InvalidPSIMessage(f"PSI SETUP is truncated before shard {i}")
        (length,) = _U32.unpack_from(body, offset)
        offset += _U32.size
        if len(body) < offset + length:
            raise InvalidPSIMessage(f"PSI SETUP is truncated inside shard {i} (needs {length} bytes)")
        shard = bytes(body[offset : offset + length])
        offset += length
        parsed.append(_check_shard(shard, kind, i))
        shards.append(shard)
    if offset != len(body):
        raise InvalidPSIMessage(f"PSI SETUP has {len(body) - offset} unexpected bytes after its shards")
    if kind is SetupStructure.RAW and shard_count != 1:
        raise InvalidPSIMessage("a RAW PSI SETUP has exactly one shard")
    return SetupMessage(kind, fpr, max_client_items, server_set_size, tuple(shards), tuple(parsed))


def _check_shard(blob: bytes, kind: SetupStructure, index: int) -> Any:
    try:
        parsed = _psi.ServerSetup.FromString(blob)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise InvalidPSIMessage(f"PSI SETUP shard {index} is not a valid ServerSetup: {exc}") from None
    which = parsed.WhichOneof("data_structure")
    if which != kind.name.lower():
        raise InvalidPSIMessage(f"PSI SETUP shard {index} holds {which or 'nothing'}, expected {kind.name}")
    if kind is SetupStructure.GCS:
        if not 0 <= parsed.gcs.div <= _MAX_GCS_DIV:
            raise InvalidPSIMessage(
                f"PSI SETUP shard {index}: Golomb divisor {parsed.gcs.div} is out of range"
            )
        if not 1 <= parsed.gcs.hash_range <= _MAX_HASH_RANGE:
            raise InvalidPSIMessage(
                f"PSI SETUP shard {index}: hash range {parsed.gcs.hash_range} is out of range"
            )
    else:
        elements = parsed.raw.encrypted_elements
        if any(len(e) != POINT_BYTES for e in elements):
            raise InvalidPSIMessage(
                f"PSI SETUP shard {index}: a RAW element is not a {POINT_BYTES}-byte point"
            )
        if any(elements[i] >= elements[i + 1] for i in range(len(elements) - 1)):
            raise InvalidPSIMessage(f"PSI SETUP shard {index}: RAW elements must be sorted and distinct")
    return parsed


def _library_setup(parsed: Any, kind: SetupStructure) -> Any:
    """A checked shard (from :func:`decode_setup`) as the library's ``ServerSetup``, hardened for its decoder.

    The library's Golomb decoder reads up to 9 bytes past the code it decodes without a bounds check, so a
    truncated or hostile bit string makes it read past the buffer. Zero bytes appended to the string decode
    as nothing (the decoder skips zero bytes and stops at the end), so an honest set gives the same answer
    and a hostile one stays inside the buffer.
    """
    if kind is SetupStructure.GCS:
        hardened = _psi.ServerSetup()
        hardened.gcs.div = parsed.gcs.div
        hardened.gcs.hash_range = parsed.gcs.hash_range
        hardened.gcs.bits = parsed.gcs.bits + _GCS_PADDING
        return hardened
    return parsed


# --- the server set ---------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class ServerSet:
    """The server's items, deduplicated and sorted, with a digest of exactly this set (the cache key)."""

    items: tuple[str, ...]
    digest: str

    @classmethod
    def of(cls, items: Iterable[str]) -> ServerSet:
        """Canonicalise: USCCs are expected normalised (upper-case, 18 characters); full validation runs
        when a setup is prepared (in the workers, in parallel), not on every cache lookup."""
        if isinstance(items, str | bytes):
            raise TypeError("items must be an iterable of USCC strings, not a single string")
        distinct = set(items)
        for x in distinct:
            if not isinstance(x, str) or len(x) != 18:
                raise InvalidUSCC(f"server set item {x!r} is not an 18-character USCC string")
        unique = sorted(distinct)
        # Items have a fixed length, so the joined string is an injective encoding of the set.
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


def _make_shard(server_key: bytes, items: list[str], fpr: float, max_client_items: int, kind: int) -> bytes:
    """Validate and encrypt one shard (runs in a worker process, or in-process for one shard)."""
    for x in items:
        if validate_uscc(x) != x:
            raise InvalidUSCC(f"server set item {x!r} is not in normalised form (upper-case, trimmed)")
    server = _psi.server.CreateFromKey(server_key, False)
    setup = server.CreateSetupMessage(fpr, max_client_items, items, _library_structure(SetupStructure(kind)))
    return bytes(setup.SerializeToString())


def _shard_state(payload: tuple[bytes, float, int, int]) -> tuple[bytes, float, int, int]:
    return payload


def _shard_chunk(state: tuple[bytes, float, int, int], items: list[str]) -> bytes:
    """An executor chunk: one shard, under the server key the worker received once."""
    server_key, fpr, max_client_items, kind = state
    return _make_shard(server_key, items, fpr, max_client_items, kind)


def default_workers() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def prepare_setup(
    server_set: ServerSet,
    params: PSIParams | None = None,
    *,
    shards: int | None = None,
    workers: int | None = None,
    now: datetime | None = None,
    executor: Executor | None = None,
) -> PreparedSetup:
    """Make a fresh server key and the SETUP for ``server_set``: the expensive, cacheable half.

    ``shards`` (default: ``workers``) random shards are encrypted by ``workers`` (default: the usable cores)
    spawned processes; with one worker everything runs in this process. The client pays one decryption of
    its set per GCS shard, so more shards than cores only costs the client. RAW shards are merged into one.
    Spawned workers import the caller's ``__main__`` module, which must therefore be import-safe (the usual
    ``if __name__ == "__main__":`` guard); servers, pytest and Ray workers are. With ``executor`` (a local
    pool or Ray, :mod:`pps.infra.executor`) the shards run on its workers instead (``workers`` defaults to its
    worker count), the server key shipped once per worker.
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
            raise ValueError(f"{name} must be an int in [1, {MAX_SHARDS}], got {value!r}")
    n = len(server_set)
    if n > 2**32 - 1:
        raise ValueError(f"server set of {n} items is too large for one setup")
    k = max(1, min(shards, n))
    fpr_shard = params.fpr / k if params.structure is SetupStructure.GCS else params.fpr
    hash_range = max(params.max_client_items, -(-n // k)) * params.max_client_items / fpr_shard
    if params.structure is SetupStructure.GCS and hash_range > _MAX_HASH_RANGE:
        raise ValueError(
            f"fpr={params.fpr} with max_client_items={params.max_client_items}, {k} shards and {n} items "
            f"needs a GCS hash range of {hash_range:.3g}, above the library's limit {_MAX_HASH_RANGE:.3g}: "
            "raise fpr or lower max_client_items"
        )

    from pps.infra.executor import LocalExecutor, Shared  # the server's half only: the bank never prepares

    server_key = bytes(_psi.server.CreateWithNewKey(False).GetPrivateKeyBytes())
    # A secret, uniformly random partition: the client must not be able to tell which shard an item is in.
    order = np.random.default_rng(secrets.randbits(128)).permutation(n).tolist()
    parts = [[server_set.items[i] for i in order[j::k]] for j in range(k)]
    own = executor is None  # a pool of our own, stopped when the setup is made
    if executor is None:
        executor = LocalExecutor(1 if k == 1 else min(workers, k))
    shared = Shared(
        secrets.token_hex(16),  # names this setup's state; says nothing of the key
        (server_key, fpr_shard, params.max_client_items, int(params.structure)),
        _shard_state,
    )
    try:
        blobs = list(executor.map_chunks(_shard_chunk, parts, shared=shared))
    finally:
        if own:
            executor.close()
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


# --- the server half ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerTranscript:
    """What the server saw and sent in one session: what the service records in the ledger. No secrets."""

    reveal_intersection: bool
    server_set_size: int
    server_set_digest: str
    setup_digest: str
    client_set_size: int | None
    """The only thing the server learns about the client's set."""
    request_digest: str | None
    response_digest: str | None


class PSIServer:
    """The safe-room's half of one PSI session, over a prepared (possibly cached) setup.

    Stages: ``AWAITING_REQUEST`` --:meth:`process_request`--> ``RESPONDED``. :meth:`setup_message` may be
    sent at any stage. One request per session; a malformed request changes nothing.
    """

    def __init__(self, setup: PreparedSetup, *, reveal_intersection: bool) -> None:
        if not isinstance(setup, PreparedSetup):
            raise TypeError(f"setup must be a PreparedSetup, got {type(setup).__name__}")
        if not isinstance(reveal_intersection, bool):
            raise TypeError("reveal_intersection must be a bool")
        self._setup = setup
        self.reveal_intersection = reveal_intersection
        self.stage = ServerStage.AWAITING_REQUEST
        self._client_set_size: int | None = None
        self._request_digest: bytes | None = None
        self._response_digest: bytes | None = None

    def setup_message(self) -> bytes:
        return self._setup.message

    def process_request(self, request: bytes) -> bytes:
        """Re-encrypt the client's points under the server key; return the RESPONSE message."""
        if self.stage is not ServerStage.AWAITING_REQUEST:
            raise PSIStageError(f"this PSI session already answered a request (stage {self.stage.value})")
        msg = decode_request(request)
        if msg.reveal_intersection != self.reveal_intersection:
            wanted, offered = (
                ("the intersection", "only its size")
                if msg.reveal_intersection
                else ("only the size", "the intersection")
            )
            raise InvalidPSIMessage(f"the request asks for {wanted}, but this session reveals {offered}")
        limit = self._setup.params.max_client_items
        if len(msg.points) > limit:
            raise PSISetTooLarge(
                f"the request holds {len(msg.points)} items; this setup allows at most {limit}"
            )
        library_request = _psi.Request()
        library_request.reveal_intersection = self.reveal_intersection
        library_request.encrypted_elements.extend(msg.points)
        server = _psi.server.CreateFromKey(self._setup._server_key, self.reveal_intersection)
        try:
            library_response = server.ProcessRequest(library_request)
        except (RuntimeError, ValueError) as exc:
            raise InvalidPSIMessage(f"the request holds an invalid point: {_first_line(exc)}") from None
        points = tuple(bytes(p) for p in library_response.encrypted_elements)
        response = ResponseMessage(
            message_digest(bytes(request)), self._setup.setup_digest, points
        ).to_bytes()
        self._client_set_size = len(msg.points)
        self._request_digest = message_digest(bytes(request))
        self._response_digest = message_digest(response)
        self.stage = ServerStage.RESPONDED
        return response

    def transcript(self) -> ServerTranscript:
        return ServerTranscript(
            reveal_intersection=self.reveal_intersection,
            server_set_size=self._setup.server_set_size,
            server_set_digest=self._setup.set_digest,
            setup_digest=self._setup.setup_digest.hex(),
            client_set_size=self._client_set_size,
            request_digest=self._request_digest.hex() if self._request_digest else None,
            response_digest=self._response_digest.hex() if self._response_digest else None,
        )


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


# --- the client half ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PSIResult:
    reveal_intersection: bool
    size: int
    intersection: frozenset[str] | None
    """The client's items found in the server set; ``None`` in size-only mode."""
    client_set_size: int
    server_set_size: int
    """As the SETUP message states it (the data structures reveal it anyway)."""
    fpr: float
    """The bound on false members in this answer (0.0 for RAW)."""


class PSIClient:
    """The bank's half of one PSI session. The client key is fresh per session and never leaves the object.

    Stages: ``NEW`` --:meth:`create_request`--> ``AWAITING_RESPONSE`` --:meth:`finish`--> ``DONE``.
    Items are validated and normalised USCCs (:func:`pps.identity.uscc.validate_uscc`), deduplicated; a
    list longer than ``max_items`` (the server's ``max_client_items``) is refused before any work.
    ``max_fpr`` refuses a setup whose false-positive bound is worse than the bank accepts.
    """

    def __init__(
        self,
        items: Iterable[str],
        *,
        reveal_intersection: bool,
        max_items: int = DEFAULT_MAX_CLIENT_ITEMS,
        max_fpr: float = DEFAULT_FPR,
    ) -> None:
        if isinstance(items, str | bytes):
            raise TypeError("items must be an iterable of USCC strings, not a single string")
        if not isinstance(reveal_intersection, bool):
            raise TypeError("reveal_intersection must be a bool")
        if (
            isinstance(max_items, bool)
            or not isinstance(max_items, int)
            or not 1 <= max_items <= MAX_CLIENT_ITEMS
        ):
            raise ValueError(f"max_items must be an int in [1, {MAX_CLIENT_ITEMS}], got {max_items!r}")
        if not (isinstance(max_fpr, float | int) and 0.0 < max_fpr < 1.0):
            raise ValueError(f"max_fpr must be in (0, 1), got {max_fpr!r}")
        raw = list(items)
        if len(raw) > max_items:
            raise PSISetTooLarge(f"the customer list has {len(raw)} items; at most {max_items} are allowed")
        if not raw:
            raise InvalidInput("the customer list is empty")
        normalised: set[str] = set()
        for i, x in enumerate(raw):
            try:
                normalised.add(validate_uscc(x))
            except InvalidUSCC as exc:
                raise InvalidUSCC(f"customer list item {i}: {exc.message}", details={"index": i}) from None
        ordered = list(normalised)
        secrets.SystemRandom().shuffle(ordered)
        self._items: tuple[str, ...] = tuple(ordered)
        self.reveal_intersection = reveal_intersection
        self.max_fpr = float(max_fpr)
        self.stage = ClientStage.NEW
        self._client = _psi.client.CreateWithNewKey(reveal_intersection)
        self._request: bytes | None = None

    @property
    def set_size(self) -> int:
        return len(self._items)

    def create_request(self) -> bytes:
        if self.stage is not ClientStage.NEW:
            raise PSIStageError(f"this PSI session already made its request (stage {self.stage.value})")
        library_request = self._client.CreateRequest(list(self._items))
        points = tuple(bytes(p) for p in library_request.encrypted_elements)
        self._request = RequestMessage(self.reveal_intersection, points).to_bytes()
        self.stage = ClientStage.AWAITING_RESPONSE
        return self._request

    def finish(self, setup: bytes, response: bytes) -> PSIResult:
        """Check both server messages and compute the result. A failure changes nothing (retry allowed)."""
        if self.stage is not ClientStage.AWAITING_RESPONSE or self._request is None:
            raise PSIStageError(f"finish() needs a request in flight (stage {self.stage.value})")
        setup_msg = decode_setup(setup)
        response_msg = decode_response(response)
        if response_msg.request_digest != message_digest(self._request):
            raise InvalidPSIMessage("the response does not answer this session's request")
        if response_msg.setup_digest != message_digest(bytes(setup)):
            raise InvalidPSIMessage("the response was not made with this setup (different server key or set)")
        if len(response_msg.points) != self.set_size:
            raise InvalidPSIMessage(
                f"the response has {len(response_msg.points)} points for {self.set_size} items"
            )
        if self.set_size > setup_msg.max_client_items:
            raise PSISetTooLarge(
                f"the setup allows at most {setup_msg.max_client_items} client items, this set has {self.set_size}"
            )
        if setup_msg.structure is SetupStructure.GCS and setup_msg.fpr > self.max_fpr:
            raise InvalidPSIMessage(
                f"the setup's false-positive rate {setup_msg.fpr} is above max_fpr {self.max_fpr}"
            )
        library_response = _psi.Response()
        library_response.encrypted_elements.extend(response_msg.points)
        indices: set[int] = set()
        size = 0
        try:
            for parsed in setup_msg._parsed:
                shard = _library_setup(parsed, setup_msg.structure)
                if self.reveal_intersection:
                    indices.update(self._client.GetIntersection(shard, library_response))
                else:
                    size += int(self._client.GetIntersectionSize(shard, library_response))
        except (RuntimeError, ValueError) as exc:
            raise InvalidPSIMessage(
                f"the server's messages could not be processed: {_first_line(exc)}"
            ) from None
        if any(not 0 <= i < self.set_size for i in indices):  # pragma: no cover - library contract
            raise InvalidPSIMessage("the library returned an index outside the request")
        intersection = frozenset(self._items[i] for i in indices) if self.reveal_intersection else None
        self.stage = ClientStage.DONE
        return PSIResult(
            reveal_intersection=self.reveal_intersection,
            size=len(indices) if self.reveal_intersection else min(size, self.set_size),
            intersection=intersection,
            client_set_size=self.set_size,
            server_set_size=setup_msg.server_set_size,
            fpr=setup_msg.fpr if setup_msg.structure is SetupStructure.GCS else 0.0,
        )


# --- the setup cache ---------------------------------------------------------------------------------------


class CacheOutcome(enum.Enum):
    HIT = "hit"
    MISS = "miss"
    """Nothing cached for (bank, purpose)."""
    SET_CHANGED = "set_changed"
    """The server set is not the one the cached setup was made for (consent changed): entry dropped."""
    PARAMS_CHANGED = "params_changed"
    EXPIRED = "expired"
    """The cached server key is older than ``max_age``: entry dropped."""
    USED_UP = "used_up"
    """The cached server key served ``max_uses`` sessions: entry dropped."""


@dataclass(frozen=True)
class CacheLookup:
    outcome: CacheOutcome
    setup: PreparedSetup | None


@dataclass
class _Entry:
    setup: PreparedSetup
    uses: int = 0


class SetupCache:
    """Prepared setups per (bank id, purpose), each valid only for the exact server set it was made for.

    One entry per (bank, purpose): the latest set. A lookup returns the setup only if the set digest and
    the parameters match, the key is younger than ``max_age`` and has served fewer than ``max_uses``
    sessions; otherwise it says why and drops the entry. :meth:`invalidate` drops entries explicitly (call
    it when consent for (bank, purpose) changes). In-process and thread-safe; keys never leave memory.
    """

    def __init__(
        self,
        *,
        max_age: timedelta = DEFAULT_SETUP_MAX_AGE,
        max_uses: int = DEFAULT_SETUP_MAX_USES,
        max_entries: int = 32,
        executor: Executor | None = None,
    ) -> None:
        if not timedelta(0) < max_age <= MAX_SETUP_AGE:
            raise ValueError(f"max_age must be in (0, {MAX_SETUP_AGE}], got {max_age}")
        for name, value in (("max_uses", max_uses), ("max_entries", max_entries)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.max_age = max_age
        self.max_uses = max_uses
        self.max_entries = max_entries
        self.executor = executor
        """Where setups are prepared (:mod:`pps.infra.executor`); None: this process and its own spawned pool."""
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()
        self._preparing: dict[tuple[str, str], threading.Lock] = {}

    @staticmethod
    def _key(bank_id: str, purpose: str) -> tuple[str, str]:
        for name, value in (("bank_id", bank_id), ("purpose", purpose)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        return (bank_id, purpose)

    def lookup_at_time(
        self, bank_id: str, purpose: str, server_set: ServerSet, params: PSIParams, now: datetime
    ) -> CacheLookup:
        key = self._key(bank_id, purpose)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return CacheLookup(CacheOutcome.MISS, None)
            outcome = CacheOutcome.HIT
            if entry.setup.set_digest != server_set.digest:
                outcome = CacheOutcome.SET_CHANGED
            elif entry.setup.params != params:
                outcome = CacheOutcome.PARAMS_CHANGED
            elif now - entry.setup.created_at >= self.max_age or now < entry.setup.created_at:
                outcome = CacheOutcome.EXPIRED
            elif entry.uses >= self.max_uses:
                outcome = CacheOutcome.USED_UP
            if outcome is not CacheOutcome.HIT:
                del self._entries[key]
                return CacheLookup(outcome, None)
            entry.uses += 1
            self._entries[key] = self._entries.pop(key)  # most recently used last
            return CacheLookup(CacheOutcome.HIT, entry.setup)

    def lookup(self, bank_id: str, purpose: str, server_set: ServerSet, params: PSIParams) -> CacheLookup:
        return self.lookup_at_time(bank_id, purpose, server_set, params, datetime.now(UTC))

    def store(self, bank_id: str, purpose: str, setup: PreparedSetup, *, uses: int = 0) -> None:
        """Cache ``setup`` for (bank, purpose), replacing what was there; ``uses`` already made of it."""
        if not isinstance(setup, PreparedSetup):
            raise TypeError(f"setup must be a PreparedSetup, got {type(setup).__name__}")
        key = self._key(bank_id, purpose)
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = _Entry(setup, uses)
            while len(self._entries) > self.max_entries:
                del self._entries[next(iter(self._entries))]

    def invalidate(self, bank_id: str, purpose: str | None = None) -> int:
        """Drop the entry of (bank, purpose), or every entry of the bank; return how many were dropped."""
        with self._lock:
            doomed = [k for k in self._entries if k[0] == bank_id and (purpose is None or k[1] == purpose)]
            for k in doomed:
                del self._entries[k]
            return len(doomed)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get_or_prepare_at_time(
        self,
        bank_id: str,
        purpose: str,
        server_set: ServerSet,
        params: PSIParams,
        now: datetime,
        *,
        workers: int | None = None,
        shards: int | None = None,
    ) -> tuple[PreparedSetup, CacheOutcome]:
        """The cached setup, or a fresh one (stored). Concurrent callers for one key prepare it once."""
        key = self._key(bank_id, purpose)
        with self._lock:
            gate = self._preparing.setdefault(key, threading.Lock())
        with gate:
            found = self.lookup_at_time(bank_id, purpose, server_set, params, now)
            if found.setup is not None:
                return found.setup, found.outcome
            setup = prepare_setup(
                server_set, params, workers=workers, shards=shards, now=now, executor=self.executor
            )
            self.store(bank_id, purpose, setup, uses=1)
            return setup, found.outcome

    def get_or_prepare(
        self,
        bank_id: str,
        purpose: str,
        server_set: ServerSet,
        params: PSIParams | None = None,
        *,
        workers: int | None = None,
        shards: int | None = None,
    ) -> tuple[PreparedSetup, CacheOutcome]:
        return self.get_or_prepare_at_time(
            bank_id,
            purpose,
            server_set,
            params or PSIParams(),
            datetime.now(UTC),
            workers=workers,
            shards=shards,
        )


def run_locally(
    client_items: Sequence[str],
    setup: PreparedSetup,
    *,
    reveal_intersection: bool,
) -> tuple[PSIResult, ServerTranscript]:
    """Both halves in one process, exchanging only bytes (tests, benchmarks, the demo)."""
    client = PSIClient(
        client_items,
        reveal_intersection=reveal_intersection,
        max_items=setup.params.max_client_items,
        max_fpr=max(setup.params.fpr, DEFAULT_FPR),
    )
    server = PSIServer(setup, reveal_intersection=reveal_intersection)
    request = client.create_request()
    response = server.process_request(request)
    return client.finish(server.setup_message(), response), server.transcript()
