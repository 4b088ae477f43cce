"""The signed documents a bank or an enterprise gets from the credit report and authorised queries (issue 23).

A document is canonical JSON (sorted keys, no spaces, UTF-8) signed as a note by the service's ledger key, the
key that signs the ledger's checkpoints: ``<canonical JSON>\\n`` then the signature line. Anyone holding the
ledger's verifier key (``GET /v1/ledger/public-key``) checks it with :func:`verify_document`, which also refuses an
expired document: a query's result is valid until its ``expires_at``, and the service erases it then.

Each value in a document carries the mode it left under (``public``, ``masked``, ``aggregate_only``) and names
its source (a key of ``sources``: the dataset, its provider and version, and for public values where they are
published).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pps_wire.checkpoint import NoteVerifier
from pps_wire.errors import InvalidInput

REPORT_FORMAT = "pps-credit-report/1"
QUERY_FORMAT = "pps-authorised-query/1"

__all__ = ["QUERY_FORMAT", "REPORT_FORMAT", "DocumentExpired", "canonical", "verify_document"]


class DocumentExpired(InvalidInput):
    """The document's validity (``expires_at``) is over: it must not be relied on any more."""


def canonical(document: dict[str, Any]) -> str:
    """The text that is signed: canonical JSON and a newline."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"


def verify_document(note: str, verifier_key: str, *, now: datetime | None = None) -> dict[str, Any]:
    """The document in ``note`` if the service's key signed it and it has not expired; raises otherwise."""
    body = NoteVerifier.from_string(verifier_key).verify_note(note)
    document: dict[str, Any] = json.loads(body)
    if canonical(document) != body:
        raise InvalidInput("the signed body is not the canonical form of its document")
    if document.get("format") not in (REPORT_FORMAT, QUERY_FORMAT):
        raise InvalidInput(f"unknown document format {document.get('format')!r}")
    expires = datetime.fromisoformat(str(document["expires_at"]).replace("Z", "+00:00"))
    if (now or datetime.now(UTC)) >= expires:
        raise DocumentExpired(f"the document expired at {document['expires_at']}")
    return document
