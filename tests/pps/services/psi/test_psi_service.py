"""PSI as a service: the server set comes from consent, the answer is a job, revocation in flight stops it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pps.client import PPSClient
from pps.errors import InvalidInput, RoleNotAllowed
from pps.infra.storage.tables import Role
from pps.runtime import Runtime
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
    ds = PPSClient(base_url, provider.token).create_dataset("tax", TAX_SCHEMA)["id"]
    terms = {
        "purpose": "loan_underwriting",
        "scope": [{"dataset_id": ds, "fields": ["tax_paid"]}],
        "operations": ["psi", "score"],
        "valid_until": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
    }
    consents = {}
    for s in subjects[:4]:
        c = PPSClient(base_url, s.token).request(
            "POST", "/v1/consents", json={**terms, "bank_org_id": bank.id}
        )
        consents[s.uscc] = c["id"]
    PPSClient(base_url, subjects[3].token).request(
        "POST", f"/v1/consents/{consents[subjects[3].uscc]}/revoke"
    )
    return {"bank": bank, "other_bank": other_bank, "subjects": subjects, "consents": consents}


def customers(world: dict[str, Any]) -> list[str]:
    subjects: list[OrgHandle] = world["subjects"]
    # three consented, one revoked, one on the platform without consent, two not on the platform
    return [s.uscc for s in subjects if s.uscc] + [uscc_for(900_001), uscc_for(900_002)]


def test_the_bank_learns_exactly_its_consented_customers(world: dict[str, Any], base_url: str) -> None:
    bank = PPSClient(base_url, world["bank"].token)
    result = bank.psi(customers(world), purpose="loan_underwriting")
    consented = {s.uscc for s in world["subjects"][:3]}
    assert result.intersection == consented and result.size == 3
    assert result.server_set_size == 3  # the consented set: the revoked and the unconsented are not in it
    sized = bank.psi(customers(world), purpose="loan_underwriting", reveal_intersection=False)
    assert sized.intersection is None and sized.size == 3
    other = PPSClient(base_url, world["other_bank"].token).psi(customers(world), purpose="loan_underwriting")
    assert other.size == 0 and other.server_set_size == 0


def test_each_consented_subject_sees_the_psi_in_its_history(world: dict[str, Any], base_url: str) -> None:
    PPSClient(base_url, world["bank"].token).psi(customers(world), purpose="loan_underwriting")
    first, unconsented = world["subjects"][0], world["subjects"][4]
    actions = [i["entry"]["action"] for i in PPSClient(base_url, first.token).mine()["items"]]
    assert "policy.release" in actions
    released = [
        i["entry"]
        for i in PPSClient(base_url, first.token).mine()["items"]
        if i["entry"]["action"] == "policy.release"
    ]
    assert released[-1]["released"] == [{"to": world["bank"].id, "what": "psi:intersection"}]
    actions = [i["entry"]["action"] for i in PPSClient(base_url, unconsented.token).mine()["items"]]
    assert "policy.release" not in actions  # not in the server set, not told, not logged against it


def test_a_revocation_while_the_psi_runs_releases_nothing(
    world: dict[str, Any], base_url: str, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim: OrgHandle = world["subjects"][0]
    original = runtime.psi.cache.get_or_prepare

    def prepare_then_revoke(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        PPSClient(base_url, victim.token).request(
            "POST", f"/v1/consents/{world['consents'][victim.uscc]}/revoke"
        )
        return out

    monkeypatch.setattr(runtime.psi.cache, "get_or_prepare", prepare_then_revoke)
    bank = PPSClient(base_url, world["bank"].token)
    with pytest.raises(Exception, match="consent changed"):
        bank.psi(customers(world), purpose="loan_underwriting")
    job = bank.request("GET", "/v1/jobs")["items"][-1]
    assert job["state"] == "failed" and not job["result_available"]
    monkeypatch.undo()
    assert bank.psi(customers(world), purpose="loan_underwriting").size == 2


def test_bad_psi_requests(world: dict[str, Any], base_url: str) -> None:
    bank = PPSClient(base_url, world["bank"].token)
    for body in (
        {"purpose": "loan_underwriting", "reveal": "intersection", "request": "not base64!"},
        {"purpose": "loan_underwriting", "reveal": "intersection", "request": "UFBTSQ=="},
        {"purpose": "marketing", "reveal": "size", "request": "UFBTSQ=="},
    ):
        with pytest.raises(InvalidInput):
            bank.request("POST", "/v1/psi", json=body)
    assert bank.request("GET", "/v1/jobs")["items"] == []
    subject = PPSClient(base_url, world["subjects"][0].token)
    with pytest.raises(RoleNotAllowed):
        subject.request(
            "POST", "/v1/psi", json={"purpose": "loan_underwriting", "reveal": "size", "request": ""}
        )
