"""Objections rebuilt from the ledger: a dispute closed, or its deadline moved, by a direct SQL edit is named
(``pps audit verify --state``; issue 21, item 2)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from pps.infra.storage.tables import Objection, Organization
from pps.ledger.entry import Actor
from pps.runtime import Runtime
from tests.pps.governance.objections.conftest import Flow
from tests.pps.governance.objections.test_oversight import file

pytestmark = pytest.mark.db


def test_an_objection_closed_or_its_deadline_moved_outside_the_service_is_named(
    flow: Flow, runtime: Runtime
) -> None:
    open_one = file(runtime, flow, ["registered_capital"])
    rejected = file(runtime, flow, ["industry"])
    with runtime.db.transaction() as s:
        provider = s.get(Organization, flow.providers["registry"].id)
        assert provider is not None
        runtime.objections.reject(
            s,
            s.get(Objection, rejected),
            reason="the filing says so",
            actor=Actor(provider.id, "data_provider"),
        )  # type: ignore[arg-type]
    report = runtime.check_state()
    assert report.ok, [d.describe() for d in report.divergences]
    assert report.rows_checked["objections"] == 2
    with runtime.db.transaction(write=False) as s:
        due = s.get(Objection, open_one).due_at  # type: ignore[union-attr]
    with runtime.db.engine.begin() as conn:  # the dispute quietly "resolved", the other's deadline moved
        conn.execute(text("UPDATE objections SET state = 'rejected' WHERE id = :id"), {"id": open_one})
        conn.execute(
            text("UPDATE objections SET due_at = :due WHERE id = :id"),
            {"id": rejected, "due": (due + timedelta(days=30)).replace(tzinfo=None)},
        )
    got = {(d.row_id, d.column, str(d.ledger), str(d.row)) for d in runtime.check_state().divergences}
    assert (open_one, "state", "open", "rejected") in got
    assert any(row_id == rejected and column == "due_at" for row_id, column, _, _ in got)
