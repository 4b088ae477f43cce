"""Credit repairs and record exclusions rebuilt from the ledger (issue 21, item 2, for issue 18's state): an
application decided, a deadline moved or a reason rewritten by a direct SQL edit is named, and so is a record
exclusion deleted (a repaired record silently counted again) or added without an entry."""

from __future__ import annotations

import datetime as dt
from datetime import timedelta

import pytest
from sqlalchemy import text

from pps.governance.repair import commitment_text
from pps.governance.state import exclusion_id
from pps.ledger.entry import Actor
from pps.runtime import Runtime
from pps_client import Client
from tests.pps.governance.repair.conftest import TODAY, World

pytestmark = pytest.mark.db


def test_a_repair_or_exclusion_edited_outside_the_service_is_named(
    world: World, runtime: Runtime, base_url: str
) -> None:
    r1, r2, r3 = world.records["R1"], world.records["R2"], world.records["R3"]
    assert world.a.uscc and world.b.uscc
    authority = Client(base_url, world.providers["penalties"].token)
    approved = Client(base_url, world.a.token).repairs.apply(
        r1.record_id, commitment_text(world.a.uscc, r1.record_id)
    )
    authority.repairs.approve(approved.id, note="义务已履行")
    b = Client(base_url, world.b.token)
    denied = b.repairs.apply(r2.record_id, commitment_text(world.b.uscc, r2.record_id))
    authority.repairs.deny(denied.id, ["罚款尚未缴纳"])
    b.repairs.object(denied.id, "已缴纳，附缴款书")
    later = dt.datetime.combine(TODAY + timedelta(days=100), dt.time(), dt.UTC)
    with runtime.db.transaction() as s:  # R3's maximum publicity period ends: written down as expired
        assert runtime.repairs.records.sweep(s, actor=Actor(None, "operator", "cli"), now=later) == {
            "expired": 1
        }
    report = runtime.check_state()
    assert report.ok, [d.describe() for d in report.divergences]
    assert report.rows_checked["repair_applications"] == 2
    assert report.rows_checked["record_exclusions"] == 2

    dataset = world.datasets["penalties"]
    repaired, expired = exclusion_id(dataset, r1.record_id), exclusion_id(dataset, r3.record_id)
    with runtime.db.engine.begin() as conn:
        # the repaired record quietly counted again; the expired one re-dated; a record excluded with no entry
        conn.execute(
            text("DELETE FROM record_exclusions WHERE dataset_id = :d AND record_id = :r"),
            {"d": dataset, "r": r1.record_id},
        )
        conn.execute(
            text("UPDATE record_exclusions SET reason = 'repaired' WHERE dataset_id = :d AND record_id = :r"),
            {"d": dataset, "r": r3.record_id},
        )
        conn.execute(
            text(
                "INSERT INTO record_exclusions (dataset_id, record_id, subject_uscc, reason, repair_id, "
                "excluded_at) VALUES (:d, :r, :u, 'repaired', NULL, :t)"
            ),
            {"d": dataset, "r": r2.record_id, "u": world.b.uscc, "t": later.replace(tzinfo=None)},
        )
        # the application under reconsideration decided, its deadline moved, the first denial's reasons rewritten
        conn.execute(
            text("UPDATE repair_applications SET reasons_json = :j WHERE id = :id"),
            {"id": denied.id, "j": '["已核实"]'},
        )
        conn.execute(
            text("UPDATE repair_applications SET state = 'approved' WHERE id = :id"), {"id": denied.id}
        )
        conn.execute(
            text("UPDATE repair_applications SET subject_uscc = :u WHERE id = :id"),
            {"id": approved.id, "u": world.b.uscc},
        )
    got = {
        (d.table, d.row_id, d.column, str(d.ledger), str(d.row)) for d in runtime.check_state().divergences
    }
    assert ("record_exclusions", repaired, "*", "recorded", "None") in got
    assert ("record_exclusions", expired, "reason", "expired", "repaired") in got
    assert ("record_exclusions", exclusion_id(dataset, r2.record_id), "*", "None", "present") in got
    assert ("repair_applications", denied.id, "state", "reconsidering", "approved") in got
    assert any(t == "repair_applications" and i == denied.id and c == "reasons_json" for t, i, c, _, _ in got)
    assert ("repair_applications", approved.id, "subject_uscc", world.a.uscc, world.b.uscc) in got
    assert len(got) == 6, got
