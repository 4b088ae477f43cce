"""Tokens from the pages: a session cookie alone cannot mint a credential, and page actions say ``via: web``.

The threat: someone holding a stolen session cookie (but not the API token) loads the organisation page for
its CSRF token and posts the issue form. Issuing needs the API token typed again, and the new token never
outlives the token the session was opened with, so the cookie stays a session, not a credential.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from pps.infra.storage.tables import ApiToken, Organization, utcnow
from pps.ledger.entry import Actor
from pps.ledger.store import EntryFilter
from pps.runtime import Runtime
from tests.api.web.conftest import World, csrf_of, grant, log_in
from tests.conftest import OrgHandle

Client = Callable[..., TestClient]
ISSUED = re.compile(r'id="issued-token">(pps_[^<]+)<')


def _token_count(runtime: Runtime, org_id: str) -> int:
    with runtime.db.transaction(write=False) as session:
        return session.execute(
            select(func.count()).select_from(ApiToken).where(ApiToken.org_id == org_id)
        ).scalar_one()


def _ledger(runtime: Runtime, action: str) -> list[dict[str, Any]]:
    with runtime.db.transaction(write=False) as session:
        found = runtime.ledger.entries(session, EntryFilter(action=action), limit=1000)
        return [json.loads(e.entry) for e in found]


def _extra_token(runtime: Runtime, org: OrgHandle, days: int) -> tuple[str, str]:
    """Another token of ``org`` (secret, id), issued by the organisation itself (the operator cannot)."""
    with runtime.db.transaction() as session:
        row = session.get(Organization, org.id)
        assert row is not None
        issued = runtime.identity.issue_token(
            session,
            org=row,
            label=f"{days}d",
            ttl=timedelta(days=days),
            actor=Actor(org.id, org.role.value, token_id=org.token_id),
        )
        return issued.secret, issued.token.id


def _expires(runtime: Runtime, token_id: str) -> datetime:
    with runtime.db.transaction(write=False) as session:
        token = session.get(ApiToken, token_id)
        assert token is not None
        return token.expires_at


def _issue(client: TestClient, org_id: str, **form: str) -> httpx.Response:
    csrf = csrf_of(client.get(f"/ui/orgs/{org_id}").text)
    sent: httpx.Response = client.post(
        f"/ui/orgs/{org_id}/tokens", data={"csrf": csrf, "label": "stolen", "ttl_days": "3650", **form}
    )
    return sent


def test_a_stolen_cookie_alone_cannot_mint_a_token(
    world: World, page_client: Client, runtime: Runtime
) -> None:
    victim = page_client(world.subject)
    # the attacker has the cookie only: a fresh client carrying it, never the token
    thief = page_client()
    thief.cookies.set("pps_session", victim.cookies["pps_session"], path="/ui")
    assert thief.get(f"/ui/orgs/{world.subject.id}").status_code == 200
    other_secret = world.other_subject.token
    revoked_secret, revoked_id = _extra_token(runtime, world.subject, 30)
    with runtime.db.transaction() as session:
        session.execute(update(ApiToken).where(ApiToken.id == revoked_id).values(revoked_at=utcnow()))
    before = _token_count(runtime, world.subject.id)
    issues_before = len(_ledger(runtime, "token.issue"))
    for current in (None, "", "pps_guessed-token", "hello", other_secret, revoked_secret):
        form = {} if current is None else {"current_token": current}
        refused = _issue(thief, world.subject.id, **form)
        assert refused.status_code == 403, current
        assert "reauthentication_failed" in refused.text
        assert not ISSUED.search(refused.text)
    assert _token_count(runtime, world.subject.id) == before
    assert len(_ledger(runtime, "token.issue")) == issues_before
    # nor for another organisation with that organisation's token: the token must be the session's org's
    admin = page_client(world.admin)
    refused = _issue(admin, world.bank.id, current_token=world.bank.token)
    assert refused.status_code == 403 and "another organisation" in refused.text


def test_the_issue_form_asks_for_the_token_again_and_names_the_cap(world: World, page_client: Client) -> None:
    page = page_client(world.bank).get(f"/ui/orgs/{world.bank.id}").text
    assert re.search(r'<input type="password" name="current_token"[^>]*required', page)
    assert 'id="expires-by"' in page


def test_a_reauthenticated_issue_works_and_never_outlives_the_session_token(
    world: World, page_client: Client, runtime: Runtime
) -> None:
    client = page_client(world.subject)  # logged in with a token that expires in one day
    session_expiry = _expires(runtime, world.subject.token_id)
    issued = _issue(client, world.subject.id, current_token=world.subject.token)
    assert issued.status_code == 201
    secret = ISSUED.search(issued.text)
    assert secret
    with runtime.db.transaction(write=False) as session:
        new = session.execute(select(ApiToken).where(ApiToken.label == "stolen")).scalar_one()
        assert new.org_id == world.subject.id
        assert new.expires_at <= session_expiry  # asked for 3650 days, got at most the session token's life
        assert session_expiry - new.expires_at < timedelta(minutes=1)
    assert log_in(page_client(), secret.group(1)).status_code == 303  # it is a working token

    # another valid token of the same organisation also confirms; the cap is still the session token's
    longer_secret, _ = _extra_token(runtime, world.subject, 400)
    again = _issue(client, world.subject.id, current_token=longer_secret, label="second")
    assert again.status_code == 201
    with runtime.db.transaction(write=False) as session:
        second = session.execute(select(ApiToken).where(ApiToken.label == "second")).scalar_one()
        assert second.expires_at <= session_expiry


def test_a_shorter_lifetime_than_the_cap_is_kept(world: World, page_client: Client, runtime: Runtime) -> None:
    secret, token_id = _extra_token(runtime, world.bank, 30)
    client = page_client()
    assert log_in(client, secret).status_code == 303
    before = utcnow()
    issued = _issue(client, world.bank.id, current_token=secret, ttl_days="3", label="three")
    assert issued.status_code == 201
    with runtime.db.transaction(write=False) as session:
        three = session.execute(select(ApiToken).where(ApiToken.label == "three")).scalar_one()
        assert before + timedelta(days=3) <= three.expires_at <= utcnow() + timedelta(days=3)
        assert three.expires_at < _expires(runtime, token_id)


@pytest.mark.parametrize("via_page", [True, False])
def test_ledger_entries_of_page_actions_say_via_web(
    world: World, page_client: Client, runtime: Runtime, via_page: bool, http: Callable[..., httpx.Client]
) -> None:
    if via_page:
        client = page_client(world.subject)
        _issue(client, world.subject.id, current_token=world.subject.token, label="web-made")
        consent_id = grant(runtime, world.subject, world.bank, world.dataset_id)
        csrf = csrf_of(client.get("/ui/subject").text)
        done = client.post(f"/ui/subject/consents/{consent_id}/revoke", data={"csrf": csrf})
        assert done.status_code == 200
        expected = "web"
    else:
        api = http(world.subject.token)
        made = api.post(f"/v1/orgs/{world.subject.id}/tokens", json={"label": "api-made", "ttl_days": 3650})
        assert made.status_code == 201
        assert (
            made.json()["expires_at"] > (utcnow() + timedelta(days=3000)).isoformat()
        )  # the API is unchanged
        expected = "api"
    entries = [
        e
        for e in _ledger(runtime, "token.issue")
        # not the first token: the subject minted it from its enrolment code, holding no token yet
        if e["actor"]["org"] == world.subject.id and e["actor"]["token"] is not None
    ]
    if via_page:
        entries += _ledger(runtime, "consent.revoke")
    assert entries
    for entry in entries:
        assert entry["actor"] == {
            "org": world.subject.id,
            "role": "subject",
            "via": expected,
            "token": world.subject.token_id,
        }
