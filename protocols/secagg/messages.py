"""The secure-aggregation frames: one header, a body per message type, and the one parser per client message
(``docs/protocols.md``, "Horizontal training with secure aggregation", states the format)."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import numpy as np

from protocols.errors import InvalidSecAggMessage, SecAggStageError
from protocols.secagg.masks import load_pub
from protocols.secagg.params import (
    KEY_BYTES,
    MAGIC,
    MODULUS,
    MODULUS_BITS,
    SHAMIR_PRIME,
    SHARE_BYTES,
    U64,
    VERSION,
    MsgType,
    RoundInfo,
)

_HEADER = struct.Struct(">4sBBI32sH")  # magic, version, type, round, session, sender
SERVER: Final = 0
"""The server's number; the frames it sends carry ``SERVER + 1`` as their sender."""


def encode_frame(info: RoundInfo, mtype: MsgType, sender: int, body: bytes) -> bytes:
    """``PSAG | version u8 | type u8 | round u32 | session[32] | sender u16 | body`` (big-endian)."""
    return _HEADER.pack(MAGIC, VERSION, int(mtype), info.round_no, info.session, sender) + body


@dataclass(frozen=True)
class Frame:
    mtype: MsgType
    round_no: int
    sender: int
    body: bytes


def decode_frame(info: RoundInfo, data: bytes, expected: MsgType) -> Frame:
    """Parse and check a frame's header against this round; the body is parsed by the caller."""
    if not isinstance(data, bytes | bytearray):
        raise InvalidSecAggMessage("a secure-aggregation message must be bytes")
    if len(data) < _HEADER.size:
        raise InvalidSecAggMessage(f"message too short ({len(data)} bytes) for a secure-aggregation frame")
    magic, version, mtype, round_no, session, sender = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise InvalidSecAggMessage("not a secure-aggregation message (bad magic)")
    if version != VERSION:
        raise InvalidSecAggMessage(f"unsupported message version {version}; this server speaks {VERSION}")
    try:
        kind = MsgType(mtype)
    except ValueError:
        raise InvalidSecAggMessage(f"unknown message type {mtype}") from None
    if round_no != info.round_no:
        raise SecAggStageError(
            f"message is for round {round_no}, the current round is {info.round_no} (replayed or late)",
            details={"message_round": round_no, "current_round": info.round_no},
        )
    if session != info.session:
        raise SecAggStageError("message is for another federation or round session (replayed or misdirected)")
    if kind != expected:
        raise SecAggStageError(f"expected a {expected.name} message, got {kind.name}")
    if not 1 <= sender <= info.params.n:
        raise SecAggStageError(f"sender {sender} is not a bank of this round (1..{info.params.n})")
    return Frame(kind, round_no, sender, bytes(data[_HEADER.size :]))


def peek_type(data: bytes) -> MsgType:
    """The message type of a frame (header checked for magic and version only)."""
    if len(data) < _HEADER.size or data[:4] != MAGIC:
        raise InvalidSecAggMessage("not a secure-aggregation message (bad magic or too short)")
    if data[4] != VERSION:
        raise InvalidSecAggMessage(f"unsupported message version {data[4]}; this server speaks {VERSION}")
    try:
        return MsgType(data[5])
    except ValueError:
        raise InvalidSecAggMessage(f"unknown message type {data[5]}") from None


