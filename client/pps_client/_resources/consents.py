"""Consent: subjects grant, approve, deny and revoke; banks request and check; anyone verifies receipts."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pps_client._client import dumps
from pps_client._resources._base import Resource
from pps_wire.schemas import (
    ConsentDecision,
    ConsentGrant,
    ConsentPublic,
    ConsentRequestIn,
    PolicyCheck,
    PolicyCheckOut,
    PurposesOut,
    ReceiptKeyOut,
)

Scope = Mapping[str, Sequence[str]] | Iterable[Mapping[str, Any]]
"""dataset id -> field names (``"*"``: every C1 field), or ``[{"dataset_id", "fields"}]``."""


def _scope(scope: Scope) -> builtins.list[dict[str, Any]]:
    if isinstance(scope, Mapping):
        return [{"dataset_id": k, "fields": list(v)} for k, v in scope.items()]
    return [dict(item) for item in scope]


def _terms(
    purpose: str,
    scope: Scope,
    operations: Iterable[str],
    valid_until: datetime,
    valid_from: datetime | None,
    max_uses: int | None,
    granularity: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "purpose": purpose,
        "scope": _scope(scope),
        "operations": list(operations),
        "valid_until": valid_until,
        "valid_from": valid_from,
        "max_uses": max_uses,
    }
    if granularity is not None:  # else the service's default: the coarsest that serves the purpose
        out["granularity"] = granularity
    return out


class Consents(Resource):
    def purposes(self) -> PurposesOut:
        """The purpose catalogue and the operations consent can cover."""
        return self._client._call("GET", "/v1/purposes", PurposesOut)

    def grant(
        self,
        bank_org_id: str,
        *,
        purpose: str,
        scope: Scope,
        operations: Iterable[str],
        valid_until: datetime,
        valid_from: datetime | None = None,
        max_uses: int | None = None,
        granularity: str | None = None,
    ) -> ConsentPublic:
        """A subject grants consent to a bank (times need a timezone). ``granularity`` is what a score may
        release about the subject: ``decision``, ``grade`` or ``score`` (default: the coarsest that serves the
        purpose). The grant's signed receipt: :meth:`receipt`."""
        body = ConsentGrant.model_validate(
            {
                "bank_org_id": bank_org_id,
                **_terms(purpose, scope, operations, valid_until, valid_from, max_uses, granularity),
            }
        )
        return self._client._call("POST", "/v1/consents", ConsentPublic, json_body=dumps(body))

    def request(
        self,
        subject_uscc: str,
        *,
        purpose: str,
        scope: Scope,
        operations: Iterable[str],
        valid_until: datetime,
        valid_from: datetime | None = None,
        max_uses: int | None = None,
        granularity: str | None = None,
    ) -> ConsentPublic:
        """A bank asks an enterprise for consent (``granularity``: as in :meth:`grant`); the enterprise
        approves or denies it."""
        body = ConsentRequestIn.model_validate(
            {
                "subject_uscc": subject_uscc,
                **_terms(purpose, scope, operations, valid_until, valid_from, max_uses, granularity),
            }
        )
        return self._client._call("POST", "/v1/consent-requests", ConsentPublic, json_body=dumps(body))

    def list(self, *, state: str | None = None) -> builtins.list[ConsentPublic]:
        """A subject's own consents, a bank's received ones, or all (admins, auditors); following the pages."""
        return self._client._pages("/v1/consents", ConsentPublic, {"state": state})

    def get(self, consent_id: str) -> ConsentPublic:
        return self._client._call("GET", f"/v1/consents/{consent_id}", ConsentPublic)

    def approve(self, consent_id: str) -> ConsentPublic:
        return self._client._call("POST", f"/v1/consents/{consent_id}/approve", ConsentPublic)

    def deny(self, consent_id: str, reason: str) -> ConsentPublic:
        body = ConsentDecision(reason=reason)
        return self._client._call(
            "POST", f"/v1/consents/{consent_id}/deny", ConsentPublic, json_body=dumps(body)
        )

    def revoke(self, consent_id: str) -> ConsentPublic:
        """Withdraw consent, effective at once (also for jobs in flight)."""
        return self._client._call("POST", f"/v1/consents/{consent_id}/revoke", ConsentPublic)

    def receipt(self, consent_id: str) -> str:
        """The grant's signed receipt (a signed note); check it with :func:`pps_client.verify_receipt`."""
        return self._client._request("GET", f"/v1/consents/{consent_id}/receipt").text

    def receipt_key(self) -> ReceiptKeyOut:
        """The platform's receipt verifier key, as the service says it (pin one you got out of band)."""
        return self._client._call("GET", "/v1/consent/public-key", ReceiptKeyOut)

    def check(
        self,
        subjects: Iterable[str],
        *,
        fields: Mapping[str, Sequence[str]],
        operation: str,
        purpose: str,
    ) -> PolicyCheckOut:
        """Which of ``subjects`` may this bank use for ``operation`` on ``fields`` (dataset id -> fields), and
        if not, why."""
        body = PolicyCheck(
            subjects=list(subjects),
            fields={k: list(v) for k, v in fields.items()},
            operation=operation,
            purpose=purpose,
        )
        return self._client._call("POST", "/v1/policy/check", PolicyCheckOut, json_body=dumps(body))
