"""Natural persons (farm and herding households, individual-business owners) and every subject's automated
decisions: what the person portal (``/ui/person``) does, for programs.

A person is onboarded by the operator with its resident ID number, which the server validates and replaces by
a keyed pseudonym (the person *code*); nothing here returns the number. A person's consent needs its separate
grants (PIPL Art. 23, 28-29) and, for income, asset or tax fields, the acknowledgement of the warning of
征信业管理条例 Art. 14: :meth:`Persons.preview` says what to show, :meth:`Persons.consent` grants after it.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pps_client._client import dumps
from pps_client._resources._base import Resource
from pps_client._resources.consents import Scope, _terms
from pps_wire.schemas import AutomatedDecisionOut, ConsentPublic, ExplainIn, ExplanationOut
from pps_wire.schemas.persons import (
    AssessmentIn,
    AssessmentOut,
    ConsentPreviewOut,
    ErasedOut,
    ErasureIn,
    PersonConsentGrant,
    PersonCreate,
    PersonOverviewOut,
    PersonPublic,
    PersonReportOut,
    RatingAnswerOut,
    RatingQueryIn,
)
from pps_wire.subject_sign import SubjectKey, action_document, signed_action


class Persons(Resource):
    # --- the operator -----------------------------------------------------------------------------------

    def onboard(self, resident_id: str, *, kind: str = "household") -> PersonPublic:
        """Onboard a person by resident ID number (GB 11643; refused with ``invalid_resident_id`` if its check
        character is wrong). ``kind``: ``household`` or ``individual_business``. Returns the code and the masked
        number, never the number."""
        body = PersonCreate.model_validate({"resident_id": resident_id, "kind": kind})
        return self._client._call("POST", "/v1/persons", PersonPublic, json_body=dumps(body))

    def record_assessment(
        self,
        purpose: str,
        *,
        activity: str,
        lawful_and_necessary: str,
        impact_and_risks: str,
        measures: str,
    ) -> AssessmentOut:
        """Record a personal-information impact assessment for a purpose (PIPL Art. 55-56)."""
        body = AssessmentIn.model_validate(
            {
                "purpose": purpose,
                "activity": activity,
                "lawful_and_necessary": lawful_and_necessary,
                "impact_and_risks": impact_and_risks,
                "measures": measures,
            }
        )
        return self._client._call("POST", "/v1/impact-assessments", AssessmentOut, json_body=dumps(body))

    def assessments(self) -> builtins.list[AssessmentOut]:
        return self._client._call_list("GET", "/v1/impact-assessments", AssessmentOut)

    # --- the person itself ------------------------------------------------------------------------------

    def me(self) -> PersonOverviewOut:
        """The person's overview: its code and masked number, free reports left, notices, assessments and
        access history."""
        return self._client._call("GET", "/v1/persons/me", PersonOverviewOut)

    def _grant_body(
        self,
        bank_org_id: str,
        purpose: str,
        scope: Scope,
        operations: Iterable[str],
        valid_until: datetime,
        granularity: str | None,
        separate: Mapping[str, Any],
    ) -> dict[str, Any]:
        return {
            "bank_org_id": bank_org_id,
            **_terms(purpose, scope, operations, valid_until, None, None, granularity),
            "separate": dict(separate),
        }

    def preview(
        self,
        bank_org_id: str,
        *,
        purpose: str,
        scope: Scope,
        operations: Iterable[str],
        valid_until: datetime,
        granularity: str | None = None,
    ) -> ConsentPreviewOut:
        """What the person must be shown before consenting: the sensitive fields that need a grant each, the
        Art. 14 warning (text and SHA-256) and whether the purpose has an impact assessment."""
        body = PersonConsentGrant.model_validate(
            self._grant_body(
                bank_org_id, purpose, scope, operations, valid_until, granularity, {"provide_to_bank": False}
            )
        )
        return self._client._call(
            "POST", "/v1/persons/me/consents/preview", ConsentPreviewOut, json_body=dumps(body)
        )

    def consent(
        self,
        bank_org_id: str,
        *,
        purpose: str,
        scope: Scope,
        operations: Iterable[str],
        valid_until: datetime,
        shown: ConsentPreviewOut,
        provide_to_bank: bool,
        sensitive_fields: Mapping[str, Sequence[str]] | None = None,
        granularity: str | None = None,
        key: SubjectKey | None = None,
    ) -> ConsentPublic:
        """Grant consent with the separate grants, after the person was ``shown`` the :meth:`preview`:
        ``provide_to_bank`` is the separate consent to this bank (PIPL Art. 23); ``sensitive_fields``
        (default: every one the preview named) the fields granted one by one (Art. 29); the warning the preview
        showed is acknowledged by its hash. The terms and the separate grants are signed here with the person's
        own key (``key``, or the client's ``subject_key``). Refused (``separate_consent_required``) if a grant
        is missing."""
        signer = self._client.consents._key(key, "grant")
        separate = {
            "provide_to_bank": provide_to_bank,
            "sensitive_fields": {k: list(v) for k, v in (sensitive_fields or shown.sensitive_fields).items()},
            "warning_sha256": shown.warning_sha256,
        }
        body = self._grant_body(bank_org_id, purpose, scope, operations, valid_until, granularity, separate)
        document = action_document(
            action="grant",
            subject=self._client.me().org.uscc or "",
            bank=bank_org_id,
            purpose=purpose,
            scope=body["scope"],
            operations=body["operations"],
            valid_until=valid_until,
            granularity=granularity,
            separate=separate,
        )
        checked = PersonConsentGrant.model_validate({**body, "signature": signed_action(signer, document)})
        return self._client._call("POST", "/v1/persons/me/consents", ConsentPublic, json_body=dumps(checked))

    def report(self) -> PersonReportOut:
        """A free report (two a calendar year, 征信业管理条例 Art. 17; the third raises ``free_reports_exhausted``
        and is not counted): the person's records, consents, history, notices and assessments."""
        return self._client._call("POST", "/v1/persons/me/report", PersonReportOut)

    def erase(self) -> ErasedOut:
        """Withdraw every consent and delete the person's data (PIPL Art. 47): its rows leave every dataset
        (the versions that held them are crypto-shredded), its reports, notices and disclosures are deleted,
        its account closes (this client's token stops working); the ledger keeps the pseudonymous fact."""
        body = ErasureIn(confirm=True)
        return self._client._call("POST", "/v1/persons/me/erase", ErasedOut, json_body=dumps(body))

    # --- a bank -------------------------------------------------------------------------------------------

    def ratings(self, subjects: Sequence[str], *, purpose: str) -> builtins.list[RatingAnswerOut]:
        """A bank's authorised query of households' 信用户 grades (by person code)."""
        body = RatingQueryIn.model_validate({"purpose": purpose, "subjects": list(subjects)})
        return self._client._call_list(
            "POST", "/v1/household-ratings/query", RatingAnswerOut, json_body=dumps(body)
        )


class Decisions(Resource):
    """Every subject's (an enterprise's or a person's) automated decisions and their explanation (PIPL Art. 24)."""

    def list(self) -> builtins.list[AutomatedDecisionOut]:
        """Each approved model whose output about the caller reached a bank: which bank, which model, at which
        granularity, how often, for which purposes, and whether the enclave can explain it."""
        return self._client._call_list("GET", "/v1/me/decisions", AutomatedDecisionOut)

    def explain(self, bank_org_id: str, model_digest: str) -> ExplanationOut:
        """Why that model scored the caller as it did: the features that moved its score most from the
        average, their direction and share (rounded to 10 %), and the result at the granularity the bank got —
        computed in the enclave from the approved model; no weight, nobody else's data."""
        body = ExplainIn.model_validate({"bank_org_id": bank_org_id, "model_digest": model_digest})
        return self._client._call("POST", "/v1/me/decisions/explain", ExplanationOut, json_body=dumps(body))
