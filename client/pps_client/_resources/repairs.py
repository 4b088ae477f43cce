"""Credit repair (信用修复) and statements: a subject applies, the designated authority decides, banks are told."""

from __future__ import annotations

import base64
import builtins
from collections.abc import Iterable, Sequence
from typing import Any

from pps_client._client import dumps
from pps_client._resources._base import Resource
from pps_wire.schemas import (
    DishonestyRecordPublic,
    RepairApprove,
    RepairCreate,
    RepairDeny,
    RepairNoticePublic,
    RepairObject,
    RepairPublic,
    StatementCreate,
    StatementPublic,
)

PROOF_KINDS = ("fine_receipt", "tax_clearance", "rectification_report", "annual_report", "other")


class Repairs(Resource):
    def records(self) -> builtins.list[DishonestyRecordPublic]:
        """The caller's own dishonesty records, their periods and status, and the commitment to sign for each."""
        return self._client._call_list("GET", "/v1/me/dishonesty-records", DishonestyRecordPublic)

    def apply(
        self,
        record_id: str,
        commitment: str,
        *,
        proofs: Iterable[tuple[str, str, bytes]] = (),
    ) -> RepairPublic:
        """Apply for the repair of one of the caller's records, signing ``commitment`` (the text
        :meth:`records` gives) and attaching ``proofs`` as ``(kind, media_type, bytes)``."""
        docs: list[dict[str, Any]] = []
        for kind, media_type, data in proofs:
            docs.append({"kind": kind, "media_type": media_type, "content": base64.b64encode(data).decode()})
        body = RepairCreate.model_validate({"record_id": record_id, "commitment": commitment, "proofs": docs})
        return self._client._call("POST", "/v1/repairs", RepairPublic, json_body=dumps(body))

    def list(self, *, state: str | None = None, overdue: bool | None = None) -> builtins.list[RepairPublic]:
        """Applications the caller may see (its own, its queue as an authority, or all), following the pages."""
        params = {"state": state, "overdue": None if overdue is None else str(overdue).lower()}
        return self._client._pages("/v1/repairs", RepairPublic, params)

    def get(self, application_id: str) -> RepairPublic:
        return self._client._call("GET", f"/v1/repairs/{application_id}", RepairPublic)

    def approve(self, application_id: str, *, note: str | None = None) -> RepairPublic:
        body = RepairApprove(note=note)
        return self._client._call(
            "POST", f"/v1/repairs/{application_id}/approve", RepairPublic, json_body=dumps(body)
        )

    def deny(self, application_id: str, reasons: Sequence[str]) -> RepairPublic:
        body = RepairDeny(reasons=list(reasons))
        return self._client._call(
            "POST", f"/v1/repairs/{application_id}/deny", RepairPublic, json_body=dumps(body)
        )

    def object(self, application_id: str, text: str) -> RepairPublic:
        """Object to a denial (once): the authority decides again."""
        body = RepairObject(text=text)
        return self._client._call(
            "POST", f"/v1/repairs/{application_id}/object", RepairPublic, json_body=dumps(body)
        )

    def notices(self) -> builtins.list[RepairNoticePublic]:
        """A bank's repair notices: released results that counted a record since repaired."""
        return self._client._pages("/v1/repair-notices", RepairNoticePublic)

    def add_statement(self, dataset_id: str, record_key: str, text: str) -> StatementPublic:
        """Attach the caller's statement to one of its negative records (shown to banks with it)."""
        body = StatementCreate(dataset_id=dataset_id, record_key=record_key, text=text)
        return self._client._call("POST", "/v1/statements", StatementPublic, json_body=dumps(body))
