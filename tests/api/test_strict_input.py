"""One strict reading of every JSON body at the HTTP edge, and names that show what they are.

* A key named twice is refused (400 ``duplicate_json_key``), nested or not: ``"operation":"score"`` then
  ``"operation":"psi"`` was decided as ``psi`` before; another parser (a signer, an auditor's tool) keeps the
  first. Nothing is decided on a body two readers would read differently.
* A control character (NUL, ESC, C1) or a bidirectional override, embedding or isolate in any key or string of
  any JSON body is refused (422 ``unsafe_text``), naming where it is.
* Names (organisations, datasets, models, trainings, federations) also refuse line breaks, tabs and
  bidirectional marks — through the API and through the operator's CLI, which calls the same services.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from api.middleware import check_json_body
from pps.cli import app as cli_app
from pps.errors import DuplicateJSONKey, UnsafeText
from pps.infra.settings import Settings
from pps.infra.storage.tables import Organization, Role
from pps.infra.text import check_name, check_text
from pps.runtime import Runtime
from tests.conftest import OrgFactory, OrgHandle
from tests.helpers import uscc_for
from tests.pps.data.datasets.conftest import TAX_SCHEMA


@pytest.fixture
def admin(make_org: OrgFactory) -> OrgHandle:
    return make_org(Role.platform_admin)


def orgs(rt: Runtime) -> int:
    with rt.db.transaction(write=False) as s:
        return s.execute(select(func.count()).select_from(Organization)).scalar_one()


def test_a_key_named_twice_is_refused_before_any_route_reads_it(
    runtime: Runtime, make_org: OrgFactory, http: Callable[..., httpx.Client]
) -> None:
    bank = make_org(Role.bank)
    body = (
        f'{{"subjects": ["{uscc_for(1)}"], "fields": {{}}, "purpose": "credit_assessment", '
        '"operation": "score", "operation": "psi"}'
    )
    response = http(bank.token).post(
        "/v1/policy/check", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "duplicate_json_key" and error["details"] == {"key": "operation"}
    assert "'operation' more than once" in error["message"]


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/merge-patch+json", None],
)
def test_nested_duplicates_and_every_json_content_type(
    runtime: Runtime, admin: OrgHandle, http: Callable[..., httpx.Client], content_type: str | None
) -> None:
    before = orgs(runtime)
    body = '{"name": "Bank A", "role": "bank", "meta": {"x": 1, "x": 2}}'
    headers = {"content-type": content_type} if content_type else {}
    response = http(admin.token).post("/v1/orgs", content=body, headers=headers)
    assert response.status_code == 400 and response.json()["error"]["code"] == "duplicate_json_key"
    assert orgs(runtime) == before


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("Bank\u202eA", "RIGHT-TO-LEFT OVERRIDE (U+202E)"),
        ("Bank\u0000A", "NUL (U+0000)"),
        ("Bank \u2066A\u2069", "LEFT-TO-RIGHT ISOLATE (U+2066)"),
        ("\u001b[2JBank", "ESC"),
    ],
)
def test_control_and_bidi_override_characters_are_refused_in_any_json_string(
    runtime: Runtime, admin: OrgHandle, http: Callable[..., httpx.Client], name: str, what: str
) -> None:
    before = orgs(runtime)
    response = http(admin.token).post("/v1/orgs", json={"name": name, "role": "bank"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "unsafe_text" and what in error["message"]
    assert error["details"] == {"field": "body.name"}
    assert orgs(runtime) == before


@pytest.mark.parametrize(
    ("name", "what"),
    [("Bank\nA", "a line feed"), ("Bank\tA", "a tab"), ("Bank\u200fA", "U+200F"), (" Bank", "")],
)
def test_names_refuse_line_breaks_tabs_marks_and_padding(
    runtime: Runtime, admin: OrgHandle, http: Callable[..., httpx.Client], name: str, what: str
) -> None:
    provider = OrgFactory(runtime)(Role.data_provider)
    response = http(provider.token).post(
        "/v1/datasets", json={"name": name, "description": "", "schema": TAX_SCHEMA}
    )
    if what:
        assert response.status_code == 422, response.text
        assert (
            response.json()["error"]["code"] == "unsafe_text" and what in response.json()["error"]["message"]
        )
    else:
        assert response.status_code == 201  # a name is stripped where it is stored, then checked
    created = http(admin.token).post("/v1/orgs", json={"name": name, "role": "bank"})
    assert (created.status_code == 422) == bool(what)


def test_real_names_in_every_script_are_accepted(admin: OrgHandle, http: Callable[..., httpx.Client]) -> None:
    for name in ["青海银行 西宁分行", "ཟི་ལིང་ཚོང་ཁང་", "ئۈرۈمچى سودا بانكىسى", "O'Brien & Söhne (Qinghai)"]:
        response = http(admin.token).post("/v1/orgs", json={"name": name, "role": "bank"})
        assert response.status_code == 201 and response.json()["name"] == name


def test_the_operator_cli_refuses_the_same_names(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {
        "PPS_DATA_DIR": str(settings.data_dir),
        "PPS_DATABASE_URL": settings.resolved_database_url,
        "PPS_ENVIRONMENT": "test",
        "PPS_SECRET_KEY": settings.secret_key.get_secret_value(),
    }.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(cli_app, ["admin", "org", "create", "Bank\u202eA", "--role", "bank"])
    assert result.exit_code == 1 and "RIGHT-TO-LEFT OVERRIDE" in result.output


def test_check_json_body_and_the_text_rules() -> None:
    with pytest.raises(DuplicateJSONKey):
        check_json_body(b'[{"a": 1}, {"b": {"c": 1, "c": 1}}]')
    with pytest.raises(UnsafeText, match=r"body\[1\]\.k"):
        check_json_body(json.dumps(["ok", {"k": "a\u202eb"}]).encode())
    with pytest.raises(UnsafeText, match="a key"):
        check_json_body(json.dumps({"a\x00": 1}).encode())
    check_json_body(b"not json at all")  # the route reports that itself
    check_json_body(json.dumps({"note": "line one\nline two\ttab"}).encode())
    assert check_text("Zeile\nzwei", "note") == "Zeile\nzwei"
    with pytest.raises(UnsafeText):
        check_name("Zeile\nzwei")
