"""The person rules in the policy engine, the product data contracts, field grades and upload pseudonyms."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from models.households import Households, generate_households
from pps.data.datasets.ingest import UploadFormat
from pps.data.datasets.schema import ColumnSpec, DatasetSchema
from pps.errors import InvalidInput, SeparateConsentRequired, UploadRejected
from pps.governance.consent import Terms
from pps.governance.persons import SeparateGrant
from pps.governance.policy import DenyReason, Request
from pps.identity.persons import PersonKind, is_person_code
from pps.infra.storage.tables import Organization, Person, Role
from pps.ledger.entry import OPERATOR
from pps.runtime import Runtime
from tests.conftest import OrgFactory
from tests.helpers import signed_grant
from tests.pps.services.scoring.conftest import upload_tables

PURPOSE = "farm_herding_loan"


@pytest.fixture
def households() -> Households:
    return generate_households(60, 5, months=6)


@pytest.fixture
def uploaded(
    runtime: Runtime, make_org: OrgFactory, households: Households, tmp_path: Path
) -> dict[str, str]:
    return upload_tables(runtime, make_org, households.provider_tables(), tmp_path)


def _onboard(rt: Runtime, resident_id: str) -> tuple[Organization, Person]:
    with rt.db.transaction() as s:
        done = rt.persons.onboard(s, resident_id=resident_id, kind=PersonKind.household, actor=OPERATOR)
        return done.org, done.person


def _assess(rt: Runtime, purpose: str = PURPOSE) -> None:
    with rt.db.transaction() as s:
        rt.person_rules.record_assessment(
            s,
            purpose=purpose,
            activity="rating queries",
            assessment={"lawful_and_necessary": "x", "impact_and_risks": "y", "measures": "z"},
            actor=OPERATOR,
        )


def _terms(ds: str, fields: list[str], purpose: str = PURPOSE) -> Terms:
    return Terms(
        purpose, [{"dataset_id": ds, "fields": fields}], ["score"], datetime.now(UTC) + timedelta(days=9)
    )


def test_uploads_store_person_codes_never_numbers(
    runtime: Runtime, households: Households, uploaded: dict[str, str]
) -> None:
    ids = households.ratings.columns["resident_id"].tolist()
    with runtime.db.transaction(write=False) as s:
        from pps.infra.storage.tables import Dataset

        ds = s.get(Dataset, uploaded["household_ratings"])
        assert ds is not None
        version = runtime.datasets.current(s, ds)
        assert version is not None
        keys = runtime.datasets.read_columns(s, version, ["resident_id"])["resident_id"].values.tolist()
    assert all(is_person_code(k) for k in keys)
    assert keys == [runtime.persons.code_for(i) for i in ids]


def test_an_upload_with_a_bad_id_is_refused_by_row_without_the_number(
    runtime: Runtime, make_org: OrgFactory, households: Households, tmp_path: Path
) -> None:
    provider = make_org(Role.data_provider)
    with runtime.db.transaction() as s:
        ds = runtime.datasets.create(
            s,
            provider_org_id=provider.id,
            name="household_ratings",
            description="",
            schema=DatasetSchema.model_validate(households.ratings.schema),
            actor=OPERATOR,
        )
        ds_id = ds.id
    households.ratings.write_csv(tmp_path)
    lines = (tmp_path / "household_ratings.csv").read_text().splitlines()
    good = lines[1].split(",")[0]
    bad = good[:17] + ("0" if good[17] != "0" else "1")
    lines[1] = lines[1].replace(good, bad, 1)
    with pytest.raises(UploadRejected) as info, runtime.db.transaction() as s:
        runtime.datasets.upload(
            s,
            runtime.datasets.get(s, ds_id),
            stream=io.BytesIO("\n".join(lines).encode()),
            fmt=UploadFormat.csv,
            actor=OPERATOR,
        )
    assert "check character" in str(info.value.details) and bad not in str(info.value.details)
    with runtime.db.transaction(write=False) as s:
        assert runtime.datasets.get(s, ds_id).current_version is None


def test_the_policy_engine_denies_a_person_consent_without_its_separate_record(
    runtime: Runtime, make_org: OrgFactory, households: Households, uploaded: dict[str, str]
) -> None:
    bank = make_org(Role.bank)
    org, person = _onboard(runtime, str(households.ratings.columns["resident_id"][0]))
    _assess(runtime)
    ds = uploaded["household_ratings"]
    # the generic path refuses a person's consent outright
    with runtime.db.transaction() as s, pytest.raises(SeparateConsentRequired):
        runtime.consents.grant(
            s, subject=org, bank_org_id=bank.id, terms=_terms(ds, ["grade"]), signed=None, actor=OPERATOR
        )
    with runtime.db.transaction() as s:  # a consent that skipped PersonRules (as a bug or an old row would)
        terms = _terms(ds, ["grade"])
        runtime.consents.grant(
            s,
            subject=org,
            bank_org_id=bank.id,
            terms=terms,
            signed=signed_grant(runtime, s, person.code, bank.id, terms),  # signed, but no separate record
            actor=OPERATOR,
            separate_grant=True,
        )
    req = Request(bank.id, (person.code,), {ds: ("grade",)}, "score", PURPOSE)
    with runtime.db.transaction(write=False) as s:
        [d] = runtime.policy.decide(s, req)
    assert not d.allowed and d.reason is DenyReason.person_rule and "separate consent" in d.detail


def test_separate_grants_per_field_and_the_warning_are_enforced_at_decision(
    runtime: Runtime, make_org: OrgFactory, households: Households, uploaded: dict[str, str]
) -> None:
    bank = make_org(Role.bank)
    org, person = _onboard(runtime, str(households.ratings.columns["resident_id"][1]))
    ds = uploaded["household_ratings"]
    with runtime.db.transaction() as s, pytest.raises(InvalidInput, match="impact assessment"):
        runtime.person_rules.grant(
            s,
            subject=org,
            person=person,
            bank_org_id=bank.id,
            terms=_terms(ds, ["grade"]),
            separate=SeparateGrant(True, {ds: ["grade"]}),
            signed=None,
            actor=OPERATOR,
        )
    _assess(runtime)
    with runtime.db.transaction() as s:
        sensitive, text, digest, assessed = runtime.person_rules.preview(
            s,
            bank_org_id=bank.id,
            purpose=PURPOSE,
            scope=[{"dataset_id": ds, "fields": ["grade", "land_mu"]}],
        )
        assert sensitive == {ds: ["grade", "land_mu"]} and assessed and text and "land_mu" in text
        terms = _terms(ds, ["grade", "land_mu"])
        separate = SeparateGrant(True, {ds: ["grade", "land_mu"]}, digest)
        runtime.person_rules.grant(
            s,
            subject=org,
            person=person,
            bank_org_id=bank.id,
            terms=terms,
            separate=separate,
            signed=signed_grant(runtime, s, person.code, bank.id, terms, separate),
            actor=OPERATOR,
        )
    with runtime.db.transaction(write=False) as s:
        ok = runtime.policy.decide(
            s, Request(bank.id, (person.code,), {ds: ("grade", "land_mu")}, "score", PURPOSE)
        )
        # a product reading outside its data contract is denied whatever the consent says
        outside = runtime.policy.decide(
            s, Request(bank.id, (person.code,), {ds: ("county",)}, "score", "tax_loan")
        )
    assert ok[0].allowed
    assert outside[0].reason is DenyReason.outside_contract and "税易贷" in outside[0].detail


def test_notices_and_assessments_are_shown_to_the_person(
    runtime: Runtime, make_org: OrgFactory, households: Households, uploaded: dict[str, str]
) -> None:
    _org, person = _onboard(runtime, str(households.ratings.columns["resident_id"][2]))
    provider = make_org(Role.data_provider)
    with runtime.db.transaction() as s:
        with pytest.raises(InvalidInput, match="not one of"):
            runtime.person_rules.notify_negative(
                s,
                provider=s.get(Organization, provider.id),
                code=person.code,
                dataset_id=uploaded["household_ratings"],
                text="overdue loan",
                actor=OPERATOR,
            )
        owner_id = runtime.datasets.get(s, uploaded["household_ratings"]).provider_org_id
        runtime.person_rules.notify_negative(
            s,
            provider=s.get(Organization, owner_id),
            code=person.code,
            dataset_id=uploaded["household_ratings"],
            text="an overdue 农牧贷 instalment will be reported on 2027-01-10",
            actor=OPERATOR,
        )
        with pytest.raises(InvalidInput, match=r"Art\. 56"):
            runtime.person_rules.record_assessment(
                s, purpose=PURPOSE, activity="x", assessment={"measures": "m"}, actor=OPERATOR
            )
    with runtime.db.transaction(write=False) as s:
        notices = runtime.person_rules.notices(s, person)
        assert [n.text[:12] for n in notices] == ["an overdue 农"]
        assert runtime.person_rules.assessments(s) == []
        persons = s.execute(select(Person)).scalars().all()
        assert [p.code for p in persons] == [person.code]


def test_level_five_and_important_fields_are_never_released() -> None:
    base = {"name": "x", "type": "float", "sensitivity": "C2"}
    assert ColumnSpec.model_validate(base).grade == 3
    assert ColumnSpec.model_validate(base | {"level": 5}).never_released
    assert ColumnSpec.model_validate(base | {"important": True}).never_released
    assert not ColumnSpec.model_validate(base | {"level": 4}).never_released
    with pytest.raises(ValueError, match="less than or equal to 5"):
        ColumnSpec.model_validate(base | {"level": 6})


def test_negative_information_about_a_person_needs_a_notice_first(
    runtime: Runtime, make_org: OrgFactory, households: Households, tmp_path: Path
) -> None:
    """征信业管理条例 Art. 15: an upload of a dataset marked ``negative`` is refused, with nothing stored, for
    every person its provider has not told first; once told, it is accepted."""
    provider = make_org(Role.data_provider, "Haixi rural credit cooperative")
    ids = households.ratings.columns["resident_id"].tolist()[:5]
    schema = {
        "dataset": "overdue_loans",
        "subject_key": "resident_id",
        "record_key": "loan_id",
        "negative": True,
        "columns": [
            {"name": "resident_id", "type": "resident_id", "sensitivity": "C2", "description": "borrower"},
            {"name": "loan_id", "type": "string", "sensitivity": "C1", "description": "loan"},
            {"name": "days_overdue", "type": "int", "sensitivity": "C2", "description": "days overdue"},
        ],
    }
    body = (
        "resident_id,loan_id,days_overdue\n" + "".join(f"{i},L{n},95\n" for n, i in enumerate(ids))
    ).encode()
    with runtime.db.transaction() as s:
        ds_id = runtime.datasets.create(
            s,
            provider_org_id=provider.id,
            name="overdue_loans",
            description="",
            schema=DatasetSchema.model_validate(schema),
            actor=OPERATOR,
        ).id

    def upload() -> None:
        with runtime.db.transaction() as s:
            runtime.datasets.upload(
                s,
                runtime.datasets.get(s, ds_id),
                stream=io.BytesIO(body),
                fmt=UploadFormat.csv,
                actor=OPERATOR,
            )

    with runtime.db.transaction() as s:  # notice to four of the five
        owner = s.get(Organization, provider.id)
        assert owner is not None
        for number in ids[:4]:
            runtime.person_rules.notify_negative(
                s,
                provider=owner,
                code=runtime.persons.code_for(number),
                dataset_id=ds_id,
                text="your overdue loan will be reported",
                actor=OPERATOR,
            )
    with pytest.raises(UploadRejected, match=r"Art\. 15") as info:
        upload()
    assert info.value.details["persons_without_notice"] == [runtime.persons.code_for(ids[4])]
    with runtime.db.transaction(write=False) as s:
        assert runtime.datasets.get(s, ds_id).current_version is None
    with runtime.db.transaction() as s:
        owner = s.get(Organization, provider.id)
        assert owner is not None
        runtime.person_rules.notify_negative(
            s,
            provider=owner,
            code=runtime.persons.code_for(ids[4]),
            dataset_id=ds_id,
            text="your overdue loan will be reported",
            actor=OPERATOR,
        )
    upload()
    with runtime.db.transaction(write=False) as s:
        assert runtime.datasets.get(s, ds_id).current_version == 1
