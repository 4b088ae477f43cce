"""The verifiers a bank or an auditor runs: each returns what it verified or raises a VerificationError naming
the failed check — never a bool. A small log, receipts and quotes are made here with pps_wire's own signers."""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pps_client import (
    AttestationError,
    LedgerVerificationError,
    ReceiptVerificationError,
    VerificationError,
    note_verifier,
    verify_checkpoint,
    verify_consistency,
    verify_entry,
    verify_inclusion,
    verify_quote,
    verify_receipt,
)
from pps_wire import merkle
from pps_wire.checkpoint import NoteSigner
from pps_wire.quote import encode_body, sign_quote, signer_id
from pps_wire.receipt import receipt_text
from pps_wire.schemas import CheckpointOut, ProvenEntry

ORIGIN = "pps.test/ledger"
SIGNER = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
KEY = note_verifier(SIGNER.verifier_key)


def _flip_last(data: bytes) -> bytes:
    """Change the last byte for sure (replacing it with a constant is a no-op one time in 256)."""
    return data[:-1] + bytes([data[-1] ^ 1])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def entry_bytes(index: int, **extra: Any) -> bytes:
    doc = {
        "v": 1,
        "index": index,
        "time": "2026-01-01T00:00:00.000000Z",
        "actor": {"org": "org_b", "role": "bank", "via": "api", "token": None},
        "action": "policy.release",
        "objects": [],
        "subjects": ["91350100M000100Y43"],
        "purpose": "loan_underwriting",
        "consent_ids": ["cns_1"],
        "released": [{"to": "org_b", "what": "psi:intersection"}],
        "request_id": None,
        "detail": {"n": index},
        **extra,
    }
    return rfc8785.dumps(doc)


ENTRIES = [entry_bytes(i) for i in range(7)]
LEAVES = [merkle.leaf_hash(e) for e in ENTRIES]


def inclusion_proof(index: int, size: int) -> list[bytes]:
    levels, _ = merkle.perfect_levels(LEAVES[:size])
    lookup = {(lv, i): h for lv, row in enumerate(levels) for i, h in enumerate(row)}
    return [merkle.range_hash(a, b, lookup) for a, b in merkle.inclusion_ranges(index, size)]


def proven(index: int, size: int = 7, **over: Any) -> ProvenEntry:
    cp = SIGNER.sign_checkpoint(ORIGIN, size, merkle.mth(LEAVES[:size]))
    doc: dict[str, Any] = {
        "index": index,
        "leaf_hash": b64(LEAVES[index]),
        "entry_b64": b64(ENTRIES[index]),
        "entry": json.loads(ENTRIES[index]),
        "tree_size": size,
        "inclusion_proof": [b64(p) for p in inclusion_proof(index, size)],
        "checkpoint": CheckpointOut.of(cp).model_dump(),
        **over,
    }
    return ProvenEntry.model_validate(doc)


