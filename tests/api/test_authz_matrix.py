"""Every route declares who may call it; a role × route matrix and a cross-tenant matrix prove the checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from api.app import ROUTERS
from api.deps import declared_roles
from pps.jobs import JobContext, JobOutcome
from pps.ledger.entry import Actor
from pps.runtime import Runtime
from pps.storage.tables import Role
from tests.conftest import OrgFactory, OrgHandle

ROUTES = [r for router in ROUTERS for r in router.routes if isinstance(r, APIRoute)]
ROUTE_IDS = [f"{sorted(r.methods)[0]} {r.path}" for r in ROUTES]
SMALL_SCHEMA = {
    "subject_key": "uscc",
    "columns": [
        {"name": "uscc", "type": "uscc", "sensitivity": "C1"},
        {"name": "amount", "type": "float", "sensitivity": "C2"},
    ],
}
REGISTRY_SCHEMA = {
    "subject_key": "uscc",
    "columns": [
        {"name": "uscc", "type": "uscc", "sensitivity": "C1"},
        {"name": "industry", "type": "string", "sensitivity": "C1"},
    ],
}
SMALL_CSV = b"uscc,amount\n91350100M000100Y43,1.5\n"
BODIES: dict[str, dict[str, Any]] = {
    "POST /v1/orgs": {"name": "__unique__", "role": "bank"},
    "POST /v1/datasets": {"name": "__unique__", "schema": SMALL_SCHEMA},
    "POST /v1/orgs/{org_id}/tokens": {"label": "matrix"},
    "POST /v1/orgs/{org_id}/disable": {"reason": "matrix"},
    "PATCH /v1/datasets/{dataset_id}/aggregates": {"platform_aggregates": True},
}


def test_every_route_declares_exactly_one_guard() -> None:
    assert ROUTES, "no routes found"
    for route in ROUTES:
        assert declared_roles(route) is not None, f"{route.path} declares no guard"


def test_the_openapi_schema_lists_the_roles_of_every_operation(app: FastAPI) -> None:
    schema = app.openapi()
    ops = [op for path in schema["paths"].values() for op in path.values()]
    assert len(ops) == len(ROUTES)
    assert all(op.get("x-pps-roles") for op in ops)


class Party:
    """An organisation with a main token, a spare token (to revoke) and an entry it made."""

    def __init__(self, org: OrgHandle, http: Callable[..., httpx.Client], disposable: OrgHandle) -> None:
        self.org = org
        self.disposable = disposable  # what this party may offboard (nobody offboards themselves)
        self.client = http(org.token)
        spare = self.client.post(f"/v1/orgs/{org.id}/tokens", json={"label": "spare"})
        assert spare.status_code == 201, spare.text
        self.spare_token_id = spare.json()["id"]
        # that issue was made by this organisation, so the entry is its own
        self.own_entry = self.client.get("/v1/audit/mine").json()["items"][-1]["index"]
        self.dataset_id = self.disposable_dataset_id = "ds_missing"
        if org.role is Role.data_provider:
            ids = []
            for name in ("own", "to delete"):
                made = self.client.post("/v1/datasets", json={"name": name, "schema": SMALL_SCHEMA})
                assert made.status_code == 201, made.text
                ids.append(made.json()["id"])
            self.dataset_id, self.disposable_dataset_id = ids

    consents: dict[str, str]
    objections: dict[str, str]
    bodies: dict[str, Any]
    jobs: dict[str, str]

    def fill(self, path: str, method: str = "GET") -> str:
        if method == "DELETE" and "{dataset_id}" in path:
            return path.replace("{dataset_id}", self.disposable_dataset_id)
        if "{consent_id}" in path:
            action = "/" + path.rsplit("/", 1)[1] if path.endswith(("/revoke", "/approve", "/deny")) else ""
            path = path.replace("{consent_id}", self.consents[action])
        if "{objection_id}" in path:
            action = "/" + path.rsplit("/", 1)[1] if path.endswith(("/accept", "/reject")) else ""
            path = path.replace("{objection_id}", self.objections[action])
        if "{job_id}" in path:
            path = path.replace("{job_id}", self.jobs["/cancel" if path.endswith("/cancel") else ""])
        if path.endswith("/disable"):
            return path.replace("{org_id}", self.disposable.id)
        return (
            path.replace("{org_id}", self.org.id)
            .replace("{token_id}", self.spare_token_id)
            .replace("{index}", str(self.own_entry))
            .replace("{dataset_id}", self.dataset_id)
        )


def _matrix_job(ctx: JobContext) -> JobOutcome:
    return JobOutcome(result=b"done", media_type="text/plain", finalize=lambda _s: {"ok": 1})


def _job(runtime: Runtime, org: OrgHandle, *, run: bool) -> str:
    with runtime.db.transaction() as s:
        job_id = runtime.jobs.submit(
            s, kind="matrix", actor=Actor(org.id, org.role.value), purpose=None, params={}
        ).id
    if run:
        runtime.jobs.run(job_id)
    return job_id


@pytest.fixture
def parties(make_org: OrgFactory, http: Callable[..., httpx.Client], runtime: Runtime) -> dict[Role, Party]:
    made = {role: Party(make_org(role), http, make_org(Role.bank)) for role in Role}
    subject, bank = made[Role.subject], made[Role.bank]
    runtime.jobs.register("matrix", _matrix_job)
    for party in made.values():
        party.jobs = {"": _job(runtime, party.org, run=True), "/cancel": _job(runtime, party.org, run=False)}
    terms = consent_terms(made)
    active = [
        subject.client.post("/v1/consents", json={**terms, "bank_org_id": bank.org.id}) for _ in range(2)
    ]
    asked = [
        bank.client.post("/v1/consent-requests", json={**terms, "subject_uscc": subject.org.uscc})
        for _ in range(2)
    ]
    for r in active + asked:
        assert r.status_code == 201, r.text
    consents = {
        "": active[0].json()["id"],
        "/revoke": active[1].json()["id"],
        "/approve": asked[0].json()["id"],
        "/deny": asked[1].json()["id"],
    }
    registry = made[Role.data_provider].client.post(
        "/v1/datasets", json={"name": "registry", "schema": REGISTRY_SCHEMA}
    )
    assert registry.status_code == 201, registry.text
    uploaded = made[Role.data_provider].client.post(
        f"/v1/datasets/{registry.json()['id']}/versions",
        content=b"uscc,industry\n91350100M000100Y43,C\n",
        params={"format": "csv"},
    )
    assert uploaded.status_code == 201, uploaded.text
    scoring = _scoring_body()
    objected, objections = _objections(made)
    enclave_job = _enclave_job_body(runtime)
    for party in made.values():
        party.consents = consents
        party.objections = objections
        party.bodies = {
            "POST /v1/consents": {**terms, "bank_org_id": bank.org.id},
            "POST /v1/consent-requests": {**terms, "subject_uscc": subject.org.uscc},
            "POST /v1/consents/{consent_id}/deny": {"reason": "not now"},
            "POST /v1/psi": {"purpose": "loan_underwriting", "reveal": "size", "request": _psi_request()},
            "POST /v1/aggregates": {
                "scope": "consented",
                "purpose": "loan_underwriting",
                "statistic": "count",
                "dataset": made[Role.data_provider].dataset_id,
                "field": "amount",
                "epsilon": 0.1,
            },
            "POST /v1/scoring": scoring,
            "POST /v1/objections": {"dataset_id": objected, "fields": ["f3"], "reason": "matrix"},
            "POST /v1/objections/{objection_id}/accept": {"corrected": {"f1": 2.0}},
            "POST /v1/objections/{objection_id}/reject": {"reason": "matrix"},
            "POST /v1/enclave/jobs": enclave_job,
            "POST /v1/policy/check": {
                "subjects": [subject.org.uscc],
                "fields": {made[Role.data_provider].dataset_id: ["amount"]},
                "operation": "score",
                "purpose": "loan_underwriting",
            },
        }
    return made


def _scoring_body() -> dict[str, Any]:
    import base64

    from protocols.he_scoring import BankScoringKey

    key = BankScoringKey.create()
    return {
        "purpose": "loan_underwriting",
        "subjects": ["91350100M000100Y43"],
        "context": base64.b64encode(key.public_context_bytes()).decode(),
        "model": base64.b64encode(key.encrypt_model({"industry_c": 1.0}, 0.0).to_bytes()).decode(),
    }


def _enclave_job_body(runtime: Runtime) -> dict[str, Any]:
    """A valid GBDT submission: rows encrypted to a verified quote (the job itself fails later: no data)."""
    import base64
    import os

    from enclave_sim import crypto
    from enclave_sim.platform import expected_measurement
    from enclave_sim.quote import Quote, standard_policy

    nonce = os.urandom(32)
    quote = runtime.enclave.quote(nonce)
    sealed = crypto.encrypt_for_enclave(
        quote,
        standard_policy(measurements=[expected_measurement()], nonce=nonce),
        vendor_key=runtime.enclave.vendor_public_key,
        job="gbdt",
        slot="bank",
        body=b'{"keys": [], "features": {}, "labels": []}',
        output=crypto.OutputPolicy(("metrics",), os.urandom(32)),
    )
    return {
        "purpose": "loan_underwriting",
        "subjects": "all_consented",
        "features": ["industry_c"],
        "quote_hash": Quote.parse(quote).quote_hash.hex(),
        "rows": {
            "enc": base64.b64encode(sealed[:32]).decode(),
            "ciphertext": base64.b64encode(sealed[32:]).decode(),
        },
        "output": {"release": ["metrics"]},
    }


OBJECTED_SCHEMA = {
    "subject_key": "uscc",
    "columns": [
        {"name": "uscc", "type": "uscc", "sensitivity": "C1"},
        *({"name": f, "type": "float", "sensitivity": "C2"} for f in ("amount", "f1", "f2", "f3")),
    ],
}


def _objections(made: dict[Role, Party]) -> tuple[str, dict[str, str]]:
    """A dataset with the subject's record, and its objections: one with evidence, one to accept, one to reject."""
    import base64

    from tests.objections.files import png

    provider, subject = made[Role.data_provider].client, made[Role.subject]
    ds = provider.post("/v1/datasets", json={"name": "objected", "schema": OBJECTED_SCHEMA})
    assert ds.status_code == 201, ds.text
    up = provider.post(
        f"/v1/datasets/{ds.json()['id']}/versions",
        content=f"uscc,amount,f1,f2,f3\n{subject.org.uscc},1,1,1,1\n".encode(),
        params={"format": "csv"},
    )
    assert up.status_code == 201, up.text
    ids = {}
    for action, field in (("", "amount"), ("/accept", "f1"), ("/reject", "f2")):
        body: dict[str, Any] = {"dataset_id": ds.json()["id"], "fields": [field], "reason": "matrix"}
        if not action:
            body["evidence"] = {"media_type": "image/png", "content": base64.b64encode(png()).decode()}
        filed = subject.client.post("/v1/objections", json=body)
        assert filed.status_code == 201, filed.text
        ids[action] = filed.json()["id"]
    return ds.json()["id"], ids


