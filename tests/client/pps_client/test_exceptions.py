"""The exception tree: every error the service can answer lands in one class, chosen in one place; failures to
reach the service say what to do. No server: the answers are played by an httpx mock transport."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import pps_client
from pps_client import (
    APIError,
    AuthenticationError,
    BudgetExhausted,
    Client,
    Conflict,
    Gone,
    InvalidRequest,
    JobFailed,
    JobTimeout,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    PPSClientError,
    RateLimited,
    Refused,
    RequestTimeout,
    ServerError,
    ServiceUnavailable,
    TransportError,
    VerificationError,
)
from pps_client._exceptions import api_error, error_class
from pps_wire import errors as wire
from pps_wire.envelope import error_body

Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler) -> Client:
    return Client("http://pps.test", "pps_token", transport=httpx.MockTransport(handler))


def answering(status: int, code: str, message: str = "no", **details: Any) -> Client:
    body = error_body(code, message, "req-42", details or None)
    return client(lambda _request: httpx.Response(status, json=body))


# --- the tree ---------------------------------------------------------------------------------------------


def test_every_public_exception_is_a_pps_client_error() -> None:
    public = [getattr(pps_client, n) for n in pps_client.__all__]
    errors = [e for e in public if isinstance(e, type) and issubclass(e, BaseException)]
    assert len(errors) >= 20
    assert all(issubclass(e, PPSClientError) for e in errors)
    assert issubclass(RequestTimeout, TransportError) and issubclass(BudgetExhausted, Refused)
    assert issubclass(Refused, PermissionDenied) and issubclass(ServiceUnavailable, ServerError)
    assert not issubclass(VerificationError, APIError) and not issubclass(TransportError, APIError)


# --- the mapping, in one place --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (401, "token_expired", AuthenticationError),
        (401, "invalid_token", AuthenticationError),
        (403, "role_not_allowed", PermissionDenied),
        (403, "refused", Refused),
        (403, "budget_exhausted", BudgetExhausted),
        (403, "output_policy_violation", Refused),
        (404, "not_found", NotFound),
        (410, "gone", Gone),
        (409, "conflict", Conflict),
        (422, "invalid_uscc", InvalidRequest),
        (422, "upload_rejected", InvalidRequest),
        (400, "malformed_json", InvalidRequest),
        (413, "payload_too_large", PayloadTooLarge),
        (429, "rate_limited", RateLimited),
        (503, "enclave_unavailable", ServiceUnavailable),
        (500, "ledger_integrity_error", ServerError),
        (400, "invalid_proof_request", InvalidRequest),
    ],
)
def test_each_code_lands_in_its_class(status: int, code: str, expected: type[APIError]) -> None:
    with pytest.raises(expected) as raised:
        answering(status, code, "what happened; what to do", problems=[1]).me()
    err = raised.value
    assert type(err) is expected
    assert (err.status, err.code, err.message, err.request_id) == (
        status,
        code,
        "what happened; what to do",
        "req-42",
    )
    assert err.details == {"problems": [1]}
    assert str(err) == f"what happened; what to do [{code}]"


def test_every_code_lands_where_its_status_says() -> None:
    """For every code of the shared hierarchy, at the status the server's one mapping gives it
    (``api/errors.py``), the SDK's class agrees with that status: a 404 is a NotFound, a 503 a
    ServiceUnavailable, and so on — never a bare APIError."""
    from api.errors import STATUS

    by_status = {400: InvalidRequest, 401: AuthenticationError, 403: PermissionDenied, 404: NotFound}
    by_status |= {409: Conflict, 410: Gone, 413: PayloadTooLarge, 422: InvalidRequest, 429: RateLimited}
    by_status |= {500: ServerError, 503: ServiceUnavailable}
    for code, cls in wire.CODES.items():
        status = next((STATUS[c] for c in cls.__mro__ if c in STATUS), 500)
        mapped = error_class(code, status)
        assert issubclass(mapped, by_status[status]), (code, status, mapped)


def test_a_code_this_sdk_does_not_know_falls_back_on_the_status() -> None:
    assert error_class("secagg_wrong_stage", 409) is Conflict  # defined by protocols.secagg, not the wire
    assert error_class("invalid_he_context", 422) is InvalidRequest
    assert error_class("something_new", 418) is APIError
    assert error_class("something_new", 502) is ServerError


def test_an_answer_without_an_envelope_keeps_the_status_and_the_text() -> None:
    c = client(lambda _r: httpx.Response(502, text="<html>Bad gateway</html>"))
    with pytest.raises(ServerError) as raised:
        c.me()
    assert raised.value.code == "http_502" and "Bad gateway" in raised.value.message
    err = api_error(404, b"")
    assert isinstance(err, NotFound) and err.message == "HTTP 404"


def test_rate_limited_says_when_to_retry() -> None:
    with pytest.raises(RateLimited) as raised:
        answering(429, "rate_limited", "slow down", retry_after_s=12.5).me()
    assert raised.value.retry_after == 12.5


# --- the service cannot be reached ----------------------------------------------------------------------------


def test_a_refused_connection_is_a_transport_error_that_says_what_to_do() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(TransportError) as raised:
        client(refuse).me()
    assert not isinstance(raised.value, RequestTimeout)
    assert raised.value.url == "http://pps.test"
    assert "cannot reach the PPS service at http://pps.test (connection refused)" in raised.value.message
    assert "--url / PPS_URL" in raised.value.message


def test_a_timeout_is_a_request_timeout() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(RequestTimeout, match="did not answer GET /v1/me within 30 s"):
        client(slow).me()


def test_a_real_refused_port_is_one_transport_error() -> None:
    with Client("http://127.0.0.1:9", "pps_x", timeout=5) as unreachable, pytest.raises(TransportError):
        unreachable.me()


# --- jobs -----------------------------------------------------------------------------------------------------


def job(state: str, error: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "id": "job_1",
        "kind": "score",
        "owner_org_id": "org_b",
        "purpose": "loan_underwriting",
        "state": state,
        "progress": {"done": 1, "total": 2},
        "params": {},
        "summary": None,
        "error": error,
        "created_at": "2026-01-01T00:00:00Z",
        "started_at": None,
        "finished_at": None,
        "expires_at": "2026-01-02T00:00:00Z",
        "result_available": state == "succeeded",
    }


def test_a_failed_job_raises_its_code_and_a_slow_one_a_timeout() -> None:
    failing = client(
        lambda _r: httpx.Response(200, json=job("failed", {"code": "refused", "message": "cohort"}))
    )
    with pytest.raises(JobFailed) as raised:
        failing.jobs.wait("job_1", poll=0.01)
    assert raised.value.code == "refused" and raised.value.job_id == "job_1"
    seen: list[int] = []
    running = client(lambda _r: httpx.Response(200, json=job("running")))
    with pytest.raises(JobTimeout, match="job_1 did not finish"):
        running.jobs.wait(
            "job_1", timeout=0.05, poll=0.01, on_progress=lambda j: seen.append(j.progress.done)
        )
    assert seen and set(seen) == {1}
    with pytest.raises(ValueError, match="positive"):
        running.jobs.wait("job_1", timeout=0)


def test_the_token_is_sent_and_bad_arguments_are_refused_before_anything_is_sent() -> None:
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(
            200,
            json={
                "org": {
                    "id": "org_1",
                    "name": "Bank A",
                    "role": "bank",
                    "uscc": None,
                    "created_at": "2026-01-01T00:00:00Z",
                    "disabled_at": None,
                },
                "token_id": "tok_1",
            },
        )

    c = client(record)
    assert c.me().org.name == "Bank A"
    assert sent[0].headers["authorization"] == "Bearer pps_token"
    with pytest.raises(ValueError, match="epsilon"):
        c.aggregates.query("count", purpose="risk_statistics", epsilon=-1)
    with pytest.raises(ValueError, match="customers\\[1\\]"):
        c.psi.run(["91350100M000100Y43", "not a uscc"], purpose="loan_underwriting")
    with pytest.raises(ValueError, match="32 bytes"):
        c.enclave.quote(b"short")
    with pytest.raises(ValueError, match="http"):
        Client("pps.test")
    assert len(sent) == 1
    assert json.loads(sent[0].content or b"{}") == {}
