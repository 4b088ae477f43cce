"""Natural persons: a farm or herding household or an individual-business owner, keyed by a pseudonym.

The operator onboards a person by resident ID number (validated, then reduced to the person code and the
masked number); the person consents with separate grants, reads its overview and access history at any time,
and takes two free reports a year; providers record notices before negative information; the operator records
impact assessments, which everyone concerned can read (``pps.governance.persons``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import Caller, RuntimeDep, allow
from api.middleware import current_request_id
from api.routers.consent import signed_action
from api.schemas import ConsentPublic, consent_public, consent_terms
from pps.errors import InvalidInput, NotFound
from pps.governance.persons import FREE_REPORTS_PER_YEAR, SeparateGrant
from pps.identity.persons import PersonKind
from pps.identity.uscc import validate_uscc
from pps.infra.storage.tables import (
    Consent,
    ImpactAssessment,
    Organization,
    Person,
    PersonNotice,
    Role,
    utcnow,
)
from pps.runtime import Runtime
from pps_wire.schemas.persons import (
    AssessmentIn,
    AssessmentOut,
    ConsentPreviewOut,
    ErasedOut,
    ErasureIn,
    NoticeIn,
    NoticeOut,
    PersonApproval,
    PersonConsentGrant,
    PersonCreate,
    PersonCreated,
    PersonOverviewOut,
    PersonPublic,
    PersonReportOut,
    RatingAnswerOut,
    RatingQueryIn,
)

router = APIRouter(prefix="/v1", tags=["persons"])

Admin = Annotated[Caller, allow(Role.platform_admin)]
Subject = Annotated[Caller, allow(Role.subject)]
Provider = Annotated[Caller, allow(Role.data_provider)]
Bank = Annotated[Caller, allow(Role.bank)]
AnyRole = Annotated[Caller, allow()]


def _public(p: Person) -> PersonPublic:
    return PersonPublic(
        org_id=p.org_id, code=p.code, kind=p.kind, id_masked=p.id_masked, created_at=p.created_at
    )


def _assessment(a: ImpactAssessment) -> AssessmentOut:
    return AssessmentOut(
        id=a.id,
        purpose=a.purpose,
        activity=a.activity,
        assessment=json.loads(a.assessment_json),
        created_at=a.created_at,
        retain_until=a.retain_until,
    )


def _notice(n: PersonNotice) -> NoticeOut:
    return NoticeOut(
        id=n.id,
        provider_org_id=n.provider_org_id,
        dataset_id=n.dataset_id,
        text=n.text,
        created_at=n.created_at,
    )


def _me(rt: Runtime, session: Session, caller: Caller) -> tuple[Organization, Person]:
    org = session.get(Organization, caller.org_id)
    if org is None:
        raise NotFound("your organisation does not exist")
    return org, rt.persons.of_org(session, org)


def _separate(body: PersonApproval | PersonConsentGrant) -> SeparateGrant:
    s = body.separate
    return SeparateGrant(s.provide_to_bank, s.sensitive_fields, s.warning_sha256)


def _purposes_of(session: Session, code: str) -> list[str]:
    return sorted(set(session.execute(select(Consent.purpose).where(Consent.subject_uscc == code)).scalars()))


@router.post(
    "/persons", status_code=status.HTTP_201_CREATED, summary="onboard a household or owner by ID number"
)
def onboard(body: PersonCreate, caller: Admin, rt: RuntimeDep) -> PersonCreated:
    """The operator onboards a person and gets its one-time enrolment code, to hand to the person out of band;
    the person mints its own first token with it (``POST /v1/enrol``): the operator never holds one."""
    with rt.db.transaction() as session:
        if body.uscc is not None:
            if body.kind != PersonKind.individual_business.value:
                raise InvalidInput(
                    "a uscc is given only for an individual business (kind individual_business)"
                )
            done = rt.persons.onboard_business(
                session,
                uscc=body.uscc,
                owner_resident_id=body.resident_id,
                actor=caller.actor,
                request_id=current_request_id(),
            )
        else:
            done = rt.persons.onboard(
                session,
                resident_id=body.resident_id,
                kind=PersonKind(body.kind),
                actor=caller.actor,
                request_id=current_request_id(),
            )
        code = rt.identity.issue_enrolment_code(
            session, org=done.org, actor=caller.actor, request_id=current_request_id()
        )
        return PersonCreated(**_public(done.person).model_dump(), enrolment_code=code.secret)


@router.get(
    "/persons/me", summary="a person's own overview: code, free reports left, notices, assessments, history"
)
def overview(caller: Subject, rt: RuntimeDep) -> PersonOverviewOut:
    with rt.db.transaction(write=False) as session:
        _org, person = _me(rt, session, caller)
        used = rt.person_rules.reports_used(session, person, utcnow().year)
        return PersonOverviewOut(
            person=_public(person),
            free_reports_left=max(FREE_REPORTS_PER_YEAR - used, 0),
            notices=[_notice(n) for n in rt.person_rules.notices(session, person)],
            assessments=[_assessment(a) for a in rt.person_rules.assessments(session)],
            history=rt.person_rules.history(session, person),
        )


@router.post("/persons/me/consents/preview", summary="what a person must be shown before consenting")
def preview(body: PersonConsentGrant, caller: Subject, rt: RuntimeDep) -> ConsentPreviewOut:
    with rt.db.transaction(write=False) as session:
        _me(rt, session, caller)
        sensitive, text, digest, assessed = rt.person_rules.preview(
            session,
            bank_org_id=body.bank_org_id,
            purpose=body.purpose,
            scope=[i.model_dump() for i in body.scope],
        )
        return ConsentPreviewOut(
            sensitive_fields=sensitive, warning=text, warning_sha256=digest, impact_assessed=assessed
        )


@router.post(
    "/persons/me/consents",
    status_code=status.HTTP_201_CREATED,
    summary="a person grants consent, with separate grants",
)
def grant(body: PersonConsentGrant, caller: Subject, rt: RuntimeDep) -> ConsentPublic:
    with rt.db.transaction() as session:
        org, person = _me(rt, session, caller)
        consent = rt.person_rules.grant(
            session,
            subject=org,
            person=person,
            bank_org_id=body.bank_org_id,
            terms=consent_terms(body),
            separate=_separate(body),
            signed=signed_action(body.signature),
            actor=caller.actor,
            request_id=current_request_id(),
        )
        return consent_public(consent, utcnow())


@router.post(
    "/persons/me/consents/{consent_id}/approve", summary="a person approves a bank's request, separately"
)
def approve(consent_id: str, body: PersonApproval, caller: Subject, rt: RuntimeDep) -> ConsentPublic:
    with rt.db.transaction() as session:
        _org, person = _me(rt, session, caller)
        consent = rt.consents.get(session, consent_id)
        if consent.subject_uscc != person.code:
            raise NotFound(f"consent {consent_id} does not exist")
        rt.person_rules.approve(
            session,
            consent,
            person=person,
            separate=_separate(body),
            signed=signed_action(body.signature),
            actor=caller.actor,
            request_id=current_request_id(),
        )
        return consent_public(consent, utcnow())


@router.post(
    "/persons/me/report", summary="a free credit report (two a calendar year, 征信业管理条例 Art. 17)"
)
def free_report(caller: Subject, rt: RuntimeDep) -> PersonReportOut:
    with rt.db.transaction() as session:  # counted first: a refused third report changes nothing
        _org, person = _me(rt, session, caller)
        _row, left = rt.person_rules.take_free_report(
            session, person=person, actor=caller.actor, request_id=current_request_id()
        )
    with rt.db.transaction(write=False) as session:
        _org, person = _me(rt, session, caller)
        found = rt.datasets.records_of(session, person.code)
        consents = rt.consents.list_consents(session, subject_uscc=person.code, limit=500)
        now = utcnow()
        records: list[dict[str, Any]] = [
            {
                "dataset_id": r.dataset.id,
                "dataset": r.dataset.name,
                "columns": [c.model_dump(mode="json") for c in r.schema.columns],
                "rows": r.rows,
            }
            for r in found
        ]
        return PersonReportOut(
            person=_public(person),
            year=now.year,
            free_reports_left=left,
            records=records,
            consents=[consent_public(c, now).model_dump(mode="json") for c in consents],
            history=rt.person_rules.history(session, person),
            notices=[_notice(n) for n in rt.person_rules.notices(session, person)],
            assessments=[
                _assessment(a)
                for a in rt.person_rules.assessments(session, _purposes_of(session, person.code))
            ],
        )


@router.post(
    "/persons/notices", status_code=status.HTTP_201_CREATED, summary="notice before negative information"
)
def notice(body: NoticeIn, caller: Provider, rt: RuntimeDep) -> NoticeOut:
    """The provider names the person by resident ID number (pseudonymised at once) or by person code."""
    with rt.db.transaction() as session:
        provider = session.get(Organization, caller.org_id)
        if provider is None:
            raise NotFound("your organisation does not exist")
        if (body.resident_id is None) == (body.code is None):
            raise InvalidInput("name the person by resident_id or by code, not both")
        code = rt.persons.code_for(body.resident_id) if body.resident_id else validate_uscc(body.code or "")
        return _notice(
            rt.person_rules.notify_negative(
                session,
                provider=provider,
                code=code,
                dataset_id=body.dataset_id,
                text=body.text,
                actor=caller.actor,
                request_id=current_request_id(),
            )
        )


@router.post(
    "/impact-assessments", status_code=status.HTTP_201_CREATED, summary="record a PI impact assessment"
)
def record_assessment(body: AssessmentIn, caller: Admin, rt: RuntimeDep) -> AssessmentOut:
    with rt.db.transaction() as session:
        row = rt.person_rules.record_assessment(
            session,
            purpose=body.purpose,
            activity=body.activity,
            assessment=body.model_dump(include={"lawful_and_necessary", "impact_and_risks", "measures"}),
            actor=caller.actor,
            request_id=current_request_id(),
        )
        return _assessment(row)


@router.get("/impact-assessments", summary="the recorded impact assessments (PIPL Art. 55-56)")
def list_assessments(caller: AnyRole, rt: RuntimeDep) -> list[AssessmentOut]:
    with rt.db.transaction(write=False) as session:
        return [_assessment(a) for a in rt.person_rules.assessments(session)]


@router.post("/household-ratings/query", summary="a bank's authorised query of households' 信用户 ratings")
def rating_query(body: RatingQueryIn, caller: Bank, rt: RuntimeDep) -> list[RatingAnswerOut]:
    with rt.db.transaction() as session:
        answers = rt.household_ratings.query(
            session,
            bank_org_id=caller.org_id,
            subjects=body.subjects,
            purpose=body.purpose,
            actor=caller.actor,
            request_id=current_request_id(),
        )
        return [
            RatingAnswerOut(subject=a.subject, grade=a.grade, rated_on=a.rated_on, denied=a.denied)
            for a in answers
        ]


@router.post(
    "/persons/me/erase",
    summary="a person withdraws every consent and has its data deleted (PIPL Art. 47); its account closes",
)
def erase(body: ErasureIn, caller: Subject, rt: RuntimeDep) -> ErasedOut:
    if not body.confirm:
        raise InvalidInput(
            "set confirm to true to withdraw every consent and delete your data; nothing changed"
        )
    with rt.db.transaction() as session:
        _org, person = _me(rt, session, caller)
        done = rt.erasure.erase(session, person=person, actor=caller.actor, request_id=current_request_id())
    rt.features.clear()
    return ErasedOut(
        code=done.code,
        consents_ended=done.consents_ended,
        datasets=done.datasets,
        rows_removed=done.rows_removed,
        versions_shredded=done.versions_shredded,
        records_deleted=done.records_deleted,
        erased_at=done.erased_at,
    )
