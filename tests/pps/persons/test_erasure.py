"""PIPL Art. 47: a person withdraws and has its data deleted — its rows leave every dataset (the versions that
held them are crypto-shredded), its consents end, what the platform kept about it goes, its account closes;
other persons' data is untouched; the ledger keeps the pseudonymous fact and still verifies; a later upload
naming it is refused and stores nothing."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from models.households import generate_households
from pps.data.datasets.ingest import UploadFormat
from pps.errors import UploadRejected
from pps.governance.persons import SeparateGrant
from pps.identity.persons import PersonKind
from pps.infra.storage.tables import (
    Consent,
    ConsentState,
    DatasetChunk,
    DatasetVersion,
    FreeReport,
    LedgerEntry,
    Person,
    PersonConsentTerms,
    Role,
)
from pps.ledger.entry import OPERATOR
from pps.ledger.verify import verify_ledger
from pps.runtime import Runtime
from pps_client import APIError, Client
from tests.api.web.conftest import csrf_of, log_in
from tests.conftest import OrgFactory
from tests.helpers import first_token, signed_grant
from tests.pps.persons.test_person_rules import _assess, _terms
from tests.pps.services.scoring.conftest import upload_tables

pytestmark = [pytest.mark.db]


def _keys(rt: Runtime) -> dict[tuple[str, int], list[str]]:
    """Every readable version's subject keys."""
    out = {}
    with rt.db.transaction(write=False) as s:
        for v in s.scalars(select(DatasetVersion)).all():
            if v.wrapped_dek is None:
                continue
            ds = rt.datasets.get(s, v.dataset_id, include_deleted=True)
            key = rt.datasets.schema_of_dataset(ds).subject_key
            out[(v.dataset_id, v.version)] = [
                str(k) for k in rt.datasets.read_columns(s, v, [key])[key].values.tolist()
            ]
    return out


