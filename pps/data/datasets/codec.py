"""Column chunks: a compact binary encoding and their authenticated encryption (AES-256-GCM).

Plain encoding of one column chunk of ``n`` values::

    kind (1 byte) | n (uint32 LE) | validity bitmap (ceil(n/8) bytes, numpy packbits order) | payload

with payload ``int64`` / ``float64`` / ``uint8`` little-endian arrays for int, float and bool columns, and
``n + 1`` uint32 offsets followed by UTF-8 bytes for text-like columns (uscc, string, date, month).

Encrypted chunk: ``nonce (12) || ciphertext || tag (16)`` under the version's data key, with associated data
that binds dataset id, version, column, chunk index and row count — a chunk moved to another place (another
dataset, version, column or position) does not decrypt.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pps.data.datasets.schema import ColumnType
from pps.errors import DataIntegrityError

NONCE = 12
_KIND = {
    ColumnType.int: 1,
    ColumnType.float: 2,
    ColumnType.bool: 3,
    ColumnType.uscc: 4,
    ColumnType.resident_id: 4,  # stored as the person code, never the number
    ColumnType.string: 4,
    ColumnType.date: 4,
    ColumnType.month: 4,
}
_NUMERIC: dict[int, np.dtype[Any]] = {1: np.dtype("<i8"), 2: np.dtype("<f8"), 3: np.dtype("u1")}


@dataclass
class Column:
    """Decoded values and their validity (False = missing)."""

    values: np.ndarray[Any, Any]
    valid: np.ndarray[Any, np.dtype[np.bool_]]

    def __len__(self) -> int:
        return len(self.valid)


def encode(ctype: ColumnType, values: list[Any]) -> bytes:
    kind = _KIND[ctype]
    n = len(values)
    valid = np.fromiter((v is not None for v in values), dtype=bool, count=n)
    head = struct.pack("<BI", kind, n) + np.packbits(valid).tobytes()
    if kind in _NUMERIC:
        fill: Any = 0.0 if kind == 2 else 0
        arr = np.array([fill if v is None else v for v in values], dtype=_NUMERIC[kind])
        return head + bytes(arr.tobytes())
    parts = [b"" if v is None else v.encode() for v in values]
    offsets = np.zeros(n + 1, dtype="<u4")
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    return head + offsets.tobytes() + b"".join(parts)


def decode(data: bytes) -> Column:
    try:
        kind, n = struct.unpack_from("<BI", data)
        pos = 5
        nbytes = (n + 7) // 8
        valid = np.unpackbits(np.frombuffer(data, dtype=np.uint8, count=nbytes, offset=pos), count=n).astype(
            bool
        )
        pos += nbytes
        if kind in _NUMERIC:
            values = np.frombuffer(data, dtype=_NUMERIC[kind], count=n, offset=pos)
            if kind == 3:
                values = values.astype(bool)
            return Column(values, valid)
        offsets = np.frombuffer(data, dtype="<u4", count=n + 1, offset=pos)
        blob = data[pos + 4 * (n + 1) :]
        out = np.empty(n, dtype=object)
        for i in range(n):
            out[i] = blob[offsets[i] : offsets[i + 1]].decode() if valid[i] else None
        return Column(out, valid)
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise DataIntegrityError(f"a column chunk does not decode: {exc}") from exc


def chunk_aad(dataset_id: str, version: int, column: str, chunk: int, rows: int) -> bytes:
    return f"pps/chunk/v1|{dataset_id}|{version}|{column}|{chunk}|{rows}".encode()


def dek_aad(dataset_id: str, version: int) -> bytes:
    return f"pps/dek/v1|{dataset_id}|{version}".encode()


def seal(dek: bytes, aad: bytes, plaintext: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE)
    return nonce + AESGCM(dek).encrypt(nonce, plaintext, aad)


def open_sealed(dek: bytes, aad: bytes, blob: bytes) -> bytes:
    try:
        return AESGCM(dek).decrypt(blob[:NONCE], blob[NONCE:], aad)
    except InvalidTag:
        raise DataIntegrityError(
            "an encrypted chunk does not authenticate: it was changed, swapped or truncated"
        ) from None
