"""Signed checkpoints in the C2SP ``tlog-checkpoint`` format, as Ed25519 signed notes (C2SP ``signed-note``).

A checkpoint body is three lines, each ending in a newline::

    <origin>
    <tree size, decimal>
    <root hash, standard base64>

The signed note is the body, an empty line, and one signature line per signer::

    — <key name> <base64(key id (4 bytes) || Ed25519 signature (64 bytes))>

The signature is over the body bytes (UTF-8, including its final newline). The key id is the first four bytes
of ``SHA-256(key name || 0x0A || 0x01 || public key)`` (0x01 names the Ed25519 algorithm). The verifier key is
published as the usual note verifier string ``<name>+<key id hex>+<base64(0x01 || public key)>``, which
``golang.org/x/mod/sumdb/note`` and other signed-note tools accept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pps_wire.errors import InvalidInput, ProofVerificationError
from pps_wire.merkle import HASH_SIZE

ALG_ED25519 = 0x01
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")  # ASCII digits only, no leading zeros
SIGNATURE_PREFIX = "\u2014 "  # em dash and a space
MAX_NOTE_BYTES = 1_000_000


def _key_id(name: str, public_raw: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_raw).digest()[:4]


def _check_key_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise InvalidInput(f"a note key name must be non-empty, without spaces or '+': {name!r}")


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    tree_size: int
    root_hash: bytes
    note: str

    @property
    def body(self) -> str:
        return checkpoint_body(self.origin, self.tree_size, self.root_hash)


def checkpoint_body(origin: str, tree_size: int, root_hash: bytes) -> str:
    return f"{origin}\n{tree_size}\n{base64.b64encode(root_hash).decode()}\n"


class NoteSigner:
    """Signs note bodies with an Ed25519 key under a key name (the log's origin)."""

    def __init__(self, name: str, key: Ed25519PrivateKey) -> None:
        _check_key_name(name)
        self.name = name
        self._key = key
        self.public_raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_id = _key_id(name, self.public_raw)

    @property
    def verifier_key(self) -> str:
        blob = base64.b64encode(bytes([ALG_ED25519]) + self.public_raw).decode()
        return f"{self.name}+{self.key_id.hex()}+{blob}"

    @property
    def public_key_pem(self) -> str:
        return (
            self._key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def sign(self, body: str) -> str:
        if not body.endswith("\n"):
            raise InvalidInput("a note body must end with a newline")
        signature = self._key.sign(body.encode())
        line = base64.b64encode(self.key_id + signature).decode()
        return f"{body}\n{SIGNATURE_PREFIX}{self.name} {line}\n"

    def sign_checkpoint(self, origin: str, tree_size: int, root_hash: bytes) -> Checkpoint:
        note = self.sign(checkpoint_body(origin, tree_size, root_hash))
        return Checkpoint(origin, tree_size, root_hash, note)


@dataclass(frozen=True)
class NoteVerifier:
    name: str
    key_id: bytes
    public_key: Ed25519PublicKey

    @classmethod
    def from_string(cls, vkey: str) -> NoteVerifier:
        """Parse ``<name>+<key id hex>+<base64(0x01 || public key)>``."""
        parts = vkey.strip().split("+", 2)  # the base64 key itself may contain "+"
        if len(parts) != 3:
            raise InvalidInput("a verifier key has the form <name>+<key id hex>+<base64 key>")
        name, hex_id, blob = parts
        _check_key_name(name)
        try:
            key_id = bytes.fromhex(hex_id)
            raw = base64.b64decode(blob, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise InvalidInput(f"malformed verifier key: {exc}") from exc
        if len(key_id) != 4 or len(raw) != 33 or raw[0] != ALG_ED25519:
            raise InvalidInput("verifier key must carry a 4-byte key id and an Ed25519 (0x01) public key")
        if _key_id(name, raw[1:]) != key_id:
            raise InvalidInput("verifier key id does not match its name and public key")
        return cls(name, key_id, Ed25519PublicKey.from_public_bytes(raw[1:]))

    def verify_note(self, note: str) -> str:
        """Return the note's body if it carries a valid signature by this key; raise otherwise."""
        if len(note.encode()) > MAX_NOTE_BYTES:
            raise ProofVerificationError("note is too large")
        sep = note.rfind("\n\n")
        if sep < 0:
            raise ProofVerificationError("malformed note: no blank line before the signatures")
        body, sig_block = note[: sep + 1], note[sep + 2 :]
        if not sig_block.endswith("\n"):
            raise ProofVerificationError("malformed note: signature block must end with a newline")
        verified = False
        for line in sig_block[:-1].split("\n"):
            if not line.startswith(SIGNATURE_PREFIX):
                raise ProofVerificationError(f"malformed signature line: {line!r}")
            try:
                name, blob = line[len(SIGNATURE_PREFIX) :].split(" ")
                raw = base64.b64decode(blob, validate=True)
            except (ValueError, binascii.Error):
                raise ProofVerificationError(f"malformed signature line: {line!r}") from None
            if name != self.name or len(raw) != 68 or raw[:4] != self.key_id:
                continue  # another signer's line: not ours to judge
            try:  # every line that claims our key must verify, not just the first
                self.public_key.verify(raw[4:], body.encode())
            except InvalidSignature:
                raise ProofVerificationError(f"signature by {self.name} does not verify") from None
            verified = True
        if not verified:
            raise ProofVerificationError(f"note carries no signature by {self.name}+{self.key_id.hex()}")
        return body


def parse_checkpoint_body(body: str) -> tuple[str, int, bytes]:
    lines = body.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise ProofVerificationError("a checkpoint body has at least three newline-terminated lines")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not origin:
        raise ProofVerificationError("checkpoint origin is empty")
    if not _DECIMAL.fullmatch(size_text):
        raise ProofVerificationError(f"checkpoint tree size {size_text!r} is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error:
        raise ProofVerificationError("checkpoint root hash is not base64") from None
    if len(root) != HASH_SIZE:
        raise ProofVerificationError(f"checkpoint root hash must be {HASH_SIZE} bytes")
    return origin, int(size_text), root


def verify_checkpoint(
    note: str, verifier: NoteVerifier | Sequence[NoteVerifier], *, origin: str | None = None
) -> Checkpoint:
    """Verify a signed checkpoint note and return it parsed; raise ``ProofVerificationError`` otherwise.

    With several verifiers (a current key and retired ones), a valid signature by any of them suffices.
    """
    verifiers = [verifier] if isinstance(verifier, NoteVerifier) else list(verifier)
    if not verifiers:
        raise ProofVerificationError("no verifier key to check the checkpoint with")
    failures = []
    for v in verifiers:
        try:
            body = v.verify_note(note)
            break
        except ProofVerificationError as exc:
            failures.append(exc.message)
    else:
        raise ProofVerificationError("; ".join(failures))
    cp_origin, size, root = parse_checkpoint_body(body)
    if origin is not None and cp_origin != origin:
        raise ProofVerificationError(f"checkpoint is for log {cp_origin!r}, expected {origin!r}")
    return Checkpoint(cp_origin, size, root, note)