class Reader:
    def __init__(self, body: bytes, what: str) -> None:
        self.body, self.pos, self.what = body, 0, what

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.body):
            raise InvalidSecAggMessage(f"{self.what}: truncated message")
        out = self.body[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        v: int = struct.unpack(">H", self.take(2))[0]
        return v

    def u32(self) -> int:
        v: int = struct.unpack(">I", self.take(4))[0]
        return v

    def end(self) -> None:
        if self.pos != len(self.body):
            raise InvalidSecAggMessage(f"{self.what}: {len(self.body) - self.pos} trailing bytes")


@dataclass(frozen=True)
class Advert:
    c_pk: bytes
    s_pk: bytes


@dataclass(frozen=True)
class ShareKeysMsg:
    commitment: bytes
    ciphertexts: dict[int, bytes]


@dataclass(frozen=True)
class UnmaskMsg:
    b_shares: dict[int, int]
    sk_shares: dict[int, int]


def _parse_advert(info: RoundInfo, data: bytes) -> tuple[int, Advert]:
    f = decode_frame(info, data, MsgType.ADVERTISE_KEYS)
    r = Reader(f.body, "ADVERTISE_KEYS")
    c_pk, s_pk = r.take(KEY_BYTES), r.take(KEY_BYTES)
    r.end()
    load_pub(c_pk, "c_pk")
    load_pub(s_pk, "s_pk")
    if c_pk == s_pk:
        raise InvalidSecAggMessage("ADVERTISE_KEYS: the two public keys must differ")
    return f.sender, Advert(c_pk, s_pk)


def _parse_share_keys(info: RoundInfo, data: bytes, u1: set[int]) -> tuple[int, ShareKeysMsg]:
    f = decode_frame(info, data, MsgType.SHARE_KEYS)
    r = Reader(f.body, "SHARE_KEYS")
    commitment = r.take(32)
    count = r.u16()
    cts: dict[int, bytes] = {}
    for _ in range(count):
        to, length = r.u16(), r.u32()
        if length > 1024:
            raise InvalidSecAggMessage("SHARE_KEYS: share ciphertext too long")
        if to in cts:
            raise InvalidSecAggMessage(f"SHARE_KEYS: two ciphertexts for bank {to}")
        cts[to] = r.take(length)
    r.end()
    if set(cts) != u1 - {f.sender}:
        raise InvalidSecAggMessage(
            "SHARE_KEYS: needs exactly one ciphertext for every other bank that advertised keys"
        )
    return f.sender, ShareKeysMsg(commitment, cts)


def _parse_masked(info: RoundInfo, data: bytes) -> tuple[int, U64]:
    f = decode_frame(info, data, MsgType.MASKED_INPUT)
    r = Reader(f.body, "MASKED_INPUT")
    length = r.u32()
    if length != info.params.width:
        raise InvalidSecAggMessage(
            f"MASKED_INPUT has {length} elements, expected {info.params.width} (the model's parameters, "
            f"{info.params.tail} exact value(s) as two limbs each, the weight)"
        )
    y = np.frombuffer(r.take(8 * length), dtype=">u8").astype(np.uint64)
    r.end()
    if np.any(y >= np.uint64(MODULUS)):
        raise InvalidSecAggMessage(f"MASKED_INPUT has elements outside the field Z_2^{MODULUS_BITS}")
    return f.sender, y


def _parse_unmask(info: RoundInfo, data: bytes, u2: set[int], u3: set[int]) -> tuple[int, UnmaskMsg]:
    f = decode_frame(info, data, MsgType.UNMASK)
    r = Reader(f.body, "UNMASK")
    b_shares: dict[int, int] = {}
    sk_shares: dict[int, int] = {}
    for _ in range(r.u16()):
        owner, kind = r.u16(), r.u8()
        y = int.from_bytes(r.take(SHARE_BYTES), "big")
        if y >= SHAMIR_PRIME:
            raise InvalidSecAggMessage("UNMASK: share outside the field")
        if kind not in (0, 1) or owner in b_shares or owner in sk_shares:
            raise InvalidSecAggMessage("UNMASK: bad share kind or two shares for one bank")
        (b_shares if kind == 0 else sk_shares)[owner] = y
    r.end()
    if set(b_shares) != u3 or set(sk_shares) != u2 - u3:
        raise InvalidSecAggMessage(
            "UNMASK: needs a self-mask share for every survivor and a key share for every dropped bank, no more"
        )
    return f.sender, UnmaskMsg(b_shares, sk_shares)


def ids_body(ids: Iterable[int]) -> bytes:
    ids = sorted(ids)
    return struct.pack(">H", len(ids)) + b"".join(struct.pack(">H", i) for i in ids)


def parse_ids(info: RoundInfo, data: bytes, mtype: MsgType) -> set[int]:
    f = decode_frame(info, data, mtype)
    r = Reader(f.body, mtype.name)
    ids = {r.u16() for _ in range(r.u16())}
    r.end()
    return ids


def survivors_frame(info: RoundInfo, u2: Iterable[int], u3: Iterable[int]) -> bytes:
    """The ``SURVIVORS`` frame of the unmask stage: the banks that shared keys (U2) and sent inputs (U3).

    It depends on those sets only, so a service can build it without holding the masked inputs."""
    return encode_frame(info, MsgType.SURVIVORS, SERVER + 1, ids_body(u2) + ids_body(u3))
