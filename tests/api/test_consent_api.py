"""Consent over the API: grant, request, approve, deny, revoke, receipts — and who may see which consent."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from pps.infra.storage.tables import Role
from pps_client import Client, Conflict, NotFound, PermissionDenied
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
def c(orgs: dict[str, OrgHandle], base_url: str) -> dict[str, Client]:
    return {k: Client(base_url, o.token, subject_key=o.key) for k, o in orgs.items()}


@pytest.fixture
def ds(c: dict[str, Client]) -> str:
    return c["provider"].datasets.create("tax", TAX_SCHEMA).id


def terms(ds: str, **extra: Any) -> dict[str, Any]:
    return {
        "purpose": "loan_underwriting",
        "scope": {ds: ["tax_paid", "headcount"]},
        "operations": ["score", "psi"],
        "valid_until": datetime.now(UTC) + timedelta(days=30),
        **extra,
    }


def test_grant_list_receipt_and_revoke(
    c: dict[str, Client],
    orgs: dict[str, OrgHandle],
    ds: str,
    tmp_path: Path,
    base_url: str,
) -> None:
    granted = c["s1"].consents.grant(orgs["bank_a"].id, **terms(ds))
    assert granted.state == "active" and granted.has_receipt
    assert [x.id for x in c["s1"].consents.list()] == [granted.id]
    assert [x.id for x in c["bank_a"].consents.list()] == [granted.id]
    assert c["bank_b"].consents.list() == []
    assert c["s2"].consents.list() == []
    receipt = c["bank_a"].consents.receipt(granted.id)
    key = Client(base_url).consents.receipt_key().verifier_key

    from typer.testing import CliRunner

    from pps_client.cli import app

    path = tmp_path / "receipt.note"
    path.write_text(receipt, encoding="utf-8")
    result = CliRunner().invoke(app, ["consent", "verify-receipt", str(path), "--public-key", key])
    assert result.exit_code == 0, result.output
    assert granted.id in result.output and "Bank A" in result.output
    path.write_text(receipt.replace("loan_underwriting", "loan_underwritinG"), encoding="utf-8")
    result = CliRunner().invoke(app, ["consent", "verify-receipt", str(path), "--public-key", key])
    assert result.exit_code == 3 and "DOES NOT VERIFY" in result.output

    revoked = c["s1"].consents.revoke(granted.id)
    assert revoked.state == "revoked" and revoked.revoked_at
    with pytest.raises(Conflict):
        c["s1"].consents.revoke(granted.id)
    history = [i.entry["action"] for i in c["s1"].ledger.mine().items]
    assert [a for a in history if not a.startswith("read.")][-2:] == ["consent.grant", "consent.revoke"]
    assert "read.consent_receipt" in history  # fetching the receipt is on the subject's record too


def test_bank_request_then_subject_decides(c: dict[str, Client], orgs: dict[str, OrgHandle], ds: str) -> None:
    asked = c["bank_a"].consents.request(orgs["s1"].uscc or "", **terms(ds, max_uses=3))
    assert asked.state == "requested" and asked.requested_by == "bank"
    pending = c["s1"].consents.list(state="requested")
    assert [p.id for p in pending] == [asked.id]
    with pytest.raises(NotFound):
        c["s2"].consents.approve(asked.id)  # a subject acting for another
    with pytest.raises(PermissionDenied) as refused:
        c["bank_a"].consents.approve(asked.id, key=orgs["s1"].key)  # a bank approving its own request
    assert refused.value.code == "role_not_allowed"
    approved = c["s1"].consents.approve(asked.id)
    assert approved.state == "active" and approved.max_uses == 3
    other = c["bank_a"].consents.request(orgs["s1"].uscc or "", **terms(ds))
    denied = c["s1"].consents.deny(other.id, "we do not bank with you")
    assert denied.state == "denied" and denied.decision_note == "we do not bank with you"
    with pytest.raises(NotFound):
        c["bank_a"].consents.receipt(other.id)


def test_policy_check_for_a_bank(c: dict[str, Client], orgs: dict[str, OrgHandle], ds: str) -> None:
    c["s1"].consents.grant(orgs["bank_a"].id, **terms(ds))
    subjects = [orgs["s1"].uscc or "", orgs["s2"].uscc or ""]
    check = {"fields": {ds: ["tax_paid"]}, "operation": "score", "purpose": "loan_underwriting"}
    result = c["bank_a"].consents.check(subjects, **check)  # type: ignore[arg-type]
    assert result.allowed == 1 and result.denied == {"no_grant": 1}
    assert [d.allowed for d in result.decisions] == [True, False]
    other = c["bank_b"].consents.check(subjects, **check)  # type: ignore[arg-type]
    assert other.allowed == 0
    c3 = c["bank_a"].consents.check(subjects, **{**check, "fields": {ds: ["note"]}})  # type: ignore[arg-type]
    assert c3.denied == {"class_c3": 2}


@pytest.mark.parametrize(
    "change",
    [
        {"scope": [{"dataset_id": "__ds__", "fields": ["no_such_field"]}]},
        {"valid_from": "2030-01-02T00:00:00Z", "valid_until": "2030-01-01T00:00:00Z"},
        {"bank_org_id": "__self__"},  # a subject naming a non-bank as grantee
        {"purpose": "selling data"},
        {"unknown": 1},
    ],
)
def test_bad_consents_are_refused(
    c: dict[str, Client],
    orgs: dict[str, OrgHandle],
    ds: str,
    change: dict[str, Any],
    http: Callable[..., httpx.Client],
) -> None:
    body: dict[str, Any] = {
        "purpose": "loan_underwriting",
        "scope": [{"dataset_id": ds, "fields": ["tax_paid", "headcount"]}],
        "operations": ["score", "psi"],
        "valid_until": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        "bank_org_id": orgs["bank_a"].id,
        **change,
    }
    body = {k: (orgs["s1"].id if v == "__self__" else v) for k, v in body.items()}
    if "scope" in change:
        body["scope"] = [{"dataset_id": ds, "fields": change["scope"][0]["fields"]}]
    response = http(orgs["s1"].token).post(
        "/v1/consents", json=body
    )  # as sent, not as the SDK would check it
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] in ("invalid_input", "invalid_request")
    assert c["s1"].consents.list() == []


def test_a_bank_cannot_grant_consent_and_cannot_see_anothers(
    c: dict[str, Client], orgs: dict[str, OrgHandle], ds: str
) -> None:
    with pytest.raises(PermissionDenied) as refused:
        c["bank_a"].consents.grant(orgs["bank_a"].id, **terms(ds), key=orgs["s1"].key)
    assert refused.value.code == "role_not_allowed"
    granted = c["s1"].consents.grant(orgs["bank_a"].id, **terms(ds))
    for who in ("bank_b", "s2"):
        with pytest.raises(NotFound):
            c[who].consents.get(granted.id)
        with pytest.raises(NotFound):
            c[who].consents.receipt(granted.id)
    with pytest.raises(NotFound):
        c["s2"].consents.revoke(granted.id)
    with pytest.raises(NotFound):
        c["s2"].consents.approve(granted.id)
    assert c["auditor"].consents.get(granted.id).id == granted.id


def test_offboarding_closes_the_organisations_consents(
    c: dict[str, Client], orgs: dict[str, OrgHandle], ds: str, make_org: OrgFactory, base_url: str
) -> None:
    granted = c["s1"].consents.grant(orgs["bank_a"].id, **terms(ds))
    asked = c["bank_a"].consents.request(orgs["s2"].uscc or "", **terms(ds))
    admin = Client(base_url, make_org(Role.platform_admin).token)
    admin.orgs.disable(orgs["bank_a"].id, "licence withdrawn")
    assert c["auditor"].consents.get(granted.id).state == "revoked"
    assert c["auditor"].consents.get(asked.id).state == "denied"


def test_a_request_does_not_tell_whether_an_enterprise_is_on_the_platform(
    c: dict[str, Client],
    orgs: dict[str, OrgHandle],
    ds: str,
    make_org: OrgFactory,
    base_url: str,
    http: Callable[..., httpx.Client],
) -> None:
    from tests.helpers import uscc_for

    newcomer = uscc_for(4242)
    on = c["bank_a"].consents.request(orgs["s1"].uscc or "", **terms(ds))
    off = c["bank_a"].consents.request(newcomer, **terms(ds))
    assert on.state == off.state == "requested"
    raw_on, raw_off = (http(orgs["bank_a"].token).get(f"/v1/consents/{x.id}").json() for x in (on, off))
    assert set(raw_on) == set(raw_off)
    newly = make_org(Role.subject, uscc=newcomer)  # the enterprise joins later
    joined = Client(base_url, newly.token, subject_key=newly.key)
    pending = joined.consents.list(state="requested")
    assert [p.id for p in pending] == [off.id]
    assert joined.consents.approve(off.id).state == "active"
