"""Typed answers: the API's bodies parse into the shared models (frozen, tolerant of fields a newer server adds),
lists follow their pages, and an answer that is not the API's is refused as such. No server: a mock transport."""

from __future__ import annotations

from typing import Any

import httpx
import pydantic
import pytest

from pps_client import Client, InvalidResponse, ServiceUnavailable
from pps_wire.schemas import ConsentPublic, JobPublic, ModelOut, OrgPublic, Role

ORG = {
    "id": "org_1",
    "name": "Bank A",
    "role": "bank",
    "uscc": None,
    "created_at": "2026-01-01T00:00:00Z",
    "disabled_at": None,
}


def client(routes: dict[str, Any]) -> tuple[Client, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        key = f"{request.method} {request.url.path}"
        got = routes[key]
        body = got(request) if callable(got) else got
        if isinstance(body, httpx.Response):
            return body
        return httpx.Response(200, json=body)

    return Client("http://pps.test", "pps_t", transport=httpx.MockTransport(answer)), seen


def test_lists_follow_every_page_and_come_back_typed() -> None:
    pages = {
        None: {"items": [ORG, {**ORG, "id": "org_2"}], "next_after": "org_2"},
        "org_2": {"items": [{**ORG, "id": "org_3", "role": "auditor"}], "next_after": None},
    }
    c, seen = client({"GET /v1/orgs": lambda r: pages[r.url.params.get("after")]})
    orgs = c.orgs.list(limit=2)
    assert [o.id for o in orgs] == ["org_1", "org_2", "org_3"]
    assert all(isinstance(o, OrgPublic) for o in orgs) and orgs[2].role is Role.auditor
    assert orgs[0].created_at.tzinfo is not None
    assert [r.url.params.get("limit") for r in seen] == ["2", "2"]


def test_answers_are_frozen_and_ignore_fields_a_newer_server_adds() -> None:
    c, _ = client({"GET /v1/orgs/org_1": {**ORG, "added_in_v2": {"anything": 1}}})
    org = c.orgs.get("org_1")
    assert org.name == "Bank A" and not hasattr(org, "added_in_v2")
    with pytest.raises(pydantic.ValidationError):
        org.name = "Bank Z"  # type: ignore[misc]


def test_shapes_that_were_dicts_are_typed() -> None:
    consent = ConsentPublic.model_validate(
        {
            "id": "cns_1",
            "subject_uscc": "91350100M000100Y43",
            "bank_org_id": "org_1",
            "purpose": "loan_underwriting",
            "scope": [{"dataset_id": "ds_1", "fields": ["tax_paid"]}],
            "operations": ["psi"],
            "valid_from": "2026-01-01T00:00:00Z",
            "valid_until": "2027-01-01T00:00:00Z",
            "max_uses": None,
            "uses": 0,
            "state": "active",
            "expired": False,
            "requested_by": "subject",
            "created_at": "2026-01-01T00:00:00Z",
            "decided_at": None,
            "revoked_at": None,
            "decision_note": None,
            "has_receipt": True,
        }
    )
    assert consent.scope[0].dataset_id == "ds_1" and consent.scope[0].fields == ["tax_paid"]
    job = JobPublic.model_validate(
        {
            "id": "job_1",
            "kind": "psi",
            "owner_org_id": "org_1",
            "purpose": None,
            "state": "failed",
            "progress": {"done": 3, "total": 4},
            "params": {},
            "summary": None,
            "error": {"code": "refused", "message": "too small"},
            "created_at": "2026-01-01T00:00:00Z",
            "started_at": None,
            "finished_at": None,
            "expires_at": "2026-01-02T00:00:00Z",
            "result_available": False,
        }
    )
    assert job.finished and job.progress.done == 3 and job.error is not None and job.error.code == "refused"
    model = ModelOut.model_validate(
        {
            "id": "mdl_1",
            "name": "m",
            "kind": "vertical_lr",
            "created_by": "org_1",
            "owners": ["org_1"],
            "purpose": "joint_model_training",
            "features": ["a"],
            "training": {"rows": 3},
            "metrics": {"auc": 0.7, "ks": 0.3, "n": 10, "positives": 2, "cutoff": 0.5},
            "evaluated_by": "org_1",
            "ledger": [1, 2],
            "parts": ["platform"],
            "state": "active",
            "created_at": "2026-01-01T00:00:00+00:00",
        }
    )
    assert model.metrics is not None and model.metrics.auc == 0.7


def test_an_answer_that_is_not_the_apis_is_refused_as_such() -> None:
    c, _ = client(
        {
            "GET /v1/me": httpx.Response(200, text="<html>a login page</html>"),
            "GET /v1/orgs/org_1": {"id": "org_1"},
            "GET /v1/catalog": {"not": "a list"},
            "GET /v1/orgs": {"nope": []},
        }
    )
    with pytest.raises(InvalidResponse, match="not JSON"):
        c.me()
    with pytest.raises(InvalidResponse, match="shape"):
        c.orgs.get("org_1")
    with pytest.raises(InvalidResponse, match="shape"):
        c.datasets.catalog()
    with pytest.raises(InvalidResponse, match="page"):
        c.orgs.list()


def test_requests_are_sent_as_the_apis_models_write_them() -> None:
    c, seen = client({"POST /v1/aggregates": lambda r: httpx.Response(503, json={"nope": 1})})
    with pytest.raises(ServiceUnavailable):  # only the request matters here
        c.aggregates.query(
            "sum",
            purpose="risk_statistics",
            epsilon=0.5,
            dataset="tax",
            field="tax_paid",
            months=("2024-01", "2024-06"),
            bounds=(0.0, 10.0),
            group_by=["industry"],
        )
    import json

    body = json.loads(seen[0].content)
    assert body["months"] == {"from": "2024-01", "to": "2024-06"}  # by alias
    assert body["bounds"] == {"lower": 0.0, "upper": 10.0} and body["group_by"] == ["industry"]
    assert set(body) >= {"statistic", "scope", "purpose", "epsilon", "dataset", "field"}
