"""The rules for natural persons (farm and herding households, individual-business owners), on top of consent.

Who learns what: a bank learns only what an enterprise's consent would give it, and for a person only after
each of these grants is on record; the operator records the grants, notices, reports and assessments keyed by
the person code (never the resident ID number, :mod:`pps.identity.persons`).

* **Separate consent** (单独同意): to provide the person's data to a bank at all (PIPL Art. 23), and for each
  sensitive field — every field above class C1, such as accounts, income and assets (Art. 28-29). A consent
  without them is refused when given and, should one exist without its record, denied by the policy engine.
* **The Art. 14 warning** (征信业管理条例): income, deposits, property and tax amounts
  (``income_or_assets`` fields) only after the person was told the possible adverse consequences; the warning
  text shown and its SHA-256 are stored with the consent, and the consent's receipt is the written form
  with the agreed purpose (Art. 18).
* **Impact assessment** (PIPL Art. 55-56): no processing of persons' data for a purpose without a recorded
  assessment of that processing activity, kept at least three years, shown to the persons concerned.
* **Notice before negative information** (Art. 15): a provider records the notice to the person; the person
  sees it.
* **Two free reports a year** (Art. 17): the third in a calendar year is refused and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pps.data.datasets.schema import DatasetSchema, Sensitivity
from pps.errors import FreeReportsExhausted, InvalidInput, SeparateConsentRequired
from pps.governance.consent import ConsentService, Terms, check_purpose
from pps.governance.signatures import SignedAction
from pps.identity.persons import is_individual_business, is_person_code
from pps.infra.storage.tables import (
    Consent,
    Dataset,
    FreeReport,
    ImpactAssessment,
    Organization,
    Person,
    PersonConsentTerms,
    PersonNotice,
    new_id,
    utcnow,
)
from pps.ledger.entry import Actor, EntryDraft, ObjectRef, format_time
from pps.ledger.store import EntryFilter, Ledger
from pps_wire.subject_sign import canonical_separate

FREE_REPORTS_PER_YEAR = 2
ASSESSMENT_RETENTION = timedelta(days=3 * 366)
ASSESSMENT_KEYS = ("lawful_and_necessary", "impact_and_risks", "measures")

WARNING_TEMPLATE = (
    "重要提示（《征信业管理条例》第十四条）：您同意向 {bank} 提供以下收入、存款、财产或纳税信息：{fields}。"
    "这些信息可能对您产生不利后果，例如贷款被拒、额度降低或利率提高。您可以拒绝，拒绝不影响您使用平台的其他服务。\n"
    "Important (Credit Reporting Regulation Art. 14): you agree to provide {bank} with these income, deposit, "
    "property or tax fields: {fields}. They may have adverse consequences for you, such as a refused loan, a "
    "lower limit or a higher rate. You may refuse; refusing does not affect your other use of the platform."
)


@dataclass(frozen=True)
class SeparateGrant:
    """What the person granted separately, beside the consent's terms."""

    provide_to_bank: bool
    """the separate consent to provide personal information to this bank (PIPL Art. 23)"""
    sensitive_fields: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """dataset id -> sensitive fields granted one by one (PIPL Art. 29)"""
    warning_sha256: str | None = None
    """SHA-256 of the Art. 14 warning the person was shown, when income, asset or tax fields are covered"""

    def signed_form(self) -> dict[str, Any]:
        """These grants as the person's signature covers them (:func:`pps_wire.subject_sign.canonical_separate`)."""
        return canonical_separate(
            {
                "provide_to_bank": self.provide_to_bank,
                "sensitive_fields": dict(self.sensitive_fields),
                "warning_sha256": self.warning_sha256,
            }
        )


def _schema(session: Session, dataset_id: str) -> DatasetSchema:
    ds = session.get(Dataset, dataset_id)
    if ds is None or ds.deleted_at is not None:
        raise InvalidInput(f"dataset {dataset_id} does not exist")
    return DatasetSchema.model_validate_json(ds.schema_json)


def sensitive_and_art14(
    session: Session, fields: Mapping[str, Sequence[str]]
) -> tuple[dict[str, list[str]], list[str]]:
    """Of the given fields: the sensitive ones per dataset (above C1) and the Art. 14 ones, as the warning names
    them (``description (field)``)."""
    sensitive: dict[str, list[str]] = {}
    art14: list[str] = []
    for dataset_id, names in fields.items():
        schema = _schema(session, dataset_id)
        for name in names:
            try:
                col = schema.column(name)
            except KeyError:
                raise InvalidInput(f"dataset {dataset_id} has no field {name!r}") from None
            if col.sensitivity is not Sensitivity.C1 or col.grade >= 3:
                sensitive.setdefault(dataset_id, []).append(name)
            if col.income_or_assets:
                art14.append(f"{col.description or name} ({name})")
    return sensitive, sorted(art14)


