"""The vertical-LR wire format: message types, parties, stages, the frame and its one validation point
(``docs/protocols.md``, "Vertical logistic regression", states the format)."""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass
from typing import Any

from gmpy2 import mpz

from protocols import paillier_fast as pf
from protocols.errors import InvalidMessage
from protocols.paillier_fast import PublicKey

MAGIC = b"PPVL"
VERSION = 1
SESSION_BYTES = 16
KEY_ID_BYTES = 16
_HEADER = struct.Struct(">4sBBB16s16sIIBI")
MAX_BODY_BYTES = 1 << 20
MAX_VALUES = 1 << 22


class MessageType(enum.IntEnum):
    PUBLIC_KEY = 1
    SETUP = 2
    SETUP_ACK = 3
    FORWARD = 4
    RESIDUALS = 5
    MASKED_GRADIENT = 6
    DECRYPTED = 7
    EPOCH_END = 8
    SCORE_CONTRIBUTION = 9
    LINEAR_PREDICTOR = 10
    PROBABILITIES = 11


class Party(enum.IntEnum):
    COORDINATOR = 1
    GUEST = 2
    HOST = 3


FLAG_WITH_LOSS = 1
FLAG_STOP = 2


class Stage(enum.Enum):
    AWAITING_KEY = "awaiting_key"
    AWAITING_SETUP = "awaiting_setup"
    AWAITING_SETUP_ACK = "awaiting_setup_ack"
    AWAITING_FORWARD = "awaiting_forward"  # guest
    READY_FORWARD = "ready_forward"  # host: may send the next FORWARD
    AWAITING_RESIDUALS = "awaiting_residuals"  # host
    AWAITING_PROBABILITIES = "awaiting_probabilities"  # guest, loss="exact"
    GRADIENT_DUE = "gradient_due"  # guest: must send its MASKED_GRADIENT
    AWAITING_DECRYPTED = "awaiting_decrypted"
    EPOCH_END_DUE = "epoch_end_due"  # guest
    AWAITING_EPOCH_END = "awaiting_epoch_end"  # host
    TRAINING = "training"  # coordinator
    DONE = "done"


@dataclass(frozen=True)
class Message:
    """One decoded frame. ``values`` are ciphertexts (or plaintexts in DECRYPTED), as ``mpz``."""

    type: MessageType
    sender: Party
    session: bytes
    key_id: bytes
    epoch: int = 0
    batch: int = 0
    flags: int = 0
    body: bytes = b""
    values: tuple[mpz, ...] = ()

    def to_bytes(self, public_key: PublicKey | None = None) -> bytes:
        width = 0
        if self.values:
            if public_key is None:
                raise InvalidMessage("a message with values needs the public key to encode them")
            width = (
                (public_key.bits + 7) // 8
                if self.type is MessageType.DECRYPTED
                else public_key.ciphertext_bytes
            )
        head = _HEADER.pack(
            MAGIC,
            VERSION,
            int(self.type),
            int(self.sender),
            self.session,
            self.key_id,
            self.epoch,
            self.batch,
            self.flags,
            len(self.body),
        )
        values = b"".join(bytes(v.to_bytes(width, "big")) for v in self.values)
        return head + self.body + struct.pack(">I", len(self.values)) + values


def key_id_of(public_key: PublicKey) -> bytes:
    return bytes.fromhex(public_key.fingerprint)[:KEY_ID_BYTES]


def decode_message(data: bytes, public_key: PublicKey | None) -> Message:
    """Parse and check a frame: magic, version, type, sender, lengths, key, every value's range."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidMessage("a message must be bytes")
    data = bytes(data)
    if len(data) < _HEADER.size + 4:
        raise InvalidMessage("message too short")
    magic, version, mtype, sender, session, key_id, epoch, batch, flags, body_len = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise InvalidMessage("not a vertical-LR message (bad magic)")
    if version != VERSION:
        raise InvalidMessage(f"unsupported message version {version}")
    try:
        kind, who = MessageType(mtype), Party(sender)
    except ValueError as exc:
        raise InvalidMessage(f"unknown message type {mtype} or sender {sender}") from exc
    if body_len > MAX_BODY_BYTES or _HEADER.size + body_len + 4 > len(data):
        raise InvalidMessage("bad body length")
    body = data[_HEADER.size : _HEADER.size + body_len]
    off = _HEADER.size + body_len
    (count,) = struct.unpack_from(">I", data, off)
    off += 4
    if count > MAX_VALUES:
        raise InvalidMessage("too many values")
    values: tuple[mpz, ...] = ()
    if count:
        if public_key is None:
            raise InvalidMessage("values received before the public key")
        if key_id != key_id_of(public_key):
            raise InvalidMessage("the message is under another Paillier key")
        if kind is MessageType.DECRYPTED:
            width = (public_key.bits + 7) // 8
            if len(data) - off != width * count:
                raise InvalidMessage("bad length of the plaintext values")
            n = public_key.n
            vals = [
                mpz.from_bytes(data[off + k * width : off + (k + 1) * width], "big") for k in range(count)
            ]
            if any(not 0 <= v < n for v in vals):
                raise InvalidMessage("plaintext out of range")
            values = tuple(vals)
        else:
            try:
                values = tuple(pf.ciphertexts_from_bytes(public_key, data[off:], count))
            except pf.InvalidCiphertext as exc:
                raise InvalidMessage(str(exc)) from exc
    elif off != len(data):
        raise InvalidMessage("trailing bytes")
    return Message(kind, who, session, key_id, epoch, batch, flags, body, values)


def setup_body(msg: Message) -> dict[str, Any]:
    try:
        body = json.loads(msg.body)
        if not isinstance(body, dict) or set(body) != {"config", "n_rows", "n_features"}:
            raise InvalidMessage("SETUP: body must have exactly config, n_rows, n_features")
        if not all(isinstance(body[k], int) and body[k] >= 1 for k in ("n_rows", "n_features")):
            raise InvalidMessage("SETUP: n_rows and n_features must be positive integers")
        return body
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidMessage(f"SETUP: bad body ({exc})") from exc
