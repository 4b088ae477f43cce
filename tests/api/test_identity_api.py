"""Organisations and tokens over the API: the paths a platform operator and its members walk."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from pps.infra.storage.tables import Role
from pps.ledger.store import EntryFilter
from pps.runtime import Runtime
from pps_client import AuthenticationError, Client, Conflict, InvalidRequest, NotFound, PermissionDenied
from tests.conftest import OrgFactory
from tests.helpers import uscc_for


@pytest.fixture
def admin(make_org: OrgFactory, base_url: str) -> Client:
    return Client(base_url, make_org(Role.platform_admin).token)


def test_onboarding_and_listing(admin: Client, runtime: Runtime) -> None:
    created = [admin.orgs.create(f"Bank {i}", "bank") for i in range(7)]
    subject = admin.orgs.create("Enterprise", "subject", uscc=uscc_for(42).lower())
    assert subject.uscc == uscc_for(42)  # normalised
    banks = admin.orgs.list(role="bank", limit=3)  # follows three pages
    assert sorted(b.id for b in banks) == sorted(c.id for c in created)
    assert admin.orgs.get(subject.id).name == "Enterprise"
    with runtime.db.transaction(write=False) as s:
        actions = runtime.ledger.entries(s, EntryFilter(action="org.create"))
    assert len(actions) == 1 + 7 + 1


def test_token_lifecycle(admin: Client, base_url: str, http: Callable[..., httpx.Client]) -> None:
    bank = admin.orgs.create("Bank T", "bank")
    with pytest.raises(PermissionDenied) as minted:  # the operator never holds a bank's credential (issue 24)
        admin.tokens.issue(bank.id, label="batch", ttl_days=7)
    assert minted.value.code == "operator_bounded"
    issued = Client(base_url).orgs.enrol(bank.enrolment_code, label="batch", ttl_days=7).token
    assert issued.token.startswith("pps_")
    assert issued.state == "active"
    member = Client(base_url, issued.token)
    assert member.me().org.id == bank.id
    own = member.tokens.issue(bank.id, label="rotation")
    listed = member.tokens.list(bank.id)
    assert {t.label for t in listed} == {"batch", "rotation"}
    raw = http(issued.token).get(f"/v1/orgs/{bank.id}/tokens").json()
    assert all("token" not in t for t in raw)  # secrets are never listed
    member.tokens.revoke(issued.id)
    states = {t.label: t.state for t in Client(base_url, own.token).tokens.list(bank.id)}
    assert states == {"batch": "revoked", "rotation": "active"}


def test_offboarding_stops_every_token(admin: Client, base_url: str, runtime: Runtime) -> None:
    bank = admin.orgs.create("Bank D", "bank")
    member = Client(base_url, Client(base_url).orgs.enrol(bank.enrolment_code).token.token)
    assert member.me()
    disabled = admin.orgs.disable(bank.id, "licence withdrawn")
    assert disabled.disabled_at is not None
    with pytest.raises(AuthenticationError, match="disabled") as refused:
        member.me()
    assert refused.value.code == "invalid_token" and refused.value.status == 401
    with pytest.raises(Conflict):
        admin.orgs.disable(bank.id, "again")
    with pytest.raises(Conflict):
        admin.tokens.issue(bank.id)  # disabled: refused before the operator's bound is even asked
    with pytest.raises(InvalidRequest, match="itself"):
        admin.orgs.disable(admin.me().org.id, "oops")
    with pytest.raises(NotFound):
        admin.orgs.disable("org_missing", "nobody")
    with runtime.db.transaction(write=False) as s:
        last = runtime.ledger.entry(s, runtime.ledger.size(s) - 1)
    assert b'"action":"org.disable"' in last.entry and b"licence withdrawn" in last.entry