def _psi_request() -> str:
    import base64

    from protocols.psi import PSIClient

    return base64.b64encode(
        PSIClient(["91350100M000100Y43"], reveal_intersection=False).create_request()
    ).decode()


def consent_terms(made: dict[Role, Party]) -> dict[str, Any]:
    from datetime import UTC, datetime, timedelta

    return {
        "purpose": "loan_underwriting",
        "scope": [{"dataset_id": made[Role.data_provider].dataset_id, "fields": ["amount"]}],
        "operations": ["score"],
        "valid_until": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
    }


def call(client: httpx.Client, route: APIRoute, path: str, n: int, bodies: dict[str, Any]) -> httpx.Response:
    method = sorted(route.methods)[0]
    key = f"{method} {route.path}"
    body = BODIES.get(key, bodies.get(key))
    if body is not None and body.get("name") == "__unique__":
        body = {**body, "name": f"matrix object {n}"}
    params: dict[str, Any] | None = {"first": 1, "second": 1} if route.path.endswith("/consistency") else None
    if route.path == "/v1/enclave/quote":
        params = {"nonce": "ab" * 32}
    if route.path.endswith("/versions"):
        return client.request(method, path, content=SMALL_CSV, params={"format": "csv"})
    return client.request(method, path, json=body, params=params)


