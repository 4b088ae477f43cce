"""The role pages in a real browser: Playwright driving Debian's Chromium against a live server.

Prerequisite: ``apt-get install chromium`` (``.ci/run`` installs it). Never a downloaded browser: these tests
launch ``/usr/bin/chromium`` and fail, saying so, when it is missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from playwright.sync_api import Browser, Page, expect, sync_playwright

from api.live import running_server
from pps.infra.storage.tables import utcnow
from pps.ledger.entry import Actor
from pps.runtime import Runtime
from tests.api.web.conftest import JOB_KIND, World, make_world
from tests.conftest import OrgFactory, OrgHandle
from tests.helpers import REPRESENTATIVE_ID

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"{CHROMIUM} is missing: run `apt-get install -y chromium` (Debian's browser; the browser tests "
            "never download one)",
            pytrace=False,
        )
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def live(app: FastAPI, runtime: Runtime, make_org: OrgFactory) -> Iterator[tuple[str, World]]:
    world = make_world(runtime, make_org)
    with running_server(app) as url:
        yield url, world


def open_as(browser: Browser, base: str, org: OrgHandle) -> Page:
    page = browser.new_context(base_url=base).new_page()
    page.set_default_timeout(15_000)
    page.goto("/ui/login")
    page.fill("#token", org.token)
    page.click("#login-button")
    return page


def with_passkey_authenticator(page: Page) -> None:
    """Chromium's virtual authenticator (CDP WebAuthn domain): a platform passkey that is always present."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )


def test_a_subject_grants_and_revokes_consent_and_verifies_the_access(
    browser: Browser, live: tuple[str, World], runtime: Runtime
) -> None:
    base, world = live
    with (
        runtime.db.transaction() as session
    ):  # the portal's subject has no local key: its passkey is its first
        for key in runtime.keys.active_keys(session, str(world.subject.uscc)):
            runtime.keys.revoke(session, key, actor=Actor(world.subject.id, "subject"))
    base = base.replace("127.0.0.1", "localhost")  # a passkey's relying party is a host name, never an IP
    page = open_as(browser, base, world.subject)
    with_passkey_authenticator(page)
    expect(page.locator("h1")).to_contain_text("Enterprise portal")
    page.click("text=My keys")
    page.fill("#rep-name", "Li Wei")
    page.fill("#rep-id", REPRESENTATIVE_ID)
    page.click("#passkey-create")
    expect(page.locator(".flash.ok")).to_contain_text("Passkey registered")
    # listed after the fixture's revoked local key: the newest enrolment is last
    expect(page.locator("#keys .algorithm").last).to_have_text("webauthn-es256")
    page.click("text=My consents")
    expect(page.locator("#consents")).to_contain_text("You have not granted any consent.")
    page.select_option("#grant-bank", world.bank.id)
    page.select_option("#grant-purpose", "loan_underwriting")
    page.fill("#grant-dataset", world.dataset_id)
    page.fill("#grant-fields", "employees")
    page.check("#op-score")
    page.fill("#grant-until", (utcnow() + timedelta(days=90)).date().isoformat())
    page.click("#grant-button")
    expect(page.locator("#signed-text")).to_contain_text('"action":"grant"')  # the exact text the key signs
    page.click("#passkey-sign")
    expect(page.locator(".flash.ok")).to_contain_text("Consent granted.")
    row = page.locator("#consents tbody tr").first
    expect(row.locator(".state")).to_have_text("active")

    # the bank checks the enterprise through the API: an access, on the ledger
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {world.bank.token}"}) as api:
        checked = api.post(
            "/v1/policy/check",
            json={
                "subjects": [world.subject.uscc],
                "fields": {world.dataset_id: ["employees"]},
                "operation": "score",
                "purpose": "loan_underwriting",
            },
        )
        assert checked.status_code == 200 and checked.json()["allowed"] == 1

    row.locator("button.revoke").click()
    expect(page.locator(".flash.ok")).to_contain_text("Consent revoked")
    expect(page.locator("#consents tbody tr").first.locator(".state")).to_have_text("revoked")

    page.click("text=Who accessed my data")
    access = page.locator("#access tbody tr", has_text="policy.admit")
    expect(access).to_contain_text("Bank A")
    access.locator("button.verify").click()
    expect(access.locator(".verify-result")).to_have_class("verify-result ok")
    expect(access.locator(".verify-result")).to_contain_text("is in the signed log")


def test_an_auditor_filters_the_ledger_and_verifies_an_entry(
    browser: Browser, live: tuple[str, World], runtime: Runtime
) -> None:
    base, world = live
    page = open_as(browser, base, world.auditor)
    expect(page.locator("h1")).to_contain_text("Auditor console")
    page.fill("#f-action", "dataset.*")
    page.click("#filter-button")
    rows = page.locator("#entries tbody tr")
    expect(rows).to_have_count(2)  # dataset.create, dataset.upload
    expect(page.locator("#entries")).not_to_contain_text("org.create")
    first = rows.first
    first.locator("button.verify").click()
    expect(first.locator(".verify-result")).to_have_class("verify-result ok")
    expect(first.locator(".verify-result")).to_contain_text("its bytes match the leaf hash")

    page.fill("#f-action", "consent.*")
    page.click("#filter-button")
    expect(page.locator("#no-entries")).to_be_visible()
    page.click("text=Checkpoints")
    expect(page.locator("#checkpoints tbody tr")).not_to_have_count(0)
    expect(page.locator("#checkpoints")).not_to_contain_text("✗")


def test_a_bank_sees_its_job_finish(browser: Browser, live: tuple[str, World], runtime: Runtime) -> None:
    base, world = live
    with runtime.db.transaction() as session:
        job_id = runtime.jobs.submit(
            session,
            kind=JOB_KIND,
            actor=Actor(world.bank.id, "bank", token_id=world.bank.token_id),
            purpose="loan_underwriting",
            params={"steps": 4, "pause_ms": 600},
            progress_total=4,
        ).id
    page = open_as(browser, base, world.bank)
    page.goto("/ui/bank/jobs")
    row = page.locator(f'tr[data-job="{job_id}"]')
    expect(row.locator(".state")).to_have_text("queued")
    runtime.jobs.enqueue(job_id)
    expect(row.locator(".state")).to_have_text("succeeded", timeout=20_000)
    with page.expect_download() as download:
        row.locator("a.download").click()
    assert Path(download.value.path()).read_bytes() == b'{"counted": 4}'