def test_a_person_erases_its_data_and_the_ledger_keeps_the_fact(
    runtime: Runtime,
    make_org: OrgFactory,
    base_url: str,
    app: FastAPI,
    http: Callable[..., httpx.Client],
    tmp_path: Path,
) -> None:
    data = generate_households(30, 8, months=4)
    ids = upload_tables(runtime, make_org, data.provider_tables(), tmp_path)
    ratings_ds = ids["household_ratings"]
    bank = make_org(Role.bank, "Qinghai Rural Commercial Bank")
    numbers = [str(x) for x in data.ratings.columns["resident_id"][:2]]
    with runtime.db.transaction() as s:
        a = runtime.persons.onboard(s, resident_id=numbers[0], kind=PersonKind.household, actor=OPERATOR)
        b = runtime.persons.onboard(s, resident_id=numbers[1], kind=PersonKind.household, actor=OPERATOR)
        token, token_b = (first_token(runtime, s, o).secret for o in (a.org, b.org))
    _assess(runtime)
    with runtime.db.transaction() as s:
        for who in (a, b):
            terms, separate = (
                _terms(ratings_ds, ["grade", "rated_on"]),
                SeparateGrant(True, {ratings_ds: ["grade"]}),
            )
            runtime.person_rules.grant(
                s,
                subject=who.org,
                person=who.person,
                bank_org_id=bank.id,
                terms=terms,
                separate=separate,
                signed=signed_grant(runtime, s, who.person.code, bank.id, terms, separate),
                actor=OPERATOR,
            )
        runtime.person_rules.take_free_report(s, person=a.person, actor=OPERATOR)
    code, other = a.person.code, b.person.code
    before = _keys(runtime)
    assert all(code in keys for keys in before.values()) and len(before) == 2
    rows_of_a = sum(keys.count(code) for keys in before.values())
    assert rows_of_a == 1 + 4  # one rating, four survey months
    banker = Client(base_url, bank.token)
    assert banker.persons.ratings([code], purpose="farm_herding_loan")[0].grade is not None

    # without the confirmation nothing changes
    herder = http(token)
    r = herder.post("/v1/persons/me/erase", json={"confirm": False})
    assert r.status_code == 422 and _keys(runtime) == before

    erased = Client(base_url, token).persons.erase()
    assert (erased.code, erased.consents_ended, erased.datasets) == (code, 1, 2)
    assert erased.rows_removed == rows_of_a and erased.versions_shredded == 2 and erased.records_deleted >= 2

    # the rows are gone from every readable version; the other household's are all there
    after = _keys(runtime)
    assert all(code not in keys for keys in after.values())
    for (ds, _v), keys in before.items():
        now = next(k for (d, _w), k in after.items() if d == ds)
        assert sorted(now) == sorted(k for k in keys if k != code) and other in now
    with runtime.db.transaction(write=False) as s:
        shredded = s.scalars(select(DatasetVersion).where(DatasetVersion.shredded_at.is_not(None))).all()
        assert {(v.dataset_id, v.version) for v in shredded} == set(before)
        assert all(v.wrapped_dek is None for v in shredded)
        for v in shredded:
            assert not s.scalar(
                select(func.count())
                .select_from(DatasetChunk)
                .where(DatasetChunk.dataset_id == v.dataset_id, DatasetChunk.version == v.version)
            )
        assert runtime.datasets.records_of(s, code) == []
        assert runtime.datasets.records_of(s, other)
        consents = s.scalars(select(Consent).where(Consent.subject_uscc == code)).all()
        assert [c.state for c in consents] == [ConsentState.revoked]
        assert not s.scalars(select(FreeReport).where(FreeReport.subject_code == code)).all()
        assert not s.scalars(select(PersonConsentTerms).where(PersonConsentTerms.subject_code == code)).all()
        assert s.scalars(select(PersonConsentTerms).where(PersonConsentTerms.subject_code == other)).all()
        person = s.get(Person, code)
        assert person is not None and person.erased_at is not None and person.id_masked == ""
        # the ledger keeps the pseudonymous fact and verifies
        entry = s.scalars(select(LedgerEntry).where(LedgerEntry.action == "person.erase")).one()
        text = bytes(entry.entry).decode()
        assert code in text and numbers[0] not in text
        verify_ledger(s, runtime.ledger)
        table = runtime.features.table(s)
        assert code not in table.position and other in table.position
    # the bank gets nothing more; the person's token is closed
    answer = banker.persons.ratings([code, other], purpose="farm_herding_loan")
    assert answer[0].grade is None and answer[1].grade is not None
    assert herder.get("/v1/persons/me").status_code == 401

    # a provider uploading the person again is refused, nothing stored
    data.ratings.write_csv(tmp_path)
    with runtime.db.transaction(write=False) as s:
        versions = s.scalar(select(func.count()).select_from(DatasetVersion))
    with pytest.raises(UploadRejected, match=r"Art\. 47") as refused, runtime.db.transaction() as s:
        runtime.datasets.upload(
            s,
            runtime.datasets.get(s, ratings_ds),
            stream=io.BytesIO((tmp_path / "household_ratings.csv").read_bytes()),
            fmt=UploadFormat.csv,
            actor=OPERATOR,
        )
    assert refused.value.details["erased_persons"] == [code]
    with runtime.db.transaction(write=False) as s:
        assert s.scalar(select(func.count()).select_from(DatasetVersion)) == versions
    # erasing twice: the account is closed, so the person cannot even ask
    with pytest.raises(APIError):
        Client(base_url, token).persons.erase()
    assert np.all([code not in k for k in _keys(runtime).values()])

    # the other household does it on its phone: one confirmed tap
    portal = TestClient(app)
    try:
        assert log_in(portal, token_b).status_code == 303
        home = portal.get("/ui/person")
        assert "删除我的数据并退出" in home.text
        r = portal.post("/ui/person/erase", data={"csrf": csrf_of(home.text)})
        assert r.status_code in (400, 422) and all(other in k for k in _keys(runtime).values())
        r = portal.post("/ui/person/erase", data={"csrf": csrf_of(home.text), "confirm": "yes"})
        assert r.status_code == 200 and "您的数据已删除" in r.text, r.text
    finally:
        portal.close()
    assert all(other not in k for k in _keys(runtime).values())