@pytest.mark.slow
def test_role_route_matrix(parties: dict[Role, Party], http: Callable[..., httpx.Client]) -> None:
    for role in (Role.platform_admin, Role.auditor):  # they read every dataset's and job's metadata by design
        parties[role].dataset_id = parties[Role.data_provider].dataset_id
        parties[role].disposable_dataset_id = parties[Role.data_provider].disposable_dataset_id
        parties[role].jobs = parties[Role.bank].jobs
    anonymous = http()
    failures = []
    n = 0
    for route in ROUTES:
        roles = declared_roles(route)
        assert roles is not None
        for role, party in parties.items():
            n += 1
            r = call(party.client, route, party.fill(route.path, sorted(route.methods)[0]), n, party.bodies)
            allowed = not roles or role in roles
            if allowed and r.status_code not in (200, 201, 202):
                failures.append(
                    f"{role.value} → {route.path}: expected success, got {r.status_code} {r.text}"
                )
            if not allowed and (r.status_code != 403 or r.json()["error"]["code"] != "role_not_allowed"):
                failures.append(f"{role.value} → {route.path}: expected 403, got {r.status_code}")
        r = call(anonymous, route, parties[Role.bank].fill(route.path), n, parties[Role.bank].bodies)
        if roles and r.status_code != 401:
            failures.append(f"anonymous → {route.path}: expected 401, got {r.status_code}")
        if not roles and r.status_code != 200:
            failures.append(f"anonymous → public {route.path}: expected 200, got {r.status_code}")
    assert failures == []


