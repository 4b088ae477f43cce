"""The consent receipt: what a subject granted a bank, signed by the platform, verifiable offline.

A receipt is a C2SP signed note (the format of the ledger's checkpoints, :mod:`pps_wire.checkpoint`) whose
text is the RFC 8785 canonical JSON of the grant plus a newline::

    {"bank": {"id", "name"}, "consent_id", "granted_at", "issuer", "max_uses", "operations", "purpose",
     "scope": [{"dataset_id", "fields": [...]}], "subject", "type": "pps-consent-receipt/1",
     "valid_from", "valid_until",
     "subject_signature": {"key_id", "text", "signature"}}

``subject_signature`` is the subject's own signature over the terms (:mod:`pps_wire.subject_sign`): the text
it signed, the enrolled key that signed it and the base64 signature.

signed with the platform's receipt key (``GET /v1/consent/public-key`` publishes its verifier key). The server
writes it with :func:`receipt_text`; subject, bank or anyone holding the verifier key checks it with
:func:`verify_receipt`, which returns the grant or raises.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

from pps_wire.checkpoint import NoteVerifier
from pps_wire.errors import ProofVerificationError

RECEIPT_TYPE = "pps-consent-receipt/1"
RECEIPT_FIELDS = frozenset(
    {
        "type",
        "issuer",
        "consent_id",
        "subject",
        "bank",
        "purpose",
        "scope",
        "operations",
        "valid_from",
        "valid_until",
        "max_uses",
        "granted_at",
        "subject_signature",
    }
)


def receipt_text(document: dict[str, Any]) -> str:
    """The text a receipt signs: the canonical JSON of ``document`` and a newline."""
    return rfc8785.dumps(document).decode() + "\n"


def verify_receipt(receipt: str, verifier: NoteVerifier) -> dict[str, Any]:
    """Verify a consent receipt's signature by ``verifier`` and its form; return the grant it records.

    Raises :class:`~pps_wire.errors.ProofVerificationError` if the signature does not verify, or the text is not
    the canonical JSON of a PPS consent receipt.
    """
    body = verifier.verify_note(receipt)
    try:
        doc = json.loads(body)
    except ValueError:
        raise ProofVerificationError("the receipt's text is not JSON") from None
    if not isinstance(doc, dict) or doc.get("type") != RECEIPT_TYPE:
        raise ProofVerificationError("not a PPS consent receipt")
    if receipt_text(doc) != body:
        raise ProofVerificationError("the receipt's text is not canonical JSON")
    return doc
