"""Signed checkpoints: the Go reference vector, round trips, and every way a note can be wrong."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pps_wire.checkpoint import NoteSigner, NoteVerifier, verify_checkpoint
from pps_wire.errors import InvalidInput, ProofVerificationError

# golang.org/x/mod/sumdb/note's documented example key and signature (note_test.go)
GO_SKEY_SEED = base64.b64decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")[1:]
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT
    + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)

ORIGIN = "pps.test/ledger"


def signer() -> NoteSigner:
    return NoteSigner(ORIGIN, Ed25519PrivateKey.generate())


def test_signer_matches_the_go_reference_byte_for_byte() -> None:
    s = NoteSigner("PeterNeumann", Ed25519PrivateKey.from_private_bytes(GO_SKEY_SEED))
    assert s.verifier_key == GO_VKEY
    assert s.sign(GO_TEXT) == GO_NOTE


def test_verifier_accepts_the_go_reference_note() -> None:
    assert NoteVerifier.from_string(GO_VKEY).verify_note(GO_NOTE) == GO_TEXT


def test_checkpoint_round_trip() -> None:
    s = signer()
    cp = s.sign_checkpoint(ORIGIN, 42, b"\x07" * 32)
    root_b64 = base64.b64encode(b"\x07" * 32).decode()
    assert cp.note.startswith(f"{ORIGIN}\n42\n{root_b64}\n\n— {ORIGIN} ")
    got = verify_checkpoint(cp.note, NoteVerifier.from_string(s.verifier_key), origin=ORIGIN)
    assert (got.tree_size, got.root_hash) == (42, b"\x07" * 32)


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda n: n.replace("\n42\n", "\n43\n"), id="size-changed"),
        pytest.param(lambda n: n.replace("BwcH", "BwcI", 1), id="root-changed"),
        pytest.param(lambda n: n.replace("— ", "- "), id="not-an-em-dash"),
        pytest.param(lambda n: n.replace("\n\n", "\n"), id="no-blank-line"),
        pytest.param(lambda n: n[:-1], id="no-final-newline"),
        pytest.param(lambda n: n[: n.rfind(" ") + 10] + "\n", id="truncated-signature"),
        pytest.param(lambda n: "x" + n, id="origin-changed"),
    ],
)
def test_tampered_notes_are_rejected(mutate: object) -> None:
    s = signer()
    note = s.sign_checkpoint(ORIGIN, 42, b"\x07" * 32).note
    with pytest.raises(ProofVerificationError):
        verify_checkpoint(mutate(note), NoteVerifier.from_string(s.verifier_key), origin=ORIGIN)  # type: ignore[operator]


def test_another_key_is_rejected() -> None:
    note = signer().sign_checkpoint(ORIGIN, 1, b"\x01" * 32).note
    with pytest.raises(ProofVerificationError, match="no signature"):
        verify_checkpoint(note, NoteVerifier.from_string(signer().verifier_key))


@pytest.mark.parametrize(
    "vkey",
    [
        "",
        "name-only",
        GO_VKEY.replace("c74f20a3", "c74f20a4"),
        GO_VKEY.replace("+ARpc", "+AhpC"),
        GO_VKEY[:-4],
        "bad name+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_malformed_verifier_keys_are_refused(vkey: str) -> None:
    with pytest.raises(InvalidInput):
        NoteVerifier.from_string(vkey)