OBJECT_ROUTES = [
    r for r in ROUTES if "{" in r.path and "{consent_id}" not in r.path and "{objection_id}" not in r.path
]
# consents have two parties (subject and bank); tests/api/test_consent_api.py has their tenant matrix;
# objections have two too (subject and provider): tests/objections/test_refusals.py has theirs


@pytest.mark.slow
def test_cross_tenant_matrix(parties: dict[Role, Party], runtime: Runtime) -> None:
    """Each organisation, asking for another organisation's objects, gets 404 — never the object."""
    failures = []
    n = 0
    tenants = [r for r in Role if r is not Role.platform_admin]
    with runtime.db.transaction(write=False) as s:
        size_before = runtime.ledger.size(s)
    for route in OBJECT_ROUTES:
        roles = declared_roles(route) or frozenset()
        for caller_role in tenants:
            if caller_role not in roles:
                continue  # refused by role already (the matrix above)
            for owner_role in Role:
                if owner_role is caller_role:
                    continue
                if caller_role is Role.auditor and route.path.startswith(("/v1/audit/", "/v1/datasets/")):
                    continue  # auditors read every entry and every dataset's metadata by design
                if caller_role is Role.auditor and route.path == "/v1/jobs/{job_id}":
                    continue  # and every job's metadata (never results)
                n += 1
                caller, owner = parties[caller_role], parties[owner_role]
                r = call(caller.client, route, owner.fill(route.path), n, owner.bodies)
                if r.status_code != 404 or r.json()["error"]["code"] != "not_found":
                    failures.append(
                        f"{caller_role.value} → {owner_role.value}'s {route.path}: {r.status_code} {r.text[:200]}"
                    )
    assert failures == []
    with runtime.db.transaction(write=False) as s:
        assert runtime.ledger.size(s) == size_before, "refused requests must not write anything"
    for party in parties.values():  # nobody's spare token was revoked by someone else
        tokens = party.client.get(f"/v1/orgs/{party.org.id}/tokens").json()
        assert all(t["state"] == "active" for t in tokens)
