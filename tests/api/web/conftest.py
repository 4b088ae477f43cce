"""A small world for the page tests: every role, a dataset holding two enterprises' records, a job kind."""

from __future__ import annotations

import io
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from pps.data.datasets.ingest import UploadFormat
from pps.data.datasets.schema import DatasetSchema
from pps.infra.jobs import JobContext, JobOutcome
from pps.infra.storage.tables import Role, utcnow
from pps.ledger.entry import Actor
from pps.runtime import Runtime
from tests.conftest import OrgFactory, OrgHandle
from tests.helpers import signed_grant

SCHEMA = {
    "subject_key": "uscc",
    "columns": [
        {"name": "uscc", "type": "uscc", "sensitivity": "C1"},
        {"name": "employees", "type": "int", "sensitivity": "C1"},
        {"name": "tax_paid", "type": "float", "sensitivity": "C2"},
    ],
}
JOB_KIND = "web_count"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def count_job(ctx: JobContext) -> JobOutcome:
    """A job that counts to ``params["steps"]``, reporting progress (run by the real job service)."""
    steps = int(ctx.params.get("steps", 3))
    for done in range(1, steps + 1):
        time.sleep(int(ctx.params.get("pause_ms", 0)) / 1000)
        ctx.progress(done, steps)
    return JobOutcome(
        result=b'{"counted": %d}' % steps,
        media_type="application/json",
        finalize=lambda _s: {"counted": steps},
    )


@dataclass
class World:
    admin: OrgHandle
    auditor: OrgHandle
    provider: OrgHandle
    bank: OrgHandle
    other_bank: OrgHandle
    subject: OrgHandle
    other_subject: OrgHandle
    dataset_id: str


def make_world(runtime: Runtime, make_org: OrgFactory) -> World:
    orgs = {
        "admin": make_org(Role.platform_admin, "Platform operator"),
        "auditor": make_org(Role.auditor, "Regulator"),
        "provider": make_org(Role.data_provider, "Tax bureau"),
        "bank": make_org(Role.bank, "Bank A"),
        "other_bank": make_org(Role.bank, "Bank B"),
        "subject": make_org(Role.subject, "Enterprise A"),
        "other_subject": make_org(Role.subject, "Enterprise B"),
    }
    provider = orgs["provider"]
    csv = f"uscc,employees,tax_paid\n{orgs['subject'].uscc},12,3400.5\n{orgs['other_subject'].uscc},40,9100\n"
    actor = Actor(provider.id, provider.role.value, token_id=provider.token_id)
    with runtime.db.transaction() as session:
        ds = runtime.datasets.create(
            session,
            provider_org_id=provider.id,
            name="tax",
            description="monthly tax",
            schema=DatasetSchema.model_validate(SCHEMA),
            actor=actor,
        )
        runtime.datasets.upload(
            session, ds, stream=io.BytesIO(csv.encode()), fmt=UploadFormat("csv"), actor=actor
        )
        dataset_id = ds.id
    if JOB_KIND not in runtime.jobs.handlers:
        runtime.jobs.register(JOB_KIND, count_job)
    return World(dataset_id=dataset_id, **orgs)


@pytest.fixture
def world(runtime: Runtime, make_org: OrgFactory) -> World:
    return make_world(runtime, make_org)


def grant(runtime: Runtime, subject: OrgHandle, bank: OrgHandle, dataset_id: str, **extra: object) -> str:
    """A consent granted through the service (as the API would)."""
    from pps.governance.consent import Terms
    from pps.infra.storage.tables import Organization

    terms = Terms(
        purpose=str(extra.get("purpose", "loan_underwriting")),
        scope=[{"dataset_id": dataset_id, "fields": ["employees"]}],
        operations=["score", "psi"],
        valid_until=utcnow() + timedelta(days=30),
        max_uses=extra.get("max_uses"),  # type: ignore[arg-type]
    )
    with runtime.db.transaction() as session:
        org = session.get(Organization, subject.id)
        assert org is not None
        return runtime.consents.grant(
            session,
            subject=org,
            bank_org_id=bank.id,
            terms=terms,
            signed=signed_grant(runtime, session, str(subject.uscc), bank.id, terms),
            actor=Actor(subject.id, "subject", token_id=subject.token_id),
        ).id


def submit_job(
    runtime: Runtime, owner: OrgHandle, *, steps: int = 3, pause_ms: int = 0, run: bool = True
) -> str:
    with runtime.db.transaction() as session:
        job_id = runtime.jobs.submit(
            session,
            kind=JOB_KIND,
            actor=Actor(owner.id, owner.role.value, token_id=owner.token_id),
            purpose="loan_underwriting",
            params={"steps": steps, "pause_ms": pause_ms},
            progress_total=steps,
        ).id
    if run:
        runtime.jobs.run(job_id)
    return job_id


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def log_in(client: httpx.Client | TestClient, token: str) -> httpx.Response:
    form = client.get("/ui/login")
    assert form.status_code == 200
    return client.post(
        "/ui/login", data={"token": token, "csrf": csrf_of(form.text), "next": ""}, follow_redirects=False
    )


@pytest.fixture
def page_client(app: FastAPI) -> object:
    """``page_client(org)`` → a TestClient logged in as ``org`` (or anonymous with None)."""
    clients: list[TestClient] = []

    def make(org: OrgHandle | None = None, base_url: str = "http://testserver") -> TestClient:
        client = TestClient(app, base_url=base_url)
        clients.append(client)
        if org is not None:
            done = log_in(client, org.token)
            assert done.status_code == 303, done.text
        return client

    yield make
    for c in clients:
        c.close()


def enrol_passkey(runtime: Runtime, subject: OrgHandle, rp_id: str = "testserver") -> Any:
    """The subject's passkey (a software authenticator), enrolled as the portal would after registration; the
    subject's fixture key is revoked first (a passkey is a subject's first key in the portal)."""
    from pps.identity.realname import Representative
    from pps.infra.storage.tables import Organization
    from pps_wire.passkey import SoftwarePasskey, b64url
    from tests.helpers import REPRESENTATIVE_ID

    passkey = SoftwarePasskey(rp_id, f"http://{rp_id}")
    actor = Actor(subject.id, "subject", token_id=subject.token_id)
    with runtime.db.transaction() as session:
        for key in runtime.keys.active_keys(session, str(subject.uscc)):
            runtime.keys.revoke(session, key, actor=actor)
        org = session.get(Organization, subject.id)
        assert org is not None
        runtime.keys.enrol_passkey(
            session,
            org=org,
            public_key=passkey.public_key,
            credential_id=b64url(b"cred-" + subject.id.encode()),
            representative=Representative("Li Wei", REPRESENTATIVE_ID),
            actor=actor,
        )
    passkey.credential_id = b64url(b"cred-" + subject.id.encode())  # type: ignore[attr-defined]
    return passkey


def sign_on_page(client: Any, sign_page: str, passkey: Any) -> Any:
    """Answer the portal's "sign with your passkey" page as the browser would, with ``passkey``."""
    import base64
    import re as _re

    text_b64 = _re.search(r'name="text_b64" value="([^"]+)"', sign_page).group(1)  # type: ignore[union-attr]
    text = base64.b64decode(text_b64).decode()
    return client.post(
        "/ui/subject/consents/signed",
        data={
            "csrf": csrf_of(sign_page),
            "text_b64": text_b64,
            "credential_id": passkey.credential_id,
            "assertion": passkey.assert_text(text).decode(),
        },
        follow_redirects=False,
    )