def art14_warning(bank_name: str, art14_fields: Sequence[str]) -> tuple[str, str]:
    """The warning text for these fields and its SHA-256 (what the person acknowledges)."""
    text = WARNING_TEMPLATE.format(bank=bank_name, fields=", ".join(art14_fields))
    return text, hashlib.sha256(text.encode()).hexdigest()


class PersonRules:
    def __init__(self, ledger: Ledger, consents: ConsentService) -> None:
        self.ledger = ledger
        self.consents = consents

    # --- impact assessments (PIPL Art. 55-56) ---------------------------------------------------------

    def record_assessment(
        self,
        session: Session,
        *,
        purpose: str,
        activity: str,
        assessment: Mapping[str, str],
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> ImpactAssessment:
        check_purpose(purpose)
        activity = activity.strip()
        if not activity:
            raise InvalidInput("name the processing activity the assessment covers")
        missing = [k for k in ASSESSMENT_KEYS if not str(assessment.get(k) or "").strip()]
        if missing:
            raise InvalidInput(
                f"an impact assessment must state {', '.join(missing)} (PIPL Art. 56); nothing was recorded"
            )
        now = now or utcnow()
        row = ImpactAssessment(
            id=new_id("pia"),
            purpose=purpose,
            activity=activity,
            assessment_json=json.dumps(
                {k: str(assessment[k]).strip() for k in ASSESSMENT_KEYS}, ensure_ascii=False
            ),
            created_by=actor.org_id or "operator",
            created_at=now,
            retain_until=now + ASSESSMENT_RETENTION,
        )
        session.add(row)
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="person.impact_assessment",
                actor=actor,
                objects=(ObjectRef("impact_assessment", row.id),),
                purpose=purpose,
                request_id=request_id,
                detail={"activity": activity, "retain_until": format_time(row.retain_until)},
            ),
            now=now,
        )
        return row

    def assessments(self, session: Session, purposes: Sequence[str] | None = None) -> list[ImpactAssessment]:
        query = select(ImpactAssessment).order_by(ImpactAssessment.created_at, ImpactAssessment.id)
        if purposes is not None:
            query = query.where(ImpactAssessment.purpose.in_(list(purposes)))
        return list(session.execute(query).scalars())

    # --- consent with the separate grants ------------------------------------------------------------

    def _check_grant(
        self,
        session: Session,
        bank_org_id: str,
        purpose: str,
        scope: list[dict[str, Any]],
        grant: SeparateGrant,
    ) -> tuple[dict[str, list[str]], str | None, str | None]:
        if not grant.provide_to_bank:
            raise SeparateConsentRequired(
                "a person's data goes to a bank only with a separate consent to that provision (PIPL Art. 23): "
                "set provide_to_bank to true after showing the person the bank, purpose and fields",
                details={"missing": ["provide_to_bank"]},
            )
        if not self.assessments(session, [purpose]):
            raise InvalidInput(
                f"no personal-information impact assessment is recorded for purpose {purpose!r} (PIPL Art. 55); "
                "the operator must record one before persons can consent to it"
            )
        resolved = self.consents._resolve_scope(session, scope)
        wanted = {i["dataset_id"]: i["fields"] for i in resolved}
        sensitive, art14 = sensitive_and_art14(session, wanted)
        missing = sorted(
            f"{d}.{f}"
            for d, names in sensitive.items()
            for f in names
            if f not in set(grant.sensitive_fields.get(d, ()))
        )
        if missing:
            raise SeparateConsentRequired(
                f"these sensitive fields need a separate grant each (PIPL Art. 29): {', '.join(missing)}",
                details={"missing": missing},
            )
        text = digest = None
        if art14:
            bank = session.get(Organization, bank_org_id)
            text, digest = art14_warning(bank.name if bank else bank_org_id, art14)
            if grant.warning_sha256 != digest:
                raise SeparateConsentRequired(
                    "income, deposit, property or tax fields need the person to acknowledge the warning of "
                    "征信业管理条例 Art. 14 first: show details.warning and send its warning_sha256",
                    details={"missing": ["art14_warning"], "warning": text, "warning_sha256": digest},
                )
        return sensitive, text, digest

    def check_separate(
        self,
        session: Session,
        bank_org_id: str,
        purpose: str,
        scope: list[dict[str, Any]],
        grant: SeparateGrant,
    ) -> None:
        """Raise, naming what is missing, unless ``grant`` holds every separate grant these terms need (the
        portal asks before the person signs)."""
        check_purpose(purpose)
        self._check_grant(session, bank_org_id, purpose, scope, grant)

    def preview(
        self, session: Session, *, bank_org_id: str, purpose: str, scope: list[dict[str, Any]]
    ) -> tuple[dict[str, list[str]], str | None, str | None, bool]:
        """What the person must be shown before granting: the sensitive fields needing a grant each, the Art. 14
        warning (text and hash) if any field calls for it, and whether the purpose has an impact assessment."""
        check_purpose(purpose)
        self.consents._bank(session, bank_org_id)
        resolved = self.consents._resolve_scope(session, scope)
        sensitive, art14 = sensitive_and_art14(session, {i["dataset_id"]: i["fields"] for i in resolved})
        text = digest = None
        if art14:
            bank = session.get(Organization, bank_org_id)
            text, digest = art14_warning(bank.name if bank else bank_org_id, art14)
        return sensitive, text, digest, bool(self.assessments(session, [purpose]))

    def grant(
        self,
        session: Session,
        *,
        subject: Organization,
        person: Person,
        bank_org_id: str,
        terms: Terms,
        separate: SeparateGrant,
        signed: SignedAction | None,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> Consent:
        """A person grants consent with its separate grants, signed by the person's own enrolled key over the
        terms and those grants; refused, with nothing stored, if one is missing or the signature fails."""
        now = now or utcnow()
        check_purpose(terms.purpose)
        self.consents._bank(session, bank_org_id)
        sensitive, text, digest = self._check_grant(
            session, bank_org_id, terms.purpose, terms.scope, separate
        )
        consent = self.consents.grant(
            session,
            subject=subject,
            bank_org_id=bank_org_id,
            terms=terms,
            signed=signed,
            actor=actor,
            request_id=request_id,
            now=now,
            separate_grant=True,
            separate=separate.signed_form(),
        )
        self._record_terms(session, consent, person, sensitive, text, digest, actor, request_id, now)
        return consent

    def approve(
        self,
        session: Session,
        consent: Consent,
        *,
        person: Person,
        separate: SeparateGrant,
        signed: SignedAction | None,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> Consent:
        """A person approves a bank's request with its separate grants, signed by its own key."""
        now = now or utcnow()
        sensitive, text, digest = self._check_grant(
            session, consent.bank_org_id, consent.purpose, json.loads(consent.scope_json), separate
        )
        self.consents.approve(
            session,
            consent,
            signed=signed,
            actor=actor,
            request_id=request_id,
            now=now,
            separate_grant=True,
            separate=separate.signed_form(),
        )
        self._record_terms(session, consent, person, sensitive, text, digest, actor, request_id, now)
        return consent

    def _record_terms(
        self,
        session: Session,
        consent: Consent,
        person: Person,
        sensitive: dict[str, list[str]],
        text: str | None,
        digest: str | None,
        actor: Actor,
        request_id: str | None,
        now: datetime,
    ) -> None:
        fields = [{"dataset_id": d, "fields": sorted(f)} for d, f in sorted(sensitive.items())]
        session.add(
            PersonConsentTerms(
                consent_id=consent.id,
                subject_code=person.code,
                separate_grant_at=now,
                sensitive_fields_json=json.dumps(fields),
                warning_sha256=digest,
                warning_text=text,
            )
        )
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="person.separate_consent",
                actor=actor,
                objects=(ObjectRef("consent", consent.id), ObjectRef("org", consent.bank_org_id)),
                subjects=(person.code,),
                purpose=consent.purpose,
                consent_ids=(consent.id,),
                request_id=request_id,
                detail={"provide_to_bank": True, "sensitive_fields": fields, "art14_warning_sha256": digest},
            ),
            now=now,
        )

    # --- notices, reports ----------------------------------------------------------------------------

    def notify_negative(
        self,
        session: Session,
        *,
        provider: Organization,
        code: str,
        dataset_id: str,
        text: str,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> PersonNotice:
        """A provider tells a person (by code; the person need not have joined the platform) that negative
        information about it will be supplied (征信业管理条例 Art. 15); an upload of a dataset marked ``negative``
        is refused for every person without such a notice from its provider."""
        ds = session.get(Dataset, dataset_id)
        if ds is None or ds.deleted_at is not None or ds.provider_org_id != provider.id:
            raise InvalidInput(f"dataset {dataset_id} is not one of {provider.id}'s datasets")
        text = text.strip()
        if not text:
            raise InvalidInput("a notice must say what negative information will be supplied")
        now = now or utcnow()
        notice = PersonNotice(
            id=new_id("ntc"),
            subject_code=code,
            provider_org_id=provider.id,
            dataset_id=dataset_id,
            text=text,
            created_at=now,
        )
        session.add(notice)
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="person.negative_notice",
                actor=actor,
                objects=(ObjectRef("dataset", dataset_id), ObjectRef("notice", notice.id)),
                subjects=(code,),
                request_id=request_id,
            ),
            now=now,
        )
        return notice

    def notices(self, session: Session, person: Person) -> list[PersonNotice]:
        return list(
            session.execute(
                select(PersonNotice)
                .where(PersonNotice.subject_code == person.code)
                .order_by(PersonNotice.created_at)
            ).scalars()
        )

    def reports_used(self, session: Session, person: Person, year: int) -> int:
        return int(
            session.execute(
                select(func.count())
                .select_from(FreeReport)
                .where(FreeReport.subject_code == person.code, FreeReport.year == year)
            ).scalar_one()
        )

    def take_free_report(
        self,
        session: Session,
        *,
        person: Person,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> tuple[FreeReport, int]:
        """Count one free report; refuses the third of a calendar year before writing anything.

        Returns the report row and how many free reports are left this year.
        """
        now = now or utcnow()
        used = self.reports_used(session, person, now.year)
        if used >= FREE_REPORTS_PER_YEAR:
            raise FreeReportsExhausted(
                f"you have had your {FREE_REPORTS_PER_YEAR} free reports of {now.year} (征信业管理条例 Art. 17); "
                f"the next free one is available from {now.year + 1}-01-01. Your records and access history "
                "stay readable at any time.",
                details={"year": now.year, "used": used},
            )
        row = FreeReport(id=new_id("rpt"), subject_code=person.code, year=now.year, issued_at=now)
        session.add(row)
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="person.free_report",
                actor=actor,
                objects=(ObjectRef("report", row.id),),
                subjects=(person.code,),
                request_id=request_id,
                detail={"year": now.year, "number": used + 1},
            ),
            now=now,
        )
        return row, FREE_REPORTS_PER_YEAR - used - 1

    def history(self, session: Session, person: Person, *, limit: int = 200) -> list[dict[str, Any]]:
        """Every ledger entry that touches the person, newest last (who did what, why, when)."""
        rows = self.ledger.entries(session, EntryFilter(subject=person.code), limit=limit)
        out = []
        for r in rows:
            doc = json.loads(r.entry)
            out.append(
                {
                    "index": r.index,
                    "time": doc.get("time"),
                    "action": doc.get("action"),
                    "by": (doc.get("actor") or {}).get("org"),
                    "purpose": doc.get("purpose"),
                    "consent_ids": doc.get("consent_ids", []),
                }
            )
        return out


