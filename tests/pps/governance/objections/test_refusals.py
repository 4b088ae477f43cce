"""Bad input gets a clear error and changes nothing; another organisation's objections answer 404."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from pps.infra.storage.tables import Organization, Role
from pps.runtime import Runtime
from tests.conftest import OrgFactory
from tests.pps.governance.objections.conftest import Flow, snapshot
from tests.pps.governance.objections.files import jpeg, pdf, png

pytestmark = pytest.mark.db


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def first_month(flow: Flow, uscc: str) -> str:
    table = next(t for t in flow.data.provider_tables() if t.name == "tax")
    usccs, months = table.columns["uscc"].tolist(), table.columns["month"].tolist()
    return str(next(m for u, m in zip(usccs, months, strict=True) if u == uscc))


def others_award(flow: Flow) -> str:
    table = next(t for t in flow.data.provider_tables() if t.name == "procurement")
    usccs, ids = table.columns["uscc"].tolist(), table.columns["award_id"].tolist()
    return str(next(a for u, a in zip(usccs, ids, strict=True) if u != flow.subject.uscc))


def filing_cases(flow: Flow) -> dict[str, tuple[dict[str, Any], int, str]]:
    tax, registry = flow.datasets["tax"], flow.datasets["registry"]
    month = first_month(flow, flow.subject.uscc)
    ok = {"dataset_id": tax, "record_key": month, "fields": ["taxable_sales"], "reason": "wrong"}
    return {
        "another_subjects_record": (
            {
                **ok,
                "dataset_id": flow.datasets["procurement"],
                "record_key": others_award(flow),
                "fields": ["amount"],
            },
            404,
            "not_found",
        ),
        "a_record_that_does_not_exist": ({**ok, "record_key": "1999-01"}, 404, "not_found"),
        "a_dataset_that_does_not_exist": ({**ok, "dataset_id": "ds_missing"}, 404, "not_found"),
        "a_key_field": ({**ok, "fields": ["month"]}, 422, "invalid_input"),
        "the_subject_key": ({**ok, "fields": ["uscc"]}, 422, "invalid_input"),
        "an_unknown_field": ({**ok, "fields": ["profit"]}, 422, "invalid_input"),
        "no_fields": ({**ok, "fields": []}, 422, "invalid_request"),
        "a_field_twice": ({**ok, "fields": ["tax_paid", "tax_paid"]}, 422, "invalid_input"),
        "no_record_key_where_one_is_needed": ({**ok, "record_key": None}, 422, "invalid_input"),
        "a_record_key_where_none_is": (
            {**ok, "dataset_id": registry, "fields": ["industry"]},
            422,
            "invalid_input",
        ),
        "an_empty_reason": ({**ok, "reason": "   "}, 422, "invalid_request"),
        "an_unknown_body_field": ({**ok, "subject_uscc": flow.other_subject.uscc}, 422, "invalid_request"),
        "mismatched_evidence": (
            {**ok, "evidence": {"media_type": "application/pdf", "content": b64(png())}},
            422,
            "evidence_rejected",
        ),
        "malicious_evidence": (
            {
                **ok,
                "evidence": {"media_type": "application/pdf", "content": b64(pdf(b"<< /S /JavaScript >>"))},
            },
            422,
            "evidence_rejected",
        ),
        "polyglot_evidence": (
            {**ok, "evidence": {"media_type": "image/jpeg", "content": b64(jpeg() + b"<script>")}},
            422,
            "evidence_rejected",
        ),
        "evidence_not_base64": (
            {**ok, "evidence": {"media_type": "image/png", "content": "%%%"}},
            422,
            "evidence_rejected",
        ),
        "oversized_evidence": (
            {**ok, "evidence": {"media_type": "image/png", "content": b64(png() + b"\x00" * (2 << 20))}},
            413,
            "payload_too_large",
        ),
        "a_body_over_the_limit": (
            {**ok, "evidence": {"media_type": "image/png", "content": "A" * (3 << 20)}},
            413,
            "payload_too_large",
        ),
    }


CASES = [
    "another_subjects_record",
    "a_record_that_does_not_exist",
    "a_dataset_that_does_not_exist",
    "a_key_field",
    "the_subject_key",
    "an_unknown_field",
    "no_fields",
    "a_field_twice",
    "no_record_key_where_one_is_needed",
    "a_record_key_where_none_is",
    "an_empty_reason",
    "an_unknown_body_field",
    "mismatched_evidence",
    "malicious_evidence",
    "polyglot_evidence",
    "evidence_not_base64",
    "oversized_evidence",
    "a_body_over_the_limit",
]


def test_bad_filings_are_refused_and_change_nothing(
    flow: Flow, runtime: Runtime, http: Callable[..., httpx.Client]
) -> None:
    client = http(flow.subject.token)
    cases = filing_cases(flow)
    assert sorted(cases) == sorted(CASES)
    before = snapshot(runtime)
    messages = {}
    for name in CASES:
        body, status, code = cases[name]
        r = client.post("/v1/objections", json=body)
        assert r.status_code == status, (name, r.text)
        assert r.json()["error"]["code"] == code, (name, r.text)
        messages[name] = r.json()["error"]["message"]
        assert snapshot(runtime) == before, name
    # someone else's record and no record at all are told apart by nothing but the dataset named
    assert messages["another_subjects_record"].replace(flow.datasets["procurement"], "X") == messages[
        "a_record_that_does_not_exist"
    ].replace(flow.datasets["tax"], "X")
    r = http(flow.bank.token).post("/v1/objections", json=cases["a_key_field"][0])
    assert r.status_code == 403 and snapshot(runtime) == before


def test_a_subject_may_dispute_its_own_c3_field(
    flow: Flow, runtime: Runtime, make_org: OrgFactory, http: Callable[..., httpx.Client]
) -> None:
    court = next(t for t in flow.data.provider_tables() if t.name == "court")
    with runtime.db.transaction(write=False) as session:  # subjects that enrolled a key to sign consent have
        taken = set(session.execute(select(Organization.uscc)).scalars())  # their organisation already
    uscc, case_id = next(
        (u, c)
        for u, c in zip(court.columns["uscc"].tolist(), court.columns["case_id"].tolist(), strict=True)
        if u not in taken
    )
    party = make_org(Role.subject, "a party to a case", uscc=uscc)
    r = http(party.token).post(
        "/v1/objections",
        json={
            "dataset_id": flow.datasets["court"],
            "record_key": case_id,
            "fields": ["amount"],
            "reason": "paid",
        },
    )
    assert r.status_code == 201, r.text
    entry = http(party.token).get("/v1/audit/mine", params={"limit": 500}).json()["items"][-1]["entry"]
    assert entry["action"] == "objection.file"
    assert entry["detail"]["record"] == {"key": "case_id", "value": None}  # a C3 key value stays out
    assert case_id not in str(entry)


def resolution_cases(flow: Flow) -> dict[str, tuple[str, dict[str, Any], int, str]]:
    return {
        "wrong_type": ("accept", {"corrected": {"taxable_sales": "a lot"}}, 422, "invalid_input"),
        "bool_for_a_float": ("accept", {"corrected": {"taxable_sales": True}}, 422, "invalid_input"),
        "infinite": ("accept", {"raw": b'{"corrected": {"taxable_sales": 1e400}}'}, 422, "invalid_input"),
        "a_field_not_disputed": (
            "accept",
            {"corrected": {"taxable_sales": 1.0, "tax_paid": 2.0}},
            422,
            "invalid_input",
        ),
        "a_key_field": (
            "accept",
            {"corrected": {"taxable_sales": 1.0, "month": "2020-01"}},
            422,
            "invalid_input",
        ),
        "nothing": ("accept", {"corrected": {}}, 422, "invalid_input"),
        "no_change": ("accept", {"corrected": {"taxable_sales": "SAME"}}, 422, "invalid_input"),
        "no_reason": ("reject", {"reason": ""}, 422, "invalid_request"),
    }


def test_bad_resolutions_are_refused_and_change_nothing(
    flow: Flow, runtime: Runtime, http: Callable[..., httpx.Client]
) -> None:
    subject = http(flow.subject.token)
    month = first_month(flow, flow.subject.uscc)
    rows = next(d for d in subject.get("/v1/me/records").json() if d["dataset_id"] == flow.datasets["tax"])[
        "rows"
    ]
    current = next(r for r in rows if r["month"] == month)["taxable_sales"]
    filed = subject.post(
        "/v1/objections",
        json={
            "dataset_id": flow.datasets["tax"],
            "record_key": month,
            "fields": ["taxable_sales"],
            "reason": "x",
        },
    ).json()
    before = snapshot(runtime)
    owner = http(flow.providers["tax"].token)
    for name, (action, body, status, code) in resolution_cases(flow).items():
        if body.get("corrected", {}).get("taxable_sales") == "SAME":
            body = {"corrected": {"taxable_sales": current}}
        if "raw" in body:
            r = owner.post(
                f"/v1/objections/{filed['id']}/{action}",
                content=body["raw"],
                headers={"content-type": "application/json"},
            )
        else:
            r = owner.post(f"/v1/objections/{filed['id']}/{action}", json=body)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), (name, r.text)
        assert snapshot(runtime) == before, name
    # another provider resolving it, or anyone else: as if it did not exist
    stranger = http(flow.providers["registry"].token)
    for action, body in (("accept", {"corrected": {"taxable_sales": 1.0}}), ("reject", {"reason": "no"})):
        r = stranger.post(f"/v1/objections/{filed['id']}/{action}", json=body)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found"), r.text
    assert snapshot(runtime) == before


def test_another_organisations_objections_answer_404(
    flow: Flow, runtime: Runtime, http: Callable[..., httpx.Client], make_org: OrgFactory
) -> None:
    """The tenant matrix of the objection routes (their two parties are the subject and the provider)."""
    filed = http(flow.subject.token).post(
        "/v1/objections",
        json={
            "dataset_id": flow.datasets["registry"],
            "fields": ["industry"],
            "reason": "x",
            "evidence": {"media_type": "image/png", "content": b64(png())},
        },
    )
    assert filed.status_code == 201, filed.text
    oid = filed.json()["id"]
    before = snapshot(runtime)
    routes = [
        ("GET", f"/v1/objections/{oid}", None),
        ("GET", f"/v1/objections/{oid}/evidence", None),
        ("POST", f"/v1/objections/{oid}/accept", {"corrected": {"industry": "C"}}),
        ("POST", f"/v1/objections/{oid}/reject", {"reason": "no"}),
    ]
    allowed = {  # who may call each route at all (others get 403 from the role guard)
        f"/v1/objections/{oid}": {Role.subject, Role.data_provider, Role.platform_admin, Role.auditor},
        f"/v1/objections/{oid}/evidence": {Role.subject, Role.data_provider},
        f"/v1/objections/{oid}/accept": {Role.data_provider},
        f"/v1/objections/{oid}/reject": {Role.data_provider},
    }
    strangers = {
        "other subject": (flow.other_subject.token, Role.subject),
        "other provider": (flow.providers["tax"].token, Role.data_provider),
        "the subject (resolving)": (flow.subject.token, Role.subject),
        "bank": (flow.bank.token, Role.bank),
        "auditor": (make_org(Role.auditor).token, Role.auditor),
        "admin": (make_org(Role.platform_admin).token, Role.platform_admin),
    }
    failures = []
    for who, (token, role) in strangers.items():
        client = http(token)
        for method, path, body in routes:
            r = client.request(method, path, json=body)
            if role not in allowed[path]:
                expected = (403, "role_not_allowed")
            elif role in (Role.platform_admin, Role.auditor) or (
                who.startswith("the subject") and method == "GET"
            ):
                expected = (200, None)  # oversight reads; the subject reads its own
            else:
                expected = (404, "not_found")
            got = (r.status_code, r.json()["error"]["code"] if r.status_code >= 400 else None)
            if got != expected:
                failures.append(f"{who} {method} {path}: {got} != {expected}")
        listed = client.get("/v1/objections")
        stranger = role in (Role.subject, Role.data_provider) and who != "the subject (resolving)"
        if stranger and listed.json()["items"] != []:
            failures.append(f"{who} lists another's objection")
    assert failures == []
    assert snapshot(runtime)[1:] == before[1:]  # only the subject's own evidence reading was written
