"""The report in the bank console (form -> the printable view) and in the enterprise portal (its own, free)."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from pps.infra.storage.tables import utcnow
from tests.api.web.conftest import csrf_of, log_in
from tests.pps.services.reports.conftest import OPERATOR, PURPOSE, World


def test_bank_console_and_enterprise_portal(world: World, app: object) -> None:
    bank = TestClient(app)  # type: ignore[arg-type]
    assert log_in(bank, world.bank.token).status_code == 303
    home = bank.get("/ui/bank")
    assert 'id="report-form"' in home.text
    made = bank.post(
        "/ui/bank/reports",
        data={"csrf": csrf_of(home.text), "subject_uscc": world.yes.uscc, "purpose": PURPOSE},
        follow_redirects=True,
    )
    assert made.status_code == 200, made.text
    assert "标准化信用信息报告" in made.text and "<svg" in made.text and "masked" in made.text
    assert world.records["R1"].record_id in made.text
    ent = TestClient(app)  # type: ignore[arg-type]
    assert log_in(ent, world.yes.token).status_code == 303
    assert 'id="own-report"' in ent.get("/ui/subject").text
    own = ent.get("/ui/subject/report")
    assert own.status_code == 200 and "subject" in own.text and world.yes.uscc in own.text


def test_the_portal_grant_narrows_modes(world: World, app: object) -> None:
    ent = TestClient(app)  # type: ignore[arg-type]
    assert log_in(ent, world.no.token).status_code == 303
    home = ent.get("/ui/subject")
    form = {
        "csrf": csrf_of(home.text),
        "bank_org_id": world.bank.id,
        "purpose": PURPOSE,
        "dataset_id": world.datasets["tax"],
        "fields": "taxable_sales, tax_paid",
        "operations": ["report"],
        "valid_until": (utcnow() + timedelta(days=60)).date().isoformat(),
    }
    widened = ent.post("/ui/subject/consents", data={**form, "modes": "taxable_sales=public"})
    assert widened.status_code == 422 and "widen" in widened.text, widened.text[widened.text.find("<main") :][
        :900
    ]
    done = ent.post(
        "/ui/subject/consents", data={**form, "modes": "taxable_sales=aggregate_only"}, follow_redirects=False
    )
    assert done.status_code == 303, done.text
    with world.rt.db.transaction() as s:
        doc = world.rt.reports.report(
            s, subject_uscc=world.no.uscc or "", bank_org_id=world.bank.id, purpose=PURPOSE, actor=OPERATOR
        ).document
    tax = doc["sections"]["consented"]["tax"]
    assert tax["summaries"]["taxable_sales"]["mode"] == "aggregate_only"
    assert all(r["tax_paid"]["mode"] == "masked" and "taxable_sales" not in r for r in tax["rows"])
