"""The PSI wire format: constants, message types, parameters, the SETUP, REQUEST and RESPONSE frames and the one
validation point per frame (``docs/protocols.md``, "PSI", states the format)."""

from __future__ import annotations

import enum
import hashlib
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from private_set_intersection import python as _psi

from protocols.errors import InvalidParameters, InvalidPSIMessage, PSISetTooLarge

Normalise = Callable[[str], str]
"""The caller's knowledge of the items: returns an item's canonical form, or raises the caller's own error if
it is not a valid item (the PSI service passes ``pps.identity.uscc.validate_uscc``). Both sides must agree on it:
the points are hashes of the canonical forms. A module-level function: setups send it to worker processes."""

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
MAX_HASH_RANGE: Final = 2**62
"""The library keeps a GCS hash range in an int64; stay well clear of overflow."""
_MAX_GCS_DIV: Final = 62
_GCS_PADDING: Final = b"\x00" * 16
"""Zero bytes appended to a received GCS bit string (see :func:`_library_setup`)."""

_FRAME_HEAD = struct.Struct("!4sBB")
_SETUP_HEAD = struct.Struct("!BdIIH")
_REQUEST_HEAD = struct.Struct("!BI")
_RESPONSE_HEAD = struct.Struct(f"!{DIGEST_BYTES}s{DIGEST_BYTES}sI")
_U32 = struct.Struct("!I")


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
            raise InvalidParameters(f"fpr must be in (0, 1), got {self.fpr!r}")
        if isinstance(self.max_client_items, bool) or not isinstance(self.max_client_items, int):
            raise TypeError(f"max_client_items must be an int, got {type(self.max_client_items).__name__}")
        if not 1 <= self.max_client_items <= MAX_CLIENT_ITEMS:
            raise InvalidParameters(
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
        if not 1 <= parsed.gcs.hash_range <= MAX_HASH_RANGE:
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


def library_setup(parsed: Any, kind: SetupStructure) -> Any:
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
