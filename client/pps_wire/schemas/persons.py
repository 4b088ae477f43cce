"""Natural persons (farm and herding households, individual-business owners): onboarding, consent with the
separate grants, free reports, notices and impact assessments. The resident ID number is accepted only on
onboarding and never returned: responses carry the person code and the masked number."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from pps_wire.schemas.common import Request, Response
from pps_wire.schemas.consent import ConsentGrant, SubjectSignatureIn


class PersonCreate(Request):
    resident_id: str = Field(
        min_length=18, max_length=20, description="GB 11643 resident ID number (of the owner, with uscc)"
    )
    kind: Literal["household", "individual_business"]
    uscc: str | None = Field(
        None,
        min_length=18,
        max_length=18,
        description="an individual business's USCC (prefix 92): the business becomes the subject, handled with "
        "the person rules; kind must be individual_business",
    )


class PersonPublic(Response):
    org_id: str
    code: str = Field(description="the person code: a keyed pseudonym of the ID number, USCC-shaped")
    kind: str
    id_masked: str = Field(description="first 6 and last 4 characters of the ID number")
    created_at: datetime


class PersonCreated(PersonPublic):
    enrolment_code: str = Field(
        description="the one-time code for the person's first credential: deliver it to the person out of band "
        "(in person at the township office, by letter); shown once"
    )


class SeparateGrantIn(Request):
    provide_to_bank: bool = Field(description="separate consent to provide data to this bank (PIPL Art. 23)")
    sensitive_fields: dict[str, list[str]] = Field(
        default_factory=dict, description="dataset id -> sensitive fields granted one by one (PIPL Art. 29)"
    )
    warning_sha256: str | None = Field(
        None, max_length=64, description="SHA-256 of the Art. 14 warning shown (征信业管理条例 Art. 14)"
    )


class PersonConsentGrant(ConsentGrant):
    separate: SeparateGrantIn


class PersonApproval(Request):
    separate: SeparateGrantIn
    signature: SubjectSignatureIn | None = Field(
        None,
        description="required: the person's signature over the request's terms and these separate grants",
    )


class ConsentPreviewOut(Response):
    sensitive_fields: dict[str, list[str]]
    warning: str | None
    warning_sha256: str | None
    impact_assessed: bool


class AssessmentIn(Request):
    purpose: str = Field(max_length=64)
    activity: str = Field(min_length=1, max_length=500)
    lawful_and_necessary: str = Field(min_length=1, max_length=4000)
    impact_and_risks: str = Field(min_length=1, max_length=4000)
    measures: str = Field(min_length=1, max_length=4000)


class AssessmentOut(Response):
    id: str
    purpose: str
    activity: str
    assessment: dict[str, str]
    created_at: datetime
    retain_until: datetime


class NoticeIn(Request):
    resident_id: str | None = Field(None, min_length=18, max_length=20, description="or give code")
    code: str | None = Field(None, min_length=18, max_length=18, description="the person code")
    dataset_id: str = Field(max_length=40)
    text: str = Field(min_length=1, max_length=2000)


class NoticeOut(Response):
    id: str
    provider_org_id: str
    dataset_id: str
    text: str
    created_at: datetime


class PersonReportOut(Response):
    person: PersonPublic
    year: int
    free_reports_left: int
    records: list[dict[str, Any]]
    consents: list[dict[str, Any]]
    history: list[dict[str, Any]]
    notices: list[NoticeOut]
    assessments: list[AssessmentOut]


class PersonOverviewOut(Response):
    person: PersonPublic
    free_reports_left: int
    notices: list[NoticeOut]
    assessments: list[AssessmentOut]
    history: list[dict[str, Any]]


class RatingQueryIn(Request):
    purpose: str = Field(max_length=64)
    subjects: list[str] = Field(min_length=1, max_length=1000, description="person codes")


class RatingAnswerOut(Response):
    subject: str
    grade: str | None = None
    rated_on: str | None = None
    denied: str | None = Field(None, description="why no rating was released for this household")


class ErasureIn(Request):
    confirm: bool = Field(description="true: withdraw every consent and delete my data (PIPL Art. 47)")


class ErasedOut(Response):
    code: str
    consents_ended: int
    datasets: int
    rows_removed: int
    versions_shredded: int
    records_deleted: int
    erased_at: datetime
