"""Objections and corrections: a subject disputes its records, the provider resolves, banks are told."""

from __future__ import annotations

import base64
import builtins
from collections.abc import Iterable, Mapping
from typing import Any

from pps_client._client import dumps
from pps_client._resources._base import Resource
from pps_wire.schemas import (
    CorrectionPublic,
    ObjectionAccept,
    ObjectionCreate,
    ObjectionPublic,
    ObjectionReject,
    ObjectionUnverifiable,
)

EVIDENCE_TYPES = ("application/pdf", "image/png", "image/jpeg")


class Objections(Resource):
    def file(
        self,
        dataset_id: str,
        fields: Iterable[str],
        reason: str,
        *,
        record_key: str | None = None,
        evidence: bytes | None = None,
        evidence_type: str | None = None,
    ) -> ObjectionPublic:
        """A subject disputes ``fields`` of its record (``record_key``: the period or record key value, if the
        dataset has one) with a reason and optionally an evidence file (``evidence_type``: application/pdf,
        image/png or image/jpeg)."""
        doc: dict[str, Any] = {"dataset_id": dataset_id, "fields": list(fields), "reason": reason}
        if record_key is not None:
            doc["record_key"] = record_key
        if evidence is not None:
            if evidence_type is None:
                raise ValueError(
                    f"evidence_type is required with evidence: one of {', '.join(EVIDENCE_TYPES)}"
                )
            doc["evidence"] = {"media_type": evidence_type, "content": base64.b64encode(evidence).decode()}
        body = ObjectionCreate.model_validate(doc)
        return self._client._call("POST", "/v1/objections", ObjectionPublic, json_body=dumps(body))

    def list(
        self, *, state: str | None = None, overdue: bool | None = None
    ) -> builtins.list[ObjectionPublic]:
        """The objections the caller may see, following the pages."""
        params = {"state": state, "overdue": None if overdue is None else str(overdue).lower()}
        return self._client._pages("/v1/objections", ObjectionPublic, params)

    def get(self, objection_id: str) -> ObjectionPublic:
        return self._client._call("GET", f"/v1/objections/{objection_id}", ObjectionPublic)

    def evidence(self, objection_id: str) -> bytes:
        """The evidence file (its subject and the dataset's provider only; the reading is on the record)."""
        return self._client._bytes(f"/v1/objections/{objection_id}/evidence")

    def accept(
        self, objection_id: str, corrected: Mapping[str, Any], *, note: str | None = None
    ) -> ObjectionPublic:
        """The provider accepts with corrected values for the disputed fields (a new dataset version)."""
        body = ObjectionAccept(corrected=dict(corrected), note=note)
        return self._client._call(
            "POST", f"/v1/objections/{objection_id}/accept", ObjectionPublic, json_body=dumps(body)
        )

    def reject(self, objection_id: str, reason: str) -> ObjectionPublic:
        body = ObjectionReject(reason=reason)
        return self._client._call(
            "POST", f"/v1/objections/{objection_id}/reject", ObjectionPublic, json_body=dumps(body)
        )

    def corrections(self) -> builtins.list[CorrectionPublic]:
        """A bank's correction notices: released results that used a value later corrected."""
        return self._client._pages("/v1/corrections", CorrectionPublic)

    def unverifiable(self, objection_id: str, note: str) -> ObjectionPublic:
        """The provider cannot verify the value: the record is kept and annotated in every result using it."""
        body = ObjectionUnverifiable(note=note)
        return self._client._call(
            "POST", f"/v1/objections/{objection_id}/unverifiable", ObjectionPublic, json_body=dumps(body)
        )
