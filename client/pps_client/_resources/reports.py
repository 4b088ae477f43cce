"""The standard credit report and authorised queries (issue 23): a bank asks, an enterprise reads its own; the
documents come signed with the ledger's key and expire (:func:`pps_wire.report.verify_document`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pps_client._resources._base import Resource
from pps_wire.report import verify_document
from pps_wire.schemas.reports import QueryOut, SignedDocumentOut


class Reports(Resource):
    def report(self, subject_uscc: str, purpose: str) -> SignedDocumentOut:
        """A bank's view of an enterprise's standard credit report: public information always, masked summaries
        of its histories only under its consent (``report`` operation) for this bank and purpose."""
        return self._client._call(
            "POST",
            "/v1/reports",
            SignedDocumentOut,
            json_body={"subject_uscc": subject_uscc, "purpose": purpose},
        )

    def own(self) -> SignedDocumentOut:
        """An enterprise's own report, free and unmasked."""
        return self._client._call("GET", "/v1/me/report", SignedDocumentOut)

    def get(self, doc_id: str) -> SignedDocumentOut:
        """A document released to you or about you, until it expires (then :class:`pps_client.Gone`)."""
        return self._client._call("GET", f"/v1/reports/{doc_id}", SignedDocumentOut)

    def html(self, doc_id: str) -> str:
        """The printable view of a document."""
        return self._client._request("GET", f"/v1/reports/{doc_id}/html").text

    def query(
        self,
        subjects: Sequence[str],
        fields: Mapping[str, Sequence[str]],
        purpose: str,
        *,
        months: int = 12,
    ) -> QueryOut:
        """Query subjects' records (dataset id -> fields) through the disclosure modes: one signed result per
        subject, with the fields let out and the ones withheld and why (``query`` operation)."""
        return self._client._call(
            "POST",
            "/v1/queries",
            QueryOut,
            json_body={
                "subjects": list(subjects),
                "fields": {k: list(v) for k, v in fields.items()},
                "purpose": purpose,
                "months": months,
            },
        )

    def verify(self, note: str, *, now: datetime | None = None) -> dict[str, Any]:
        """The document in ``note`` if the ledger's key signed it and it has not expired (raises otherwise).
        The key is fetched from the service; pin it out of band for stronger assurance."""
        key = self._client.ledger.public_key().verifier_key
        return verify_document(note, key, now=now)
