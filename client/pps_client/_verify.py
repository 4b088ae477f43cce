"""The checks a bank or an auditor runs on what the service says: each ``verify_*`` returns what it verified or
raises a :class:`~pps_client.VerificationError` subclass — never a bool.

The keys they check against are pinned by the caller, obtained out of band (the ledger's and the receipts'
verifier keys, the enclave vendor's key, the trusted enclave build's measurement): asking the service being
checked for them proves nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pps_client._exceptions import (
    AttestationError,
    LedgerVerificationError,
    ReceiptVerificationError,
    verification,
)
from pps_client._types import ConsentReceipt, VerifiedEntry
from pps_wire import merkle, quote, receipt
from pps_wire.checkpoint import Checkpoint, NoteVerifier
from pps_wire.checkpoint import verify_checkpoint as _verify_checkpoint
from pps_wire.errors import InvalidInput
from pps_wire.schemas import LedgerEntry, ProvenEntry, ScopeItem

Verifier = NoteVerifier | Sequence[NoteVerifier]


def note_verifier(key: str) -> NoteVerifier:
    """A signed-note verifier from its key string ``<name>+<key id hex>+<base64 key>`` (the ledger's
    ``verifier_key``, the receipts' ``verifier_key``); raises ``ValueError`` if it is malformed."""
    try:
        return NoteVerifier.from_string(key)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise LedgerVerificationError(f"{what} is not base64", reason="malformed") from None


# --- the ledger ---------------------------------------------------------------------------------------------


def verify_checkpoint(note: str, verifier: Verifier, *, origin: str | None = None) -> Checkpoint:
    """A signed checkpoint (C2SP signed note) checked against the pinned ``verifier`` (or any of several, for a
    key that was rotated) and, if given, the log's ``origin``; returns it parsed."""
    with verification(LedgerVerificationError, "checkpoint"):
        return _verify_checkpoint(note, verifier, origin=origin)


def verify_inclusion(
    index: int, tree_size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 §2.1.3.2: ``leaf_hash`` is at ``index`` of the tree of ``tree_size`` leaves with ``root``."""
    with verification(LedgerVerificationError, "inclusion"):
        merkle.verify_inclusion(index, tree_size, leaf_hash, proof, root)


def verify_consistency(old: Checkpoint, new: Checkpoint, proof: Sequence[bytes]) -> None:
    """RFC 9162 §2.1.4.2: the tree of ``new`` extends the tree of ``old`` (both verified checkpoints)."""
    if new.tree_size < old.tree_size:
        raise LedgerVerificationError(
            "the newer checkpoint is smaller than the older one", reason="consistency"
        )
    if old.tree_size == 0:
        return
    with verification(LedgerVerificationError, "consistency"):
        merkle.verify_consistency(old.tree_size, new.tree_size, old.root_hash, new.root_hash, proof)


def verify_entry(proven: ProvenEntry, verifier: Verifier) -> VerifiedEntry:
    """A ledger entry end to end: its checkpoint carries a valid signature by ``verifier`` (and names that
    verifier's log), the entry bytes hash to the leaf hash, the inclusion proof leads from that leaf to the
    checkpoint's root, and the bytes name the index proven. A redacted entry (an enterprise's view of a batch
    entry, without its bytes) is checked for its presence in the signed log only (``redacted=True``)."""
    if proven.checkpoint is None:
        raise LedgerVerificationError(
            "the entry comes without a signed checkpoint to check against", reason="checkpoint"
        )
    verifiers = [verifier] if isinstance(verifier, NoteVerifier) else list(verifier)
    origin = verifiers[0].name if verifiers else None
    cp = verify_checkpoint(proven.checkpoint.note, verifiers, origin=origin)
    if cp.tree_size != proven.tree_size:
        raise LedgerVerificationError(
            "the proof is for another tree size than the checkpoint", reason="inclusion"
        )
    proof = [_b64(p, "an inclusion proof hash") for p in proven.inclusion_proof]
    leaf = _b64(proven.leaf_hash, "the leaf hash")
    if not proven.entry_b64:  # a redacted entry: only its presence in the signed log can be checked
        verify_inclusion(proven.index, cp.tree_size, leaf, proof, cp.root_hash)
        doc = {**proven.entry, "redacted": True}
        return VerifiedEntry(proven.index, _entry(doc), cp, True, doc)
    data = _b64(proven.entry_b64, "the entry bytes")
    if merkle.leaf_hash(data) != leaf:
        raise LedgerVerificationError("the entry bytes do not hash to the given leaf hash", reason="leaf")
    verify_inclusion(proven.index, cp.tree_size, leaf, proof, cp.root_hash)
    try:
        doc = json.loads(data)
    except ValueError:
        raise LedgerVerificationError("the entry bytes are not JSON", reason="malformed") from None
    if not isinstance(doc, dict) or doc.get("index") != proven.index:
        raise LedgerVerificationError("the entry names another index than the one proven", reason="index")
    return VerifiedEntry(proven.index, _entry(doc), cp, False, doc)


def _entry(doc: dict[str, Any]) -> LedgerEntry:
    try:
        return LedgerEntry.model_validate(doc)
    except ValueError as exc:
        raise LedgerVerificationError(f"the entry is not a ledger entry: {exc}", reason="malformed") from None


# --- consent receipts ---------------------------------------------------------------------------------------


def verify_receipt(text: str, verifier: NoteVerifier) -> ConsentReceipt:
    """A consent receipt: its signature by the platform's receipt key (``verifier``, pinned) and its form (the
    canonical JSON of a PPS consent receipt); returns the grant it records."""
    with verification(ReceiptVerificationError, "receipt"):
        doc = receipt.verify_receipt(text, verifier)
    try:
        bank = doc["bank"]
        return ConsentReceipt(
            consent_id=str(doc["consent_id"]),
            issuer=str(doc["issuer"]),
            subject=str(doc["subject"]),
            bank_id=str(bank["id"]),
            bank_name=bank.get("name"),
            purpose=str(doc["purpose"]),
            scope=[ScopeItem.model_validate(item) for item in doc["scope"]],
            operations=[str(o) for o in doc["operations"]],
            valid_from=_time(doc["valid_from"]),
            valid_until=_time(doc["valid_until"]),
            max_uses=doc["max_uses"],
            granted_at=_time(doc["granted_at"]),
            document=doc,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ReceiptVerificationError(f"the receipt lacks a field or has a malformed one: {exc}") from None


def _time(text: Any) -> datetime:
    if not isinstance(text, str):
        raise ValueError("a time is an RFC 3339 string")
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- enclave quotes -----------------------------------------------------------------------------------------


def trusted_measurements(measurements: Iterable[bytes] | None) -> list[bytes]:
    """The builds a verifier trusts: ``measurements`` if given, else the build whose source is installed here
    (:func:`pps_wire.measurement.expected_measurement`); raises ``ValueError`` if there is none to compute."""
    if measurements is not None:
        trusted = [bytes(m) for m in measurements]
        if not trusted or any(len(m) != 32 for m in trusted):
            raise ValueError("measurements must name at least one 32-byte measurement")
        return trusted
    from pps_wire.measurement import expected_measurement

    try:
        return [expected_measurement()]
    except LookupError as exc:
        raise ValueError(str(exc)) from None


def verify_quote(
    raw: bytes,
    *,
    vendor_key: Ed25519PublicKey,
    nonce: bytes,
    measurements: Iterable[bytes] | None = None,
    min_svn: int = 1,
    registry: quote.NonceRegistry | None = None,
) -> quote.Quote:
    """An enclave quote: signed by the pinned ``vendor_key`` (an Ed25519 public key obtained out of band), of a
    trusted build (``measurements``; default: the build whose source is installed here), at least ``min_svn``,
    not debug, recent, answering ``nonce`` (and, with a :class:`pps_wire.quote.NonceRegistry`, never a nonce seen
    before). Returns the parsed quote; raises :class:`~pps_client.AttestationError` (``reason`` says which check)."""
    trusted = trusted_measurements(measurements)
    policy = quote.standard_policy(measurements=trusted, nonce=nonce, min_svn=min_svn, registry=registry)
    with verification(AttestationError):
        quote.verify_quote(raw, policy, vendor_key=vendor_key)
        return quote.Quote.parse(raw)