def person_deny_reasons(
    session: Session, consent_ids: Mapping[str, str], fields: Mapping[str, Sequence[str]], purpose: str
) -> dict[str, str]:
    """For subjects the consent check allowed (subject -> consent id): for each person among them, the reason
    to deny instead, if a person's rule is not met (what :class:`pps.governance.policy.PolicyEngine` asks)."""
    persons = {s: c for s, c in consent_ids.items() if is_person_code(s)}
    businesses = [s for s in consent_ids if is_individual_business(s)]
    if businesses:  # individual businesses onboarded with their owner (PersonRegistry.onboard_business)
        owned = set(session.scalars(select(Person.code).where(Person.code.in_(businesses))))
        persons |= {s: consent_ids[s] for s in businesses if s in owned}
    if not persons:
        return {}
    reasons: dict[str, str] = {}
    assessed = session.execute(
        select(ImpactAssessment.id).where(ImpactAssessment.purpose == purpose).limit(1)
    ).first()
    if assessed is None:
        return dict.fromkeys(persons, f"no impact assessment recorded for purpose {purpose} (PIPL Art. 55)")
    sensitive, art14 = sensitive_and_art14(session, fields)
    terms = {
        t.consent_id: t
        for t in session.execute(
            select(PersonConsentTerms).where(PersonConsentTerms.consent_id.in_(sorted(set(persons.values()))))
        ).scalars()
    }
    for subject, consent_id in persons.items():
        t = terms.get(consent_id)
        if t is None:
            reasons[subject] = f"{consent_id} has no separate consent on record (PIPL Art. 23)"
            continue
        granted = {i["dataset_id"]: set(i["fields"]) for i in json.loads(t.sensitive_fields_json)}
        missing = [
            f"{d}.{f}" for d, names in sensitive.items() for f in names if f not in granted.get(d, set())
        ]
        if missing:
            reasons[subject] = (
                f"{consent_id}: no separate grant for {', '.join(sorted(missing))} (PIPL Art. 29)"
            )
        elif art14 and t.warning_sha256 is None:
            reasons[subject] = f"{consent_id}: the Art. 14 warning was not acknowledged"
    return reasons
