"""PSI as a service: the server set comes from consent, the answer is a job, revocation in flight stops it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from pps.infra.storage.tables import Role
from pps.runtime import Runtime
from pps_client import Client, JobFailed
from tests.conftest import OrgFactory, OrgHandle
from tests.helpers import uscc_for
from tests.pps.data.datasets.conftest import TAX_SCHEMA

pytestmark = [pytest.mark.db, pytest.mark.slow]


@pytest.fixture
def world(make_org: OrgFactory, base_url: str) -> dict[str, Any]:
    bank = make_org(Role.bank, "Bank A")
    other_bank = make_org(Role.bank, "Bank B")
    provider = make_org(Role.data_provider)
    subjects = [make_org(Role.subject) for _ in range(5)]
    ds = Client(base_url, provider.token, subject_key=provider.key).datasets.create("tax", TAX_SCHEMA).id
    consents = {}
    for s in subjects[:4]:
        c = Client(base_url, s.token, subject_key=s.key).consents.grant(
            bank.id,
            purpose="loan_underwriting",
            scope={ds: ["tax_paid"]},
            operations=["psi", "score"],
            valid_until=datetime.now(UTC) + timedelta(days=30),
        )
        consents[s.uscc] = c.id
    Client(base_url, subjects[3].token, subject_key=subjects[3].key).consents.revoke(
        consents[subjects[3].uscc]
    )
    return {"bank": bank, "other_bank": other_bank, "subjects": subjects, "consents": consents}


def customers(world: dict[str, Any]) -> list[str]:
    subjects: list[OrgHandle] = world["subjects"]
    # three consented, one revoked, one on the platform without consent, two not on the platform
    return [s.uscc for s in subjects if s.uscc] + [uscc_for(900_001), uscc_for(900_002)]


def test_the_bank_learns_exactly_its_consented_customers(world: dict[str, Any], base_url: str) -> None:
    bank = Client(base_url, world["bank"].token, subject_key=world["bank"].key)
    result = bank.psi.run(customers(world), purpose="loan_underwriting")
    consented = {s.uscc for s in world["subjects"][:3]}
    assert result.intersection == consented and result.size == 3
    assert result.server_set_size == 3  # the consented set: the revoked and the unconsented are not in it
    sized = bank.psi.run(customers(world), purpose="loan_underwriting", reveal_intersection=False)
    assert sized.intersection is None and sized.size == 3
    other = Client(base_url, world["other_bank"].token, subject_key=world["other_bank"].key).psi.run(
        customers(world), purpose="loan_underwriting"
    )
    assert other.size == 0 and other.server_set_size == 0


def test_each_consented_subject_sees_the_psi_in_its_history(world: dict[str, Any], base_url: str) -> None:
    Client(base_url, world["bank"].token, subject_key=world["bank"].key).psi.run(
        customers(world), purpose="loan_underwriting"
    )
    first, unconsented = world["subjects"][0], world["subjects"][4]
    actions = [
        i.entry["action"] for i in Client(base_url, first.token, subject_key=first.key).ledger.mine().items
    ]
    assert "policy.release" in actions
    released = [
        i.entry
        for i in Client(base_url, first.token, subject_key=first.key).ledger.mine().items
        if i.entry["action"] == "policy.release"
    ]
    assert released[-1]["released"] == [{"to": world["bank"].id, "what": "psi:intersection"}]
    actions = [
        i.entry["action"]
        for i in Client(base_url, unconsented.token, subject_key=unconsented.key).ledger.mine().items
    ]
    assert "policy.release" not in actions  # not in the server set, not told, not logged against it


def test_a_revocation_while_the_psi_runs_releases_nothing(
    world: dict[str, Any], base_url: str, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim: OrgHandle = world["subjects"][0]
    original = runtime.psi.cache.get_or_prepare

    def prepare_then_revoke(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        Client(base_url, victim.token, subject_key=victim.key).consents.revoke(world["consents"][victim.uscc])
        return out

    monkeypatch.setattr(runtime.psi.cache, "get_or_prepare", prepare_then_revoke)
    bank = Client(base_url, world["bank"].token, subject_key=world["bank"].key)
    with pytest.raises(JobFailed, match="consent changed"):
        bank.psi.run(customers(world), purpose="loan_underwriting")
    job = bank.jobs.list()[-1]
    assert job.state == "failed" and not job.result_available
    monkeypatch.undo()
    assert bank.psi.run(customers(world), purpose="loan_underwriting").size == 2


def test_bad_psi_requests(world: dict[str, Any], base_url: str, http: Callable[..., httpx.Client]) -> None:
    bank = http(world["bank"].token)
    for body in (
        {"purpose": "loan_underwriting", "reveal": "intersection", "request": "not base64!"},
        {"purpose": "loan_underwriting", "reveal": "intersection", "request": "UFBTSQ=="},
        {"purpose": "marketing", "reveal": "size", "request": "UFBTSQ=="},
    ):
        response = bank.post("/v1/psi", json=body)
        assert response.status_code == 422, response.text
    assert Client(base_url, world["bank"].token, subject_key=world["bank"].key).jobs.list() == []
    response = http(world["subjects"][0].token).post(
        "/v1/psi", json={"purpose": "loan_underwriting", "reveal": "size", "request": ""}
    )
    assert response.status_code == 403 and response.json()["error"]["code"] == "role_not_allowed"
