"""Deadlines and the operator's view, dispute flags in aggregate answers, and nothing sealed on the disk."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from pps.cli import app as cli
from pps.cli import console as cli_console
from pps.infra.storage.tables import Organization, Role, utcnow
from pps.ledger.entry import Actor
from pps.runtime import Runtime
from pps.services.aggregates import AggregateSpec
from tests.conftest import OrgFactory
from tests.pps.governance.objections.conftest import PURPOSE, Flow
from tests.pps.governance.objections.files import png

pytestmark = pytest.mark.db


def file(runtime: Runtime, flow: Flow, fields: list[str], reason: str = "wrong", **kw: object) -> str:
    with runtime.db.transaction() as s:
        subject = s.get(Organization, flow.subject.id)
        assert subject is not None
        return runtime.objections.file(
            s,
            subject=subject,
            dataset_id=flow.datasets["registry"],
            record_key=None,
            fields=fields,
            reason=reason,
            actor=Actor(subject.id, "subject"),
            **kw,  # type: ignore[arg-type]
        ).id


def test_overdue_objections_are_flagged_to_the_operator(
    flow: Flow,
    runtime: Runtime,
    make_org: OrgFactory,
    http: Callable[..., httpx.Client],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    late = file(runtime, flow, ["industry"], now=utcnow() - timedelta(days=16))
    fresh = file(runtime, flow, ["region"])
    admin = http(make_org(Role.platform_admin).token)
    overdue = admin.get("/v1/objections", params={"overdue": "true"}).json()["items"]
    assert [o["id"] for o in overdue] == [late] and overdue[0]["overdue"]
    assert [o["id"] for o in admin.get("/v1/objections", params={"overdue": "false"}).json()["items"]] == [
        fresh
    ]
    mine = {o["id"]: o["overdue"] for o in http(flow.subject.token).get("/v1/objections").json()["items"]}
    assert mine == {late: True, fresh: False}  # the deadline is visible to both sides
    theirs = http(flow.providers["registry"].token).get("/v1/objections", params={"state": "open"}).json()
    assert {o["id"] for o in theirs["items"]} == {late, fresh}

    for name, value in (("PPS_DATABASE_URL", runtime.settings.resolved_database_url),):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PPS_DATA_DIR", str(runtime.settings.data_dir))
    monkeypatch.setattr(cli_console, "width", 400)  # a wide terminal (an xdist worker has none: 80 columns)
    result = CliRunner().invoke(cli, ["admin", "objections", "--overdue"])
    assert result.exit_code == 0, result.output
    assert late in result.output and fresh not in result.output and "OVERDUE" in result.output

    done = http(flow.providers["registry"].token).post(
        f"/v1/objections/{late}/reject", json={"reason": "late"}
    )
    assert done.status_code == 200 and not done.json()["overdue"]  # a late answer is still taken
    with runtime.db.transaction(write=False) as s:
        entry = runtime.ledger.entries(s, runtime_filter("objection.reject"), limit=10)[-1]
    assert b'"late":true' in entry.entry


def runtime_filter(action: str) -> object:
    from pps.ledger.store import EntryFilter

    return EntryFilter(action=action)


def test_an_aggregate_answer_flags_cells_with_disputed_inputs_never_who(flow: Flow, runtime: Runtime) -> None:
    spec = AggregateSpec(
        statistic="count", scope="platform", purpose=PURPOSE, epsilon=0.2, group_by=("size_class",)
    )
    bank = Actor(flow.bank.id, "bank")
    plain = runtime.aggregates.answer(spec, actor=bank)
    assert plain.cells and not any(c.disputed_inputs for c in plain.cells)
    file(runtime, flow, ["size_class"])
    registry = next(t for t in flow.data.provider_tables() if t.name == "registry")
    own = dict(zip(registry.columns["uscc"].tolist(), registry.columns["size_class"].tolist(), strict=True))
    flagged = runtime.aggregates.answer(spec, actor=bank)
    assert {c.group["size_class"]: c.disputed_inputs for c in flagged.cells} == {
        c.group["size_class"]: c.group["size_class"] == own[flow.subject.uscc] for c in flagged.cells
    }
    assert flow.subject.uscc not in str(flagged.as_json())
    # a query that does not read the disputed field is not flagged
    other = AggregateSpec(
        statistic="count", scope="platform", purpose=PURPOSE, epsilon=0.2, group_by=("region",)
    )
    assert not any(c.disputed_inputs for c in runtime.aggregates.answer(other, actor=bank).cells)


def test_what_a_subject_wrote_is_sealed_at_rest(flow: Flow, runtime: Runtime) -> None:
    if not runtime.settings.resolved_database_url.startswith("sqlite"):
        pytest.skip("scans the SQLite file")
    from pps.governance.objections import Evidence

    reason = "SENTINEL-reason-申诉-7c1e"
    picture = png(text=b"SENTINEL-evidence-93ab")
    oid = file(runtime, flow, ["industry"], reason=reason, evidence=Evidence("image/png", picture))
    runtime.db.dispose()
    path = Path(runtime.settings.resolved_database_url.removeprefix("sqlite:///"))
    blob = b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name))
    assert b"SENTINEL" not in blob and reason.encode() not in blob
    with runtime.db.transaction(write=False) as s:
        objection = runtime.objections.get(s, oid)
        assert runtime.objections.sealed(objection).reason == reason
