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
    ConsentSigned,
    PolicyCheck,
    PolicyCheckOut,
    PurposesOut,
    ReceiptKeyOut,
)
from pps_wire.subject_sign import SubjectKey, action_document, signed_action

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
    def _key(self, key: SubjectKey | None, what: str) -> SubjectKey:
        key = key or self._client.subject_key
        if key is None:
            raise ValueError(
                f"a consent {what} is signed by the subject's own key: pass key=..., or "
                "Client(..., subject_key=SubjectKey.from_json(...))"
            )
        return key

    def _signed(self, key: SubjectKey, consent: ConsentPublic, action: Any) -> dict[str, str]:
        return signed_action(
            key,
            action_document(
                action=action,
                consent_id=consent.id,
                subject=consent.subject_uscc,
                bank=consent.bank_org_id,
                purpose=consent.purpose,
                scope=[s.model_dump() for s in consent.scope],
                operations=consent.operations,
                valid_from=consent.valid_from,
                valid_until=consent.valid_until,
                max_uses=consent.max_uses,
                granularity=consent.granularity,
            ),
        )

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
        key: SubjectKey | None = None,
    ) -> ConsentPublic:
        """A subject grants consent to a bank (times need a timezone), signing the terms here with its own key
        (``key``, or the client's ``subject_key``). ``granularity`` is what a score may release about the
        subject: ``decision``, ``grade`` or ``score`` (default: the coarsest that serves the purpose); it is
        part of the signed terms. The grant's signed receipt: :meth:`receipt`."""
        signer = self._key(key, "grant")
        subject = self._client.me().org.uscc or ""  # not a subject: the service refuses by role
        terms = _terms(purpose, scope, operations, valid_until, valid_from, max_uses, granularity)
        document = action_document(action="grant", subject=subject, bank=bank_org_id, **terms)
        body = ConsentGrant.model_validate(
            {"bank_org_id": bank_org_id, **terms, "signature": signed_action(signer, document)}
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

    def approve(self, consent_id: str, *, key: SubjectKey | None = None) -> ConsentPublic:
        """Approve a bank's request, signing its terms (as this client reads them) with the subject's key."""
        signer = self._key(key, "approval")
        body = ConsentSigned.model_validate(
            {"signature": self._signed(signer, self.get(consent_id), "approve")}
        )
        return self._client._call(
            "POST", f"/v1/consents/{consent_id}/approve", ConsentPublic, json_body=dumps(body)
        )

    def deny(self, consent_id: str, reason: str) -> ConsentPublic:
        body = ConsentDecision(reason=reason)
        return self._client._call(
            "POST", f"/v1/consents/{consent_id}/deny", ConsentPublic, json_body=dumps(body)
        )

    def revoke(self, consent_id: str, *, key: SubjectKey | None = None) -> ConsentPublic:
        """Withdraw consent, effective at once (also for jobs in flight). Signed with the subject's key if this
        client has one (kept as the subject's proof); a withdrawal needs no signature (PIPL art. 15)."""
        signer = key or self._client.subject_key
        if signer is None:
            return self._client._call("POST", f"/v1/consents/{consent_id}/revoke", ConsentPublic)
        body = ConsentSigned.model_validate(
            {"signature": self._signed(signer, self.get(consent_id), "revoke")}
        )
        return self._client._call(
            "POST", f"/v1/consents/{consent_id}/revoke", ConsentPublic, json_body=dumps(body)
        )

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
