"""TenSEAL's wire formats, read and written without TenSEAL: strict protobuf readers (unknown fields, duplicate
fields and trailing bytes are refused) for a public context (``TenSEALContextProto``) and a CKKS vector
(``CKKSVectorProto``), so that hostile bytes never reach native code before they were checked in isolation."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from protocols.errors import ContextHasSecretKey, InvalidCiphertext, InvalidContext


class _ProtoError(InvalidCiphertext):
    """Bytes that are not the protobuf message expected (raised as such by :func:`decode_ckks_vector`)."""


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    for shift in range(0, 70, 7):
        if pos >= len(data):
            raise _ProtoError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            if result >= 1 << 64:
                raise _ProtoError("varint out of range")
            return result, pos
    raise _ProtoError("varint too long")


def _proto_fields(data: bytes, schema: Mapping[int, int]) -> list[tuple[int, int | bytes]]:
    """Split a protobuf message into (field, value); ``schema`` maps field numbers to allowed wire types.

    Wire type 2 of a field declared as varint (0) is accepted as a packed repeated field and returned raw.
    """
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if number not in schema:
            raise _ProtoError(f"unexpected field {number}")
        if wire != schema[number] and not (wire == 2 and schema[number] == 0):
            raise _ProtoError(f"field {number} has wire type {wire}, expected {schema[number]}")
        value: int | bytes
        if wire == 0:
            value, pos = read_varint(data, pos)
        elif wire == 1:
            if pos + 8 > len(data):
                raise _ProtoError(f"field {number} is truncated")
            value = data[pos : pos + 8]
            pos += 8
        elif wire == 2:
            length, pos = read_varint(data, pos)
            if pos + length > len(data):
                raise _ProtoError(f"field {number} is truncated")
            value = data[pos : pos + length]
            pos += length
        else:  # pragma: no cover - excluded by the schema check
            raise _ProtoError(f"wire type {wire} is not supported")
        out.append((number, value))
    return out


def _single(fields: list[tuple[int, int | bytes]], number: int) -> int | bytes | None:
    values = [v for n, v in fields if n == number]
    if len(values) > 1:
        raise _ProtoError(f"field {number} appears {len(values)} times")
    return values[0] if values else None


def pb_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def pb_len(number: int, payload: bytes) -> bytes:
    return pb_varint(number << 3 | 2) + pb_varint(len(payload)) + payload


def encode_ckks_vector(seal_ciphertext: bytes, size: int, scale: float) -> bytes:
    """A TenSEAL ``CKKSVectorProto`` holding one SEAL ciphertext of ``size`` meaningful slots."""
    return (
        pb_len(1, pb_varint(size))
        + pb_len(2, seal_ciphertext)
        + pb_varint(3 << 3 | 1)
        + struct.pack("<d", scale)
    )


@dataclass(frozen=True)
class CKKSVectorBlob:
    """A TenSEAL CKKS vector as parsed without SEAL: its meaningful slots, SEAL ciphertext bytes and scale."""

    size: int
    seal_bytes: bytes
    scale: float


def decode_ckks_vector(blob: bytes) -> CKKSVectorBlob:
    """Parse a serialised TenSEAL CKKS vector (protobuf) without loading it into SEAL; :class:`InvalidCiphertext`
    if it is not one. The SEAL ciphertext inside is still unchecked: check it with
    :func:`protocols.he_scoring.checker.run_isolated`."""
    fields = _proto_fields(blob, {1: 0, 2: 2, 3: 1})
    sizes: list[int] = []
    for number, value in fields:
        if number != 1:
            continue
        if isinstance(value, int):
            sizes.append(value)
        else:
            pos = 0
            while pos < len(value):
                item, pos = read_varint(value, pos)
                sizes.append(item)
    ciphertexts = [v for n, v in fields if n == 2]
    if len(ciphertexts) != 1 or len(sizes) != 1:
        raise _ProtoError(
            f"expected one ciphertext chunk, got {len(ciphertexts)} ciphertexts and {len(sizes)} sizes"
        )
    scale_raw = _single(fields, 3)
    scale = struct.unpack("<d", scale_raw)[0] if isinstance(scale_raw, bytes) else 0.0
    ciphertext = ciphertexts[0]
    assert isinstance(ciphertext, bytes)
    return CKKSVectorBlob(size=sizes[0], seal_bytes=ciphertext, scale=scale)


@dataclass(frozen=True)
class ContextParts:
    parameters: bytes
    public_key: bytes
    scale: float | None


def parse_context(data: bytes) -> ContextParts:
    """Strictly parse a ``TenSEALContextProto`` and refuse anything scoring does not need."""
    try:
        top = _proto_fields(data, {1: 2, 2: 2, 3: 2, 4: 0})
        parameters = _single(top, 1)
        public = _single(top, 2)
        private = _single(top, 3)
        encryption_type = _single(top, 4)
        if private is not None:
            assert isinstance(private, bytes)
            private_fields = _proto_fields(private, {1: 2, 2: 0, 3: 0})
            secret = _single(private_fields, 1)
            if secret:
                raise ContextHasSecretKey(
                    "the context carries a secret key; send the public context only "
                    "(TenSEAL: context.serialize(save_secret_key=False))"
                )
            raise ContextHasSecretKey("the context carries a private part; send the public context only")
        if encryption_type not in (None, 0):
            raise InvalidContext(
                "the context uses symmetric encryption and has no public key; scoring needs an asymmetric "
                "context (the safe-room re-randomises results under the public key)"
            )
        if not isinstance(parameters, bytes) or not parameters:
            raise InvalidContext("the context has no encryption parameters")
        if not isinstance(public, bytes) or not public:
            raise InvalidContext("the context has no public part (no public key)")
        public_fields = _proto_fields(public, {1: 2, 2: 0, 3: 1, 4: 2, 5: 2})
        public_key = _single(public_fields, 1)
        scale_raw = _single(public_fields, 3)
        _single(public_fields, 2)
        if _single(public_fields, 5):
            raise InvalidContext(
                "the context carries Galois keys; encrypted scoring needs no rotations "
                "(serialise with save_galois_keys=False)"
            )
        if _single(public_fields, 4):
            raise InvalidContext(
                "the context carries relinearisation keys; encrypted scoring needs none "
                "(serialise with save_relin_keys=False)"
            )
        if not isinstance(public_key, bytes) or not public_key:
            raise InvalidContext("the context has no public key")
    except _ProtoError as exc:
        raise InvalidContext(f"not a TenSEAL context: {exc}") from None
    scale = struct.unpack("<d", scale_raw)[0] if isinstance(scale_raw, bytes) else None
    return ContextParts(parameters=parameters, public_key=public_key, scale=scale)


def context_id_of(public_context: bytes) -> str:
    """The context id: SHA-256 (hex) of the public context exactly as sent."""
    return hashlib.sha256(public_context).hexdigest()
