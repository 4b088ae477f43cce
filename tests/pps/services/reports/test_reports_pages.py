"""The report in the bank console (form -> the printable view) and in the enterprise portal (its own, free)."""

from __future__ import annotations

from fastapi.testclient import TestClient

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
