"""Organisations and tokens over the API: the paths a platform operator and its members walk."""

from __future__ import annotations

import pytest

from pps.client import PPSClient
from pps.errors import Conflict, InvalidInput, InvalidToken, NotFound
from pps.infra.storage.tables import Role
from pps.ledger.store import EntryFilter
from pps.runtime import Runtime
from tests.conftest import OrgFactory
from tests.helpers import uscc_for


@pytest.fixture
def admin(make_org: OrgFactory, base_url: str) -> PPSClient:
    return PPSClient(base_url, make_org(Role.platform_admin).token)


def test_onboarding_and_listing(admin: PPSClient, runtime: Runtime) -> None:
    created = [admin.create_org(f"Bank {i}", "bank") for i in range(7)]
    subject = admin.create_org("Enterprise", "subject", uscc_for(42).lower())
    assert subject["uscc"] == uscc_for(42)  # normalised
    banks = admin.list_orgs(role="bank", limit=3)  # follows three pages
    assert sorted(b["id"] for b in banks) == sorted(c["id"] for c in created)
    assert admin.get_org(subject["id"])["name"] == "Enterprise"
    with runtime.db.transaction(write=False) as s:
        actions = runtime.ledger.entries(s, EntryFilter(action="org.create"))
    assert len(actions) == 1 + 7 + 1


def test_token_lifecycle(admin: PPSClient, base_url: str) -> None:
    bank = admin.create_org("Bank T", "bank")
    issued = admin.issue_token(bank["id"], label="batch", ttl_days=7)
    assert issued["token"].startswith("pps_")
    assert issued["state"] == "active"
    member = PPSClient(base_url, issued["token"])
    assert member.me()["org"]["id"] == bank["id"]
    own = member.issue_token(bank["id"], label="rotation")
    listed = member.list_tokens(bank["id"])
    assert {t["label"] for t in listed} == {"batch", "rotation"}
    assert all("token" not in t for t in listed)  # secrets are never listed
    member.revoke_token(issued["id"])
    states = {t["label"]: t["state"] for t in PPSClient(base_url, own["token"]).list_tokens(bank["id"])}
    assert states == {"batch": "revoked", "rotation": "active"}


def test_offboarding_stops_every_token(admin: PPSClient, base_url: str, runtime: Runtime) -> None:
    bank = admin.create_org("Bank D", "bank")
    member = PPSClient(base_url, admin.issue_token(bank["id"])["token"])
    assert member.me()
    disabled = admin.disable_org(bank["id"], "licence withdrawn")
    assert disabled["disabled_at"] is not None
    with pytest.raises(InvalidToken, match="disabled"):
        member.me()
    with pytest.raises(Conflict):
        admin.disable_org(bank["id"], "again")
    with pytest.raises(Conflict):
        admin.issue_token(bank["id"])
    with pytest.raises(InvalidInput, match="itself"):
        admin.disable_org(admin.me()["org"]["id"], "oops")
    with pytest.raises(NotFound):
        admin.disable_org("org_missing", "nobody")
    with runtime.db.transaction(write=False) as s:
        last = runtime.ledger.entry(s, runtime.ledger.size(s) - 1)
    assert b'"action":"org.disable"' in last.entry and b"licence withdrawn" in last.entry
