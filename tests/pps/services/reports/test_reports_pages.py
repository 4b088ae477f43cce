"""The report in the bank console (form -> the printable view) and in the enterprise portal (its own, free)."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from pps.infra.storage.tables import utcnow
from tests.api.web.conftest import csrf_of, log_in
from tests.pps.services.reports.conftest import PURPOSE, World


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


def test_the_portal_grant_form_takes_modes(world: World, app: object) -> None:
    """The portal's grant form carries the enterprise's narrowing (field=mode) into the terms its passkey signs
    (issue 24); the narrowing itself is checked at grant (``test_reports.py::test_a_consent_narrows_never_widens``)."""
    ent = TestClient(app)  # type: ignore[arg-type]
    assert log_in(ent, world.no.token).status_code == 303
    home = ent.get("/ui/subject")
    assert 'id="grant-modes"' in home.text
    form = {
        "csrf": csrf_of(home.text),
        "bank_org_id": world.bank.id,
        "purpose": PURPOSE,
        "dataset_id": world.datasets["tax"],
        "fields": "taxable_sales, tax_paid",
        "operations": ["report"],
        "valid_until": (utcnow() + timedelta(days=60)).date().isoformat(),
    }
    bad = ent.post("/ui/subject/consents", data={**form, "modes": "taxable_sales"})
    assert bad.status_code == 422 and "field=mode" in bad.text
    unknown = ent.post("/ui/subject/consents", data={**form, "modes": "taxable_sales=hidden"})
    assert unknown.status_code == 422
    # well-formed: on to the passkey that signs the terms (this enterprise has none yet, so it is told to add one)
    ok = ent.post("/ui/subject/consents", data={**form, "modes": "taxable_sales=aggregate_only"})
    assert "passkey" in ok.text and "field=mode" not in ok.text
