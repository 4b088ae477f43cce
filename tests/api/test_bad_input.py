"""Bad input gets a clear 4xx with a machine-readable code, and changes nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select, update

from pps.infra.storage.tables import ApiToken, Organization, Role, utcnow
from pps.runtime import Runtime
from tests.conftest import OrgFactory, OrgHandle
from tests.helpers import uscc_for


@pytest.fixture
def admin(make_org: OrgFactory) -> OrgHandle:
    return make_org(Role.platform_admin)


def state(rt: Runtime) -> tuple[int, int, int]:
    with rt.db.transaction(write=False) as s:
        orgs = s.execute(select(func.count()).select_from(Organization)).scalar_one()
        tokens = s.execute(select(func.count()).select_from(ApiToken)).scalar_one()
        return orgs, tokens, rt.ledger.size(s)


@pytest.fixture
def unchanged(runtime: Runtime, admin: OrgHandle) -> Iterator[None]:
    before = state(runtime)
    yield
    assert state(runtime) == before, "a refused request changed the database"


def expect(r: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code, err
    assert err["message"]
    assert err["request_id"] == r.headers["x-request-id"]
    return err


@pytest.mark.usefixtures("unchanged")
class TestRefusedRequestsChangeNothing:
    def test_malformed_json(self, http: Callable[..., httpx.Client], admin: OrgHandle) -> None:
        r = http(admin.token).post(
            "/v1/orgs", content=b'{"name": "x", "role": ', headers={"content-type": "application/json"}
        )
        expect(r, 400, "malformed_json")

    def test_unknown_field(self, http: Callable[..., httpx.Client], admin: OrgHandle) -> None:
        r = http(admin.token).post("/v1/orgs", json={"name": "x", "role": "bank", "is_admin": True})
        err = expect(r, 422, "invalid_request")
        assert "is_admin" in str(err["details"])

    @pytest.mark.parametrize(
        "body",
        [
            {"name": 5, "role": "bank"},
            {"name": "x", "role": "emperor"},
            {"name": "", "role": "bank"},
            {"role": "bank"},
            [],
            "just a string",
        ],
    )
    def test_wrong_types(self, http: Callable[..., httpx.Client], admin: OrgHandle, body: object) -> None:
        expect(http(admin.token).post("/v1/orgs", json=body), 422, "invalid_request")

    def test_invalid_uscc(self, http: Callable[..., httpx.Client], admin: OrgHandle) -> None:
        bad = uscc_for(1)[:17] + ("0" if uscc_for(1)[17] != "0" else "1")
        err = expect(
            http(admin.token).post("/v1/orgs", json={"name": "E", "role": "subject", "uscc": bad}),
            422,
            "invalid_uscc",
        )
        assert "check character" in str(err["message"])

    def test_subject_without_uscc(self, http: Callable[..., httpx.Client], admin: OrgHandle) -> None:
        expect(
            http(admin.token).post("/v1/orgs", json={"name": "E", "role": "subject"}), 422, "invalid_input"
        )

    def test_uscc_on_a_bank(self, http: Callable[..., httpx.Client], admin: OrgHandle) -> None:
        body = {"name": "B", "role": "bank", "uscc": uscc_for(2)}
        expect(http(admin.token).post("/v1/orgs", json=body), 422, "invalid_input")

    def test_duplicate_name(self, http: Callable[..., httpx.Client], admin: OrgHandle) -> None:
        body = {"name": admin.name, "role": "bank"}
        expect(http(admin.token).post("/v1/orgs", json=body), 409, "conflict")

    def test_oversized_body_by_content_length(
        self, http: Callable[..., httpx.Client], admin: OrgHandle
    ) -> None:
        big = b'{"name": "' + b"x" * (2 << 20) + b'", "role": "bank"}'
        r = http(admin.token).post("/v1/orgs", content=big, headers={"content-type": "application/json"})
        expect(r, 413, "payload_too_large")

    def test_oversized_body_streamed_without_length(
        self, http: Callable[..., httpx.Client], admin: OrgHandle
    ) -> None:
        def chunks() -> Iterator[bytes]:
            yield b'{"name": "'
            for _ in range(40):
                yield b"x" * 65536
            yield b'", "role": "bank"}'

        r = http(admin.token).post("/v1/orgs", content=chunks(), headers={"content-type": "application/json"})
        expect(r, 413, "payload_too_large")

    @pytest.mark.parametrize(
        ("header", "code"),
        [
            (None, "unauthenticated"),
            ("Basic dXNlcjpwYXNz", "unauthenticated"),
            ("Bearer", "unauthenticated"),
            ("Bearer not-a-token", "invalid_token"),
            ("Bearer pps_" + "A" * 43, "invalid_token"),
            ("Bearer pps_" + "A" * 500, "invalid_token"),
        ],
    )
    def test_bad_credentials(self, base_url: str, header: str | None, code: str) -> None:
        headers = {"Authorization": header} if header else {}
        with httpx.Client(base_url=base_url, headers=headers) as c:
            err = expect(c.post("/v1/orgs", json={"name": "x", "role": "bank"}), 401, code)
        assert err["message"]

    def test_expired_token(
        self, runtime: Runtime, http: Callable[..., httpx.Client], admin: OrgHandle
    ) -> None:
        with runtime.db.transaction() as s:
            s.execute(
                update(ApiToken)
                .where(ApiToken.id == admin.token_id)
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )
        err = expect(
            http(admin.token).post("/v1/orgs", json={"name": "x", "role": "bank"}), 401, "token_expired"
        )
        assert "expired at" in str(err["message"])

    def test_page_size_limits(self, http: Callable[..., httpx.Client], admin: OrgHandle) -> None:
        # over the API's bound of 1000, then over this server's configured page size
        expect(http(admin.token).get("/v1/orgs", params={"limit": 100_000}), 422, "invalid_request")
        expect(http(admin.token).get("/v1/orgs", params={"limit": 800}), 422, "invalid_input")
        expect(http(admin.token).get("/v1/orgs", params={"limit": 0}), 422, "invalid_request")

    def test_unknown_route_and_method(self, http: Callable[..., httpx.Client], admin: OrgHandle) -> None:
        expect(http(admin.token).get("/v1/nothing-here"), 404, "not_found")
        expect(http(admin.token).put("/v1/orgs"), 405, "method_not_allowed")

    def test_out_of_range_numbers_and_times(
        self, http: Callable[..., httpx.Client], admin: OrgHandle
    ) -> None:
        c = http(admin.token)
        expect(c.get("/v1/audit/entries/" + "9" * 25), 422, "invalid_request")
        expect(c.get("/v1/audit/entries", params={"after": 10**30}), 422, "invalid_request")
        expect(
            c.get("/v1/audit/entries", params={"since": "0001-01-01T00:00:00+01:00"}), 422, "invalid_input"
        )
        expect(c.get("/v1/audit/consistency", params={"first": 1, "second": 10**20}), 422, "invalid_request")

    def test_unknown_ids(self, http: Callable[..., httpx.Client], admin: OrgHandle) -> None:
        c = http(admin.token)
        expect(c.get("/v1/orgs/org_missing"), 404, "not_found")
        expect(c.delete("/v1/tokens/tok_missing"), 404, "not_found")
        expect(c.get("/v1/audit/entries/999999"), 404, "not_found")
        expect(c.get("/v1/audit/entries/-1"), 404, "not_found")
        expect(c.get("/v1/audit/consistency", params={"first": 5, "second": 2}), 400, "invalid_proof_request")


def test_revoked_token(runtime: Runtime, http: Callable[..., httpx.Client], make_org: OrgFactory) -> None:
    bank = make_org(
        Role.data_provider
    )  # a provider: the operator may revoke its tokens (not a bank's, issue 24)
    c = http(bank.token)
    assert c.get("/v1/me").status_code == 200
    assert c.delete(f"/v1/tokens/{bank.token_id}").status_code == 200
    expect(c.get("/v1/me"), 401, "token_revoked")
    before = state(runtime)
    admin = make_org(Role.platform_admin)
    expect(http(admin.token).delete(f"/v1/tokens/{bank.token_id}"), 409, "conflict")
    assert state(runtime)[0] == before[0] + 1  # only the admin made above


def test_request_ids_are_echoed_and_recorded(
    runtime: Runtime, http: Callable[..., httpx.Client], admin: OrgHandle
) -> None:
    r = http(admin.token).post(
        "/v1/orgs", json={"name": "Traced bank", "role": "bank"}, headers={"X-Request-ID": "trace-123"}
    )
    assert r.status_code == 201
    assert r.headers["x-request-id"] == "trace-123"
    r2 = http(admin.token).get("/v1/me", headers={"X-Request-ID": "bad id with spaces"})
    assert r2.headers["x-request-id"] != "bad id with spaces"
    with runtime.db.transaction(write=False) as s:
        last = runtime.ledger.entry(s, runtime.ledger.size(s) - 1)
    assert b'"request_id":"trace-123"' in last.entry


def test_an_unexpected_error_is_a_500_and_the_service_lives_on(
    runtime: Runtime, http: Callable[..., httpx.Client], admin: OrgHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_a: object, **_k: object) -> None:
        raise RuntimeError("disk on fire")

    before = state(runtime)
    monkeypatch.setattr(runtime.identity, "create_org", boom)
    r = http(admin.token).post("/v1/orgs", json={"name": "x", "role": "bank"})
    err = expect(r, 500, "internal_error")
    assert "disk on fire" not in r.text  # no internals leak
    assert err["request_id"]
    monkeypatch.undo()
    assert state(runtime) == before
    assert http(admin.token).get("/v1/me").status_code == 200


def test_health_and_readiness(http: Callable[..., httpx.Client]) -> None:
    assert http().get("/healthz").json() == {"status": "ok"}
    ready = http().get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "schema": "ok", "keys": "ok", "state": "ok"}


def test_a_busy_database_is_a_503_that_changes_nothing(
    runtime: Runtime, http: Callable[..., httpx.Client], admin: OrgHandle, tmp_path: object
) -> None:
    """SQLite: another writer holds the lock past the busy timeout; the request fails cleanly, 503."""
    import sqlite3

    if not runtime.db.is_sqlite:
        pytest.skip("SQLite's database-wide write lock")
    runtime.db.engine.dispose()
    from pps.infra.storage.db import Database

    fast = Database(runtime.settings.resolved_database_url, busy_timeout_ms=200)
    runtime.db.engine, runtime.db._read, runtime.db._write = fast.engine, fast._read, fast._write
    before = state(runtime)
    holder = sqlite3.connect(runtime.settings.resolved_database_url.removeprefix("sqlite:///"))
    holder.execute("BEGIN IMMEDIATE")
    try:
        r = http(admin.token).post("/v1/orgs", json={"name": "Blocked bank", "role": "bank"})
    finally:
        holder.rollback()
        holder.close()
    err = expect(r, 503, "busy")
    assert "retry" in str(err["message"]) and r.headers["retry-after"] == "2"
    assert state(runtime) == before
