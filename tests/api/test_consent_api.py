"""Consent over the API: grant, request, approve, deny, revoke, receipts — and who may see which consent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pps.client import PPSClient
from pps.errors import Conflict, InvalidInput, NotFound, RoleNotAllowed
from pps.infra.storage.tables import Role
from tests.conftest import OrgFactory, OrgHandle
from tests.pps.data.datasets.conftest import TAX_SCHEMA


@pytest.fixture
def orgs(make_org: OrgFactory) -> dict[str, OrgHandle]:
    return {
        "bank_a": make_org(Role.bank, "Bank A"),
        "bank_b": make_org(Role.bank, "Bank B"),
        "s1": make_org(Role.subject),
        "s2": make_org(Role.subject),
        "provider": make_org(Role.data_provider),
        "auditor": make_org(Role.auditor),
    }


@pytest.fixture
def c(orgs: dict[str, OrgHandle], base_url: str) -> dict[str, PPSClient]:
    return {k: PPSClient(base_url, o.token) for k, o in orgs.items()}


@pytest.fixture
def ds(c: dict[str, PPSClient]) -> str:
    return str(c["provider"].create_dataset("tax", TAX_SCHEMA)["id"])


def terms(ds: str, **extra: Any) -> dict[str, Any]:
    return {
        "purpose": "loan_underwriting",
        "scope": [{"dataset_id": ds, "fields": ["tax_paid", "headcount"]}],
        "operations": ["score", "psi"],
        "valid_until": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        **extra,
    }


def test_grant_list_receipt_and_revoke(
    c: dict[str, PPSClient],
    orgs: dict[str, OrgHandle],
    ds: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    granted = c["s1"].request("POST", "/v1/consents", json={**terms(ds), "bank_org_id": orgs["bank_a"].id})
    assert granted["state"] == "active" and granted["has_receipt"]
    assert [x["id"] for x in c["s1"].request("GET", "/v1/consents")["items"]] == [granted["id"]]
    assert [x["id"] for x in c["bank_a"].request("GET", "/v1/consents")["items"]] == [granted["id"]]
    assert c["bank_b"].request("GET", "/v1/consents")["items"] == []
    assert c["s2"].request("GET", "/v1/consents")["items"] == []
    receipt = c["bank_a"].request("GET", f"/v1/consents/{granted['id']}/receipt")
    key = PPSClient(c["s1"]._http.base_url.__str__()).request("GET", "/v1/consent/public-key")["verifier_key"]

    from typer.testing import CliRunner

    from pps.cli import app

    path = tmp_path / "receipt.note"
    path.write_text(receipt, encoding="utf-8")
    result = CliRunner().invoke(app, ["consent", "verify-receipt", str(path), "--public-key", key])
    assert result.exit_code == 0, result.output
    assert granted["id"] in result.output and "Bank A" in result.output
    path.write_text(receipt.replace("loan_underwriting", "loan_underwritinG"), encoding="utf-8")
    result = CliRunner().invoke(app, ["consent", "verify-receipt", str(path), "--public-key", key])
    assert result.exit_code == 3 and "DOES NOT VERIFY" in result.output

    revoked = c["s1"].request("POST", f"/v1/consents/{granted['id']}/revoke")
    assert revoked["state"] == "revoked" and revoked["revoked_at"]
    with pytest.raises(Conflict):
        c["s1"].request("POST", f"/v1/consents/{granted['id']}/revoke")
    history = [i["entry"]["action"] for i in c["s1"].mine()["items"]]
    assert history[-2:] == ["consent.grant", "consent.revoke"]


def test_bank_request_then_subject_decides(
    c: dict[str, PPSClient], orgs: dict[str, OrgHandle], ds: str
) -> None:
    asked = c["bank_a"].request(
        "POST", "/v1/consent-requests", json={**terms(ds), "subject_uscc": orgs["s1"].uscc, "max_uses": 3}
    )
    assert asked["state"] == "requested" and asked["requested_by"] == "bank"
    pending = c["s1"].request("GET", "/v1/consents", params={"state": "requested"})["items"]
    assert [p["id"] for p in pending] == [asked["id"]]
    with pytest.raises(NotFound):
        c["s2"].request("POST", f"/v1/consents/{asked['id']}/approve")  # a subject acting for another
    with pytest.raises(RoleNotAllowed):
        c["bank_a"].request("POST", f"/v1/consents/{asked['id']}/approve")  # a bank approving its own request
    approved = c["s1"].request("POST", f"/v1/consents/{asked['id']}/approve")
    assert approved["state"] == "active" and approved["max_uses"] == 3
    other = c["bank_a"].request(
        "POST", "/v1/consent-requests", json={**terms(ds), "subject_uscc": orgs["s1"].uscc}
    )
    denied = c["s1"].request(
        "POST", f"/v1/consents/{other['id']}/deny", json={"reason": "we do not bank with you"}
    )
    assert denied["state"] == "denied" and denied["decision_note"] == "we do not bank with you"
    with pytest.raises(NotFound):
        c["bank_a"].request("GET", f"/v1/consents/{other['id']}/receipt")


def test_policy_check_for_a_bank(c: dict[str, PPSClient], orgs: dict[str, OrgHandle], ds: str) -> None:
    c["s1"].request("POST", "/v1/consents", json={**terms(ds), "bank_org_id": orgs["bank_a"].id})
    body = {
        "subjects": [orgs["s1"].uscc, orgs["s2"].uscc],
        "fields": {ds: ["tax_paid"]},
        "operation": "score",
        "purpose": "loan_underwriting",
    }
    result = c["bank_a"].request("POST", "/v1/policy/check", json=body)
    assert result["allowed"] == 1 and result["denied"] == {"no_grant": 1}
    assert [d["allowed"] for d in result["decisions"]] == [True, False]
    other = c["bank_b"].request("POST", "/v1/policy/check", json=body)
    assert other["allowed"] == 0
    c3 = c["bank_a"].request("POST", "/v1/policy/check", json={**body, "fields": {ds: ["note"]}})
    assert c3["denied"] == {"class_c3": 2}


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"scope": [{"dataset_id": "__ds__", "fields": ["no_such_field"]}]}, InvalidInput),
        ({"valid_from": "2030-01-02T00:00:00Z", "valid_until": "2030-01-01T00:00:00Z"}, InvalidInput),
        ({"bank_org_id": "__self__"}, InvalidInput),  # a subject naming a non-bank as grantee
        ({"purpose": "selling data"}, InvalidInput),
        ({"unknown": 1}, InvalidInput),
    ],
)
def test_bad_consents_are_refused(
    c: dict[str, PPSClient],
    orgs: dict[str, OrgHandle],
    ds: str,
    change: dict[str, Any],
    error: type[Exception],
) -> None:
    body: dict[str, Any] = {**terms(ds), "bank_org_id": orgs["bank_a"].id, **change}
    body = {k: (orgs["s1"].id if v == "__self__" else v) for k, v in body.items()}
    if "scope" in change:
        body["scope"] = [{"dataset_id": ds, "fields": change["scope"][0]["fields"]}]
    with pytest.raises(error):
        c["s1"].request("POST", "/v1/consents", json=body)
    assert c["s1"].request("GET", "/v1/consents")["items"] == []


def test_a_bank_cannot_grant_consent_and_cannot_see_anothers(
    c: dict[str, PPSClient], orgs: dict[str, OrgHandle], ds: str
) -> None:
    with pytest.raises(RoleNotAllowed):
        c["bank_a"].request("POST", "/v1/consents", json={**terms(ds), "bank_org_id": orgs["bank_a"].id})
    granted = c["s1"].request("POST", "/v1/consents", json={**terms(ds), "bank_org_id": orgs["bank_a"].id})
    for who in ("bank_b", "s2"):
        with pytest.raises(NotFound):
            c[who].request("GET", f"/v1/consents/{granted['id']}")
        with pytest.raises(NotFound):
            c[who].request("GET", f"/v1/consents/{granted['id']}/receipt")
    for action in ("revoke", "approve"):
        with pytest.raises(NotFound):
            c["s2"].request("POST", f"/v1/consents/{granted['id']}/{action}")
    assert c["auditor"].request("GET", f"/v1/consents/{granted['id']}")["id"] == granted["id"]


def test_offboarding_closes_the_organisations_consents(
    c: dict[str, PPSClient], orgs: dict[str, OrgHandle], ds: str, make_org: OrgFactory, base_url: str
) -> None:
    granted = c["s1"].request("POST", "/v1/consents", json={**terms(ds), "bank_org_id": orgs["bank_a"].id})
    asked = c["bank_a"].request(
        "POST", "/v1/consent-requests", json={**terms(ds), "subject_uscc": orgs["s2"].uscc}
    )
    admin = PPSClient(base_url, make_org(Role.platform_admin).token)
    admin.disable_org(orgs["bank_a"].id, "licence withdrawn")
    assert c["auditor"].request("GET", f"/v1/consents/{granted['id']}")["state"] == "revoked"
    assert c["auditor"].request("GET", f"/v1/consents/{asked['id']}")["state"] == "denied"


def test_a_request_does_not_tell_whether_an_enterprise_is_on_the_platform(
    c: dict[str, PPSClient], orgs: dict[str, OrgHandle], ds: str, make_org: OrgFactory, base_url: str
) -> None:
    from tests.helpers import uscc_for

    newcomer = uscc_for(4242)
    on = c["bank_a"].request(
        "POST", "/v1/consent-requests", json={**terms(ds), "subject_uscc": orgs["s1"].uscc}
    )
    off = c["bank_a"].request("POST", "/v1/consent-requests", json={**terms(ds), "subject_uscc": newcomer})
    assert on["state"] == off["state"] == "requested" and set(on) == set(off)
    joined = PPSClient(base_url, make_org(Role.subject, uscc=newcomer).token)  # the enterprise joins later
    pending = joined.request("GET", "/v1/consents", params={"state": "requested"})["items"]
    assert [p["id"] for p in pending] == [off["id"]]
    assert joined.request("POST", f"/v1/consents/{off['id']}/approve")["state"] == "active"
