"""The role pages through the test client: log-in and session cookie, CSRF, role and tenant refusals, rendering."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from pps.governance.policy import Request as PolicyRequest
from pps.infra.storage.tables import ApiToken, Consent, ConsentState, Organization, Role, WebSession, utcnow
from pps.ledger.entry import Actor, ObjectRef
from pps.ledger.store import EntryFilter
from pps.runtime import Runtime
from pps_wire import merkle
from tests.api.web.conftest import World, csrf_of, enrol_passkey, grant, log_in, sign_on_page, submit_job
from tests.conftest import OrgFactory

Client = Callable[..., TestClient]


def _consent_state(runtime: Runtime, consent_id: str) -> ConsentState:
    with runtime.db.transaction(write=False) as session:
        consent = session.get(Consent, consent_id)
        assert consent is not None
        return consent.state


# --- log-in and the session cookie ------------------------------------------------------------------------


def test_log_in_sets_a_strict_httponly_session_cookie_that_is_not_the_token(
    world: World, page_client: Client, runtime: Runtime
) -> None:
    client = page_client()
    done = log_in(client, world.subject.token)
    assert done.status_code == 303
    assert done.headers["location"] == "/ui/subject"
    cookie = next(c for c in done.headers.get_list("set-cookie") if c.startswith("pps_session="))
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert "httponly" in flags and "samesite=strict" in flags and "path=/ui" in flags
    assert "secure" not in flags  # plain http here; https below
    value = cookie.split(";")[0].split("=", 1)[1]
    secret = world.subject.token.removeprefix("pps_")
    assert secret not in value and secret not in cookie
    with runtime.db.transaction(write=False) as session:
        rows = session.execute(select(WebSession)).scalars().all()
        assert [r.id_hash for r in rows] == [hashlib.sha256(value.encode()).digest()]
        assert rows[0].token_id == world.subject.token_id
        assert rows[0].expires_at <= utcnow() + timedelta(hours=8, seconds=5)
    assert client.get("/ui/subject").status_code == 200


def test_over_https_the_session_cookie_is_secure(world: World, page_client: Client) -> None:
    client = page_client(base_url="https://testserver")
    done = log_in(client, world.bank.token)
    cookie = next(c for c in done.headers.get_list("set-cookie") if c.startswith("pps_session="))
    assert "secure" in {part.strip().lower() for part in cookie.split(";")}


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("pps_not-a-real-token", "unknown API token"),
        ("hello", "not a PPS API token"),
        ("", "enter your API token"),
    ],
)
def test_a_bad_token_is_refused_with_a_clear_message(
    world: World, page_client: Client, runtime: Runtime, token: str, message: str
) -> None:
    client = page_client()
    done = log_in(client, token)
    assert done.status_code == 401
    assert message in done.text
    assert not any(c.startswith("pps_session=") for c in done.headers.get_list("set-cookie"))
    with runtime.db.transaction(write=False) as session:
        assert session.execute(select(WebSession)).first() is None


def test_log_in_without_the_form_nonce_is_refused(world: World, page_client: Client) -> None:
    client = page_client()
    done = client.post(
        "/ui/login", data={"token": world.subject.token, "csrf": "forged"}, follow_redirects=False
    )
    assert done.status_code == 403
    assert "pps_session" not in done.headers.get("set-cookie", "")


def test_pages_need_a_session(world: World, page_client: Client) -> None:
    client = page_client()
    for path in ("/ui/subject", "/ui/bank", "/ui/auditor", "/ui/operator", "/ui/"):
        got = client.get(path, follow_redirects=False)
        assert got.status_code == 303 and got.headers["location"].startswith("/ui/login"), path
    assert client.get("/ui/proof/0", follow_redirects=False).status_code == 303
    refused = client.post("/ui/subject/consents", data={"csrf": "x"}, follow_redirects=False)
    assert refused.status_code == 401


def test_next_only_leads_to_our_own_pages(world: World, page_client: Client) -> None:
    client = page_client()
    form = client.get("/ui/login?next=//evil.example/x")
    done = client.post(
        "/ui/login",
        data={"token": world.bank.token, "csrf": csrf_of(form.text), "next": "//evil.example/x"},
        follow_redirects=False,
    )
    assert done.headers["location"] == "/ui/bank"


def test_log_out_ends_the_session_for_good(world: World, page_client: Client, runtime: Runtime) -> None:
    client = page_client(world.subject)
    cookie = client.cookies.get("pps_session")
    html = client.get("/ui/subject").text
    out = client.post("/ui/logout", data={"csrf": csrf_of(html)}, follow_redirects=False)
    assert out.status_code == 303
    replay = TestClient(client.app)
    replay.cookies.set("pps_session", cookie or "", path="/ui")
    assert replay.get("/ui/subject", follow_redirects=False).status_code == 303
    with runtime.db.transaction(write=False) as session:
        assert session.execute(select(WebSession)).first() is None


def test_revoking_the_token_or_expiry_ends_the_session(
    world: World, page_client: Client, runtime: Runtime
) -> None:
    client = page_client(world.bank)
    with runtime.db.transaction() as session:
        session.execute(
            update(ApiToken).where(ApiToken.id == world.bank.token_id).values(revoked_at=utcnow())
        )
    assert client.get("/ui/bank", follow_redirects=False).status_code == 303
    other = page_client(world.subject)
    with runtime.db.transaction() as session:
        session.execute(update(WebSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert other.get("/ui/subject", follow_redirects=False).status_code == 303


# --- CSRF ---------------------------------------------------------------------------------------------------


def test_state_changing_forms_need_the_sessions_csrf_token(
    world: World, page_client: Client, runtime: Runtime
) -> None:
    consent_id = grant(runtime, world.subject, world.bank, world.dataset_id)
    client = page_client(world.subject)
    other = page_client(world.other_subject)
    foreign = csrf_of(other.get("/ui/subject").text)
    url = f"/ui/subject/consents/{consent_id}/revoke"
    for data in ({}, {"csrf": ""}, {"csrf": "guess"}, {"csrf": foreign}):
        refused = client.post(url, data=data, follow_redirects=False)
        assert refused.status_code == 403, data
        assert "csrf_refused" in refused.text
    cross_site = client.post(
        url,
        data={"csrf": csrf_of(client.get("/ui/subject").text)},
        headers={"Origin": "https://evil.example"},
    )
    assert cross_site.status_code == 403
    assert _consent_state(runtime, consent_id) is ConsentState.active
    done = client.post(url, data={"csrf": csrf_of(client.get("/ui/subject").text)}, follow_redirects=False)
    assert done.status_code == 303
    assert _consent_state(runtime, consent_id) is ConsentState.revoked


# --- roles and tenants ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "path"),
    [
        ("bank", "/ui/subject"),
        ("bank", "/ui/subject/data"),
        ("subject", "/ui/bank"),
        ("subject", "/ui/bank/jobs"),
        ("subject", "/ui/auditor"),
        ("bank", "/ui/auditor/anomalies"),
        ("bank", "/ui/auditor/checkpoints"),
        ("bank", "/ui/auditor/export?fmt=csv"),
        ("auditor", "/ui/operator"),
        ("subject", "/ui/datasets"),
        ("auditor", "/ui/subject/access"),
    ],
)
def test_a_role_cannot_open_another_roles_pages(
    world: World, page_client: Client, who: str, path: str
) -> None:
    got = page_client(getattr(world, who)).get(path)
    assert got.status_code == 403
    assert "role_not_allowed" in got.text


def test_a_bank_cannot_act_as_a_subject_through_a_form(
    world: World, page_client: Client, runtime: Runtime
) -> None:
    client = page_client(world.bank)
    token = csrf_of(client.get("/ui/bank").text)
    got = client.post(
        "/ui/subject/consents",
        data={
            "csrf": token,
            "bank_org_id": world.bank.id,
            "purpose": "loan_underwriting",
            "dataset_id": world.dataset_id,
            "fields": "*",
            "operations": "score",
            "valid_until": (utcnow() + timedelta(days=100)).date().isoformat(),
        },
    )
    assert got.status_code == 403
    with runtime.db.transaction(write=False) as session:
        assert session.execute(select(Consent)).first() is None


def test_another_tenants_objects_are_not_found_on_pages(
    world: World, page_client: Client, runtime: Runtime
) -> None:
    consent_id = grant(runtime, world.subject, world.bank, world.dataset_id)
    job_id = submit_job(runtime, world.bank)
    intruder = page_client(world.other_subject)
    token = csrf_of(intruder.get("/ui/subject").text)
    for action in ("revoke", "approve", "deny"):
        got = intruder.post(f"/ui/subject/consents/{consent_id}/{action}", data={"csrf": token})
        assert got.status_code == 404, action
    assert _consent_state(runtime, consent_id) is ConsentState.active
    assert consent_id not in intruder.get("/ui/subject").text

    other_bank = page_client(world.other_bank)
    assert other_bank.get(f"/ui/bank/jobs/{job_id}/result").status_code == 404
    assert job_id not in other_bank.get("/ui/bank/jobs").text
    assert consent_id not in other_bank.get("/ui/bank").text
    assert page_client(world.bank).get(f"/ui/bank/jobs/{job_id}/result").json() == {"counted": 3}

    with runtime.db.transaction(write=False) as session:
        entry = runtime.ledger.entries(session, EntryFilter(action="consent.grant"))[0]
    assert intruder.get(f"/ui/proof/{entry.index}").status_code == 404
    assert page_client(world.subject).get(f"/ui/proof/{entry.index}").status_code == 200

    # tokens: an organisation manages only its own
    bank_page = page_client(world.bank)
    assert bank_page.get(f"/ui/orgs/{world.other_bank.id}").status_code == 404
    token = csrf_of(bank_page.get(f"/ui/orgs/{world.bank.id}").text)
    got = bank_page.post(f"/ui/tokens/{world.other_bank.token_id}/revoke", data={"csrf": token})
    assert got.status_code == 404
    with runtime.db.transaction(write=False) as session:
        other_token = session.get(ApiToken, world.other_bank.token_id)
        assert other_token is not None and other_token.revoked_at is None

    # a provider sees its own datasets' lineage only
    provider2 = OrgFactory(runtime)(Role.data_provider, "Power company")
    assert page_client(provider2).get(f"/ui/datasets/{world.dataset_id}").status_code == 404


# --- the subject portal -------------------------------------------------------------------------------------


def test_a_subject_grants_revokes_and_answers_requests(
    world: World, page_client: Client, runtime: Runtime
) -> None:
    client = page_client(world.subject)
    home = client.get("/ui/subject")
    assert "You have not granted any consent." in home.text and "No bank is waiting" in home.text
    form = {
        "csrf": csrf_of(home.text),
        "bank_org_id": world.bank.id,
        "purpose": "loan_underwriting",
        "dataset_id": world.dataset_id,
        "fields": "employees",
        "operations": ["score", "psi"],
        "valid_until": (utcnow() + timedelta(days=200)).date().isoformat(),
        "max_uses": "5",
    }
    unkeyed = client.post("/ui/subject/consents", data=form, follow_redirects=False)
    assert unkeyed.status_code == 422 and "register a passkey first" in unkeyed.text  # its key is local only
    passkey = enrol_passkey(runtime, world.subject)
    to_sign = client.post("/ui/subject/consents", data={**form, "csrf": csrf_of(home.text)})
    assert to_sign.status_code == 200 and "Sign with your passkey" in to_sign.text, to_sign.text
    with runtime.db.transaction(write=False) as session:
        assert session.execute(select(Consent)).first() is None  # nothing exists before it is signed
    done = sign_on_page(client, to_sign.text, passkey)
    assert done.status_code == 303, done.text
    with runtime.db.transaction(write=False) as session:
        consent = session.execute(select(Consent)).scalar_one()
        assert consent.state is ConsentState.active and consent.max_uses == 5
        assert json.loads(consent.operations_json) == ["psi", "score"]
    page = client.get(done.headers["location"])
    assert "Consent granted." in page.text and "Bank A" in page.text

    # bad input: the API's validation, shown as a page; nothing stored
    bad = client.post("/ui/subject/consents", data={**form, "operations": [], "csrf": csrf_of(page.text)})
    assert bad.status_code == 422 and "operations" in bad.text
    bad_date = client.post(
        "/ui/subject/consents", data={**form, "valid_until": "someday", "csrf": csrf_of(page.text)}
    )
    assert bad_date.status_code == 422 and "valid until" in bad_date.text
    with runtime.db.transaction(write=False) as session:
        assert len(session.execute(select(Consent)).all()) == 1

    revoked = client.post(f"/ui/subject/consents/{consent.id}/revoke", data={"csrf": csrf_of(page.text)})
    assert revoked.status_code == 200 and "Consent revoked" in revoked.text
    assert _consent_state(runtime, consent.id) is ConsentState.revoked

    # a bank asks through its console; the subject sees and denies it
    bank = page_client(world.bank)
    asked = bank.post(
        "/ui/bank/consent-requests",
        data={
            "csrf": csrf_of(bank.get("/ui/bank").text),
            "subject_uscc": world.subject.uscc,
            "purpose": "credit_line_review",
            "dataset_id": world.dataset_id,
            "fields": "*",
            "operations": "score",
            "valid_until": (utcnow() + timedelta(days=100)).date().isoformat(),
        },
    )
    assert asked.status_code == 200 and "Request sent." in asked.text
    pending = client.get("/ui/subject")
    assert "credit_line_review" in pending.text and "No bank is waiting" not in pending.text
    with runtime.db.transaction(write=False) as session:
        request_id = session.execute(
            select(Consent.id).where(Consent.state == ConsentState.requested)
        ).scalar_one()
    denied = client.post(
        f"/ui/subject/consents/{request_id}/deny", data={"csrf": csrf_of(pending.text), "reason": "no"}
    )
    assert denied.status_code == 200 and "Request denied." in denied.text
    assert _consent_state(runtime, request_id) is ConsentState.denied
    assert "denied" in bank.get("/ui/bank").text

    # another request, approved: the passkey signs its terms by id
    bank.post(
        "/ui/bank/consent-requests",
        data={
            "csrf": csrf_of(bank.get("/ui/bank").text),
            "subject_uscc": world.subject.uscc,
            "purpose": "post_loan_monitoring",
            "dataset_id": world.dataset_id,
            "fields": "*",
            "operations": "score",
            "valid_until": (utcnow() + timedelta(days=100)).date().isoformat(),
        },
    )
    with runtime.db.transaction(write=False) as session:
        second = session.execute(
            select(Consent.id).where(Consent.state == ConsentState.requested)
        ).scalar_one()
    pending = client.get("/ui/subject")
    to_sign = client.post(f"/ui/subject/consents/{second}/approve", data={"csrf": csrf_of(pending.text)})
    assert to_sign.status_code == 200 and f'"consent_id":"{second}"' in to_sign.text.replace("&#34;", '"')
    approved = sign_on_page(client, to_sign.text, passkey)
    assert approved.status_code == 303 and "consent_approved" in approved.headers["location"]
    assert _consent_state(runtime, second) is ConsentState.active


def test_a_subject_sees_its_own_records_only_and_the_look_is_logged(
    world: World, page_client: Client, runtime: Runtime
) -> None:
    got = page_client(world.subject).get("/ui/subject/data")
    assert got.status_code == 200
    assert "3400.5" in got.text and "Tax bureau" in got.text
    assert "9100" not in got.text and world.other_subject.uscc not in got.text  # another enterprise's row
    with runtime.db.transaction(write=False) as session:
        assert runtime.ledger.entries(session, EntryFilter(action="subject.self_query"))
    empty = OrgFactory(runtime)(Role.subject, "Enterprise C")
    assert "No provider holds records about you." in page_client(empty).get("/ui/subject/data").text


def test_the_access_page_carries_proofs_that_verify(
    world: World, page_client: Client, runtime: Runtime
) -> None:
    client = page_client(world.subject)
    assert "consent.grant" not in client.get("/ui/subject/access").text
    grant(runtime, world.subject, world.bank, world.dataset_id)
    page = client.get("/ui/subject/access")
    assert page.status_code == 200 and "consent.grant" in page.text
    button = re.search(
        r'data-index="(\d+)" data-leaf="([^"]+)" data-entry="([^"]*)"\s+data-size="(\d+)" data-proof="([^"]*)"',
        page.text,
    )
    assert button, page.text
    index, leaf, _entry, size, proof = button.groups()
    with runtime.db.transaction(write=False) as session:
        root = runtime.ledger.root(session, int(size))
    merkle.verify_inclusion(
        int(index), int(size), base64.b64decode(leaf), [base64.b64decode(p) for p in proof.split()], root
    )


# --- the auditor console ------------------------------------------------------------------------------------


def test_the_auditor_filters_exports_and_checks_checkpoints(
    world: World, page_client: Client, runtime: Runtime
) -> None:
    grant(runtime, world.subject, world.bank, world.dataset_id, max_uses=1)
    client = page_client(world.auditor)
    everything = client.get("/ui/auditor")
    assert everything.status_code == 200 and "org.create" in everything.text
    filtered = client.get("/ui/auditor", params={"action": "consent.*", "subject": world.subject.uscc})
    assert "consent.grant" in filtered.text and "org.create" not in filtered.text
    none = client.get("/ui/auditor", params={"purpose": "risk_statistics"})
    assert "No entry matches these filters." in none.text
    assert client.get("/ui/auditor", params={"since": "yesterday"}).status_code == 422
    assert client.get("/ui/auditor", params={"subject": "123"}).status_code == 422

    exported = client.get("/ui/auditor/export", params={"fmt": "json", "action": "consent.*"})
    assert exported.status_code == 200 and "attachment" in exported.headers["content-disposition"]
    doc = exported.json()
    root = base64.b64decode(doc["checkpoint"]["root_hash"])
    assert [it["entry"]["action"] for it in doc["items"]] == ["consent.grant"]
    for it in doc["items"]:
        leaf = merkle.leaf_hash(base64.b64decode(it["entry_b64"]))
        assert base64.b64encode(leaf).decode() == it["leaf_hash"]
        merkle.verify_inclusion(
            it["index"],
            doc["checkpoint"]["tree_size"],
            leaf,
            [base64.b64decode(p) for p in it["inclusion_proof"]],
            root,
        )
    rows = list(csv.DictReader(io.StringIO(client.get("/ui/auditor/export", params={"fmt": "csv"}).text)))
    assert len(rows) == doc["checkpoint"]["tree_size"]
    assert client.get("/ui/auditor/export", params={"fmt": "xml"}).status_code == 422

    # a second checkpoint: the history shows both signed and consistent
    submit_job(runtime, world.bank)
    with runtime.db.transaction() as session:
        runtime.ledger.publish_checkpoint(session)
    cps = client.get("/ui/auditor/checkpoints")
    assert cps.status_code == 200 and cps.text.count("✓") == 3  # two signatures, one consistency proof
    assert "✗" not in cps.text

    anomalies = client.get("/ui/auditor/anomalies")
    assert anomalies.status_code == 200 and "0/1 uses" not in anomalies.text


def test_anomalies_show_consents_near_their_limits_and_denials_by_bank(
    world: World, page_client: Client, runtime: Runtime
) -> None:
    client = page_client(world.auditor)
    empty = client.get("/ui/auditor/anomalies").text
    assert empty.count("Nothing worth a look.") == 2
    consent_id = grant(runtime, world.subject, world.bank, world.dataset_id, max_uses=1)
    with runtime.db.transaction() as session:
        session.execute(update(Consent).where(Consent.id == consent_id).values(uses=1))
    with runtime.db.transaction() as session:
        runtime.policy.admit(
            session,
            PolicyRequest(
                bank_org_id=world.other_bank.id,
                subjects=(world.subject.uscc or "",),
                fields={world.dataset_id: ("employees",)},
                operation="score",
                purpose="loan_underwriting",
            ),
            job=ObjectRef("policy_check", "t"),
            actor=Actor(world.other_bank.id, "bank"),
        )
    page = client.get("/ui/auditor/anomalies").text
    assert "1/1 uses" in page and "Bank B" in page and "no_grant: 1" in page


# --- the bank console ---------------------------------------------------------------------------------------


def test_the_bank_console_shows_consents_budget_jobs_and_models(
    world: World, page_client: Client, runtime: Runtime
) -> None:
    client = page_client(world.bank)
    home = client.get("/ui/bank")
    assert home.status_code == 200 and "remaining" in home.text
    assert "Nothing here yet." in home.text
    assert "No model is registered" in home.text
    assert "You have not submitted any job." in client.get("/ui/bank/jobs").text
    grant(runtime, world.subject, world.bank, world.dataset_id)
    running = submit_job(runtime, world.bank, run=False)
    done = submit_job(runtime, world.bank)
    jobs = client.get("/ui/bank/jobs").text
    assert running in jobs and done in jobs and 'data-refresh="1500"' in jobs
    assert f"/ui/bank/jobs/{done}/result" in jobs and f"/ui/bank/jobs/{running}/result" not in jobs
    assert world.subject.uscc in client.get("/ui/bank").text
    assert client.get("/ui/bank/models/mdl_nothing").status_code == 404


# --- the operator page --------------------------------------------------------------------------------------


def test_the_operator_onboards_issues_and_revokes_tokens(
    world: World, page_client: Client, runtime: Runtime
) -> None:
    client = page_client(world.admin)
    home = client.get("/ui/operator")
    assert home.status_code == 200 and "Bank A" in home.text and "database" in home.text
    made = client.post(
        "/ui/operator/orgs",
        data={"csrf": csrf_of(home.text), "name": "Bank C", "role": "bank", "uscc": ""},
        follow_redirects=False,
    )
    # a bank is onboarded with a one-time enrolment code, shown once; the operator cannot mint its token
    assert made.status_code == 201, made.text
    code = re.search(r'id="enrolment-code">(enr_[^<]+)<', made.text)
    assert code and "Bank C" in made.text and "Nothing here yet." in made.text
    assert 'id="issue-token"' not in made.text and 'id="self-credentialed"' in made.text
    with runtime.db.transaction(write=False) as session:
        bank_c_id = session.execute(select(Organization.id).where(Organization.name == "Bank C")).scalar_one()
    forced = client.post(
        f"/ui/orgs/{bank_c_id}/tokens",
        data={
            "csrf": csrf_of(made.text),
            "label": "ops",
            "ttl_days": "3",
            "current_token": world.admin.token,
        },
    )
    assert forced.status_code == 403 and "operator_bounded" in forced.text
    with runtime.db.transaction(write=False) as session:
        seen = runtime.ledger.entries(session, EntryFilter(action="operator.refused"), limit=10)
        assert any(json.loads(e.entry)["detail"]["for_org"] == bank_c_id for e in seen)
        assert session.execute(select(ApiToken.id).where(ApiToken.org_id == bank_c_id)).first() is None
    # Bank C redeems its code itself, once
    anonymous = page_client()
    enrolled = anonymous.post("/v1/enrol", json={"code": code.group(1), "label": "own"})
    assert enrolled.status_code == 201, enrolled.text
    assert anonymous.post("/v1/enrol", json={"code": code.group(1)}).status_code == 401
    bank_c = page_client()
    assert log_in(bank_c, enrolled.json()["token"]["token"]).status_code == 303

    # an organisation the operator does credential (a data provider): issue after re-authentication, revoke
    made = client.post(
        "/ui/operator/orgs",
        data={"csrf": csrf_of(home.text), "name": "Haidong Tax", "role": "data_provider", "uscc": ""},
    )
    assert made.status_code == 201 and 'id="issue-token"' in made.text
    with runtime.db.transaction(write=False) as session:
        tax_id = session.execute(
            select(Organization.id).where(Organization.name == "Haidong Tax")
        ).scalar_one()
    issued = client.post(
        f"/ui/orgs/{tax_id}/tokens",
        data={
            "csrf": csrf_of(made.text),
            "label": "ops",
            "ttl_days": "3",
            "current_token": world.admin.token,
        },
    )
    assert issued.status_code == 201
    secret = re.search(r'id="issued-token">(pps_[^<]+)<', issued.text)
    assert secret
    tax = page_client()
    assert log_in(tax, secret.group(1)).status_code == 303
    with runtime.db.transaction(write=False) as session:
        token_id = session.execute(select(ApiToken.id).where(ApiToken.label == "ops")).scalar_one()
    revoked = client.post(f"/ui/tokens/{token_id}/revoke", data={"csrf": csrf_of(issued.text)})
    assert revoked.status_code == 200 and "Token revoked." in revoked.text
    assert tax.get("/ui/datasets", follow_redirects=False).status_code == 303  # its session ended with it
    dup = client.post(
        "/ui/operator/orgs", data={"csrf": csrf_of(home.text), "name": "Bank C", "role": "bank"}
    )
    assert dup.status_code == 409

    datasets = client.get("/ui/datasets")
    assert "tax" in datasets.text
    lineage = client.get(f"/ui/datasets/{world.dataset_id}")
    assert "dataset.create" in lineage.text and "dataset.upload" in lineage.text
    assert page_client(world.provider).get(f"/ui/datasets/{world.dataset_id}").status_code == 200


def test_labels_switch_to_chinese(world: World, page_client: Client) -> None:
    client = page_client(world.subject)
    zh = client.get("/ui/subject?lang=zh")
    assert "我的授权" in zh.text and 'lang="zh-CN"' in zh.text
    assert "我的授权" in client.get("/ui/subject").text  # kept in a cookie
    assert "My consents" in client.get("/ui/subject?lang=en").text


def test_pages_do_not_change_the_api_surface(world: World, page_client: Client, app: object) -> None:
    schema = page_client().get("/openapi.json").json()
    assert not [p for p in schema["paths"] if p.startswith("/ui") or p == "/"]
    static = page_client().get("/ui/static/verify.js")
    assert static.status_code == 200 and "rootFromInclusion" in static.text