def test_an_entry_verifies_end_to_end_and_comes_back_typed() -> None:
    checked = verify_entry(proven(4), KEY)
    assert checked.index == 4 and not checked.redacted
    assert checked.entry.action == "policy.release" and checked.entry.released[0].what == "psi:intersection"
    assert checked.checkpoint.tree_size == 7 and checked.document["detail"] == {"n": 4}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"entry_b64": b64(entry_bytes(4, purpose="marketing"))}, "leaf"),
        ({"leaf_hash": b64(merkle.leaf_hash(b"x")), "entry_b64": b64(b"x")}, "inclusion"),
        ({"inclusion_proof": []}, "inclusion"),
        ({"tree_size": 6}, "inclusion"),
        ({"checkpoint": None}, "checkpoint"),
    ],
)
def test_every_tampering_of_an_entry_is_refused_with_its_reason(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(LedgerVerificationError) as refused:
        verify_entry(proven(4, **change), KEY)
    assert isinstance(refused.value, VerificationError)
    assert refused.value.reason == reason


def test_an_entry_naming_another_index_or_signed_by_another_key_is_refused() -> None:
    moved = proven(3, entry_b64=b64(ENTRIES[3]))
    forged = moved.model_copy(
        update={"entry_b64": b64(entry_bytes(5)), "leaf_hash": b64(merkle.leaf_hash(entry_bytes(5)))}
    )
    with pytest.raises(LedgerVerificationError):
        verify_entry(forged, KEY)
    stranger = note_verifier(NoteSigner(ORIGIN, Ed25519PrivateKey.generate()).verifier_key)
    with pytest.raises(LedgerVerificationError, match="no signature"):
        verify_entry(proven(2), stranger)
    other_log = note_verifier(NoteSigner("other.test/log", Ed25519PrivateKey.generate()).verifier_key)
    with pytest.raises(LedgerVerificationError):
        verify_entry(proven(2), [other_log])


def test_a_redacted_entry_is_checked_for_presence_only() -> None:
    redacted = proven(
        5,
        entry_b64="",
        entry={
            "v": 1,
            "index": 5,
            "time": "2026-01-01T00:00:00Z",
            "actor": {"org": None, "role": "bank", "via": "api"},
            "action": "policy.admit",
        },
    )
    checked = verify_entry(redacted, KEY)
    assert checked.redacted and checked.entry.redacted and checked.entry.subjects == []
    with pytest.raises(LedgerVerificationError):
        verify_entry(redacted.model_copy(update={"leaf_hash": b64(LEAVES[4])}), KEY)


def test_checkpoints_inclusion_and_consistency() -> None:
    old = verify_checkpoint(
        SIGNER.sign_checkpoint(ORIGIN, 3, merkle.mth(LEAVES[:3])).note, KEY, origin=ORIGIN
    )
    new = verify_checkpoint(SIGNER.sign_checkpoint(ORIGIN, 7, merkle.mth(LEAVES)).note, [KEY])
    verify_inclusion(2, 7, LEAVES[2], inclusion_proof(2, 7), new.root_hash)
    with pytest.raises(LedgerVerificationError):
        verify_inclusion(2, 7, LEAVES[3], inclusion_proof(2, 7), new.root_hash)
    levels, _ = merkle.perfect_levels(LEAVES)
    lookup = {(lv, i): h for lv, row in enumerate(levels) for i, h in enumerate(row)}
    proof = [merkle.range_hash(a, b, lookup) for a, b in merkle.consistency_ranges(3, 7)]
    verify_consistency(old, new, proof)
    with pytest.raises(LedgerVerificationError):
        verify_consistency(old, new, [proof[0][::-1], *proof[1:]])
    with pytest.raises(LedgerVerificationError, match="smaller"):
        verify_consistency(new, old, proof)
    with pytest.raises(LedgerVerificationError):
        verify_checkpoint(new.note.replace("\n7\n", "\n8\n"), KEY)
    with pytest.raises(ValueError, match="verifier key"):
        note_verifier("not a key")


def test_receipts() -> None:
    signer = NoteSigner("pps.test/receipts", Ed25519PrivateKey.generate())
    doc = {
        "type": "pps-consent-receipt/1",
        "issuer": signer.name,
        "consent_id": "cns_1",
        "subject": "91350100M000100Y43",
        "bank": {"id": "org_b", "name": "Bank A"},
        "purpose": "loan_underwriting",
        "scope": [{"dataset_id": "ds_1", "fields": ["tax_paid"]}],
        "operations": ["psi", "score"],
        "valid_from": "2026-01-01T00:00:00.000000Z",
        "valid_until": "2027-01-01T00:00:00.000000Z",
        "max_uses": 3,
        "granted_at": "2026-01-01T00:00:00.000000Z",
    }
    note = signer.sign(receipt_text(doc))
    got = verify_receipt(note, note_verifier(signer.verifier_key))
    assert (got.consent_id, got.bank_name, got.max_uses) == ("cns_1", "Bank A", 3)
    assert got.scope[0].fields == ["tax_paid"] and got.valid_until.year == 2027
    with pytest.raises(ReceiptVerificationError):
        verify_receipt(note.replace('"max_uses":3', '"max_uses":9'), note_verifier(signer.verifier_key))
    with pytest.raises(ReceiptVerificationError):
        verify_receipt(note, KEY)  # the ledger's key does not sign receipts
    not_canonical = signer.sign(json.dumps(doc) + "\n")
    with pytest.raises(ReceiptVerificationError, match="canonical"):
        verify_receipt(not_canonical, note_verifier(signer.verifier_key))


def test_quotes() -> None:
    vendor = Ed25519PrivateKey.generate()
    measurement, nonce = os.urandom(32), os.urandom(32)

    def quote(**over: Any) -> bytes:
        fields: dict[str, Any] = {
            "debug": False,
            "isv_svn": 1,
            "issued_at_ms": int(time.time() * 1000),
            "measurement": measurement,
            "enclave_key": os.urandom(32),
            "nonce": nonce,
            "signer": signer_id(vendor.public_key()),
            **over,
        }
        return sign_quote(encode_body(**fields), vendor)

    got = verify_quote(quote(), vendor_key=vendor.public_key(), nonce=nonce, measurements=[measurement])
    assert got.measurement == measurement
    for raw, reason in (
        (quote(measurement=os.urandom(32)), "measurement"),
        (quote(debug=True), "debug"),
        (quote(isv_svn=0), "svn"),
        (quote(nonce=os.urandom(32)), "nonce"),
        (_flip_last(quote()), "bad_signature"),
        (b"PEQT", "malformed"),
    ):
        with pytest.raises(AttestationError) as refused:
            verify_quote(raw, vendor_key=vendor.public_key(), nonce=nonce, measurements=[measurement])
        assert refused.value.reason == reason
    with pytest.raises(AttestationError) as refused:
        verify_quote(
            quote(),
            vendor_key=Ed25519PrivateKey.generate().public_key(),
            nonce=nonce,
            measurements=[measurement],
        )
    assert refused.value.reason == "unknown_signer"
    with pytest.raises(ValueError, match="32-byte"):
        verify_quote(quote(), vendor_key=vendor.public_key(), nonce=nonce, measurements=[b"short"])
