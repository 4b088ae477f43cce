"""The demo's household step (9a) on its own, against a live server with production settings (only models the
enclave approved run): every check it makes holds — the bank's own encryption is refused, its 农牧贷 scorecard
is approved on the households' features and scores the household under its separate consent."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from demo.households import run_household_step
from pps.infra.settings import Settings
from pps.infra.storage.tables import Role
from pps.runtime import Runtime
from tests.conftest import OrgFactory

pytestmark = [pytest.mark.slow]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"unsafe_unapproved_models": False})


class _Checks:
    def __init__(self) -> None:
        self.made: list[tuple[str, bool, str]] = []

    def check(self, what: str, ok: bool, detail: str = "") -> None:
        self.made.append((what, ok, detail))


def test_the_household_step_passes_every_check(
    runtime: Runtime, make_org: OrgFactory, base_url: str, settings: Settings
) -> None:
    if not settings.resolved_database_url.startswith("sqlite"):
        pytest.skip("the step reads the SQLite file to show the ID number is not in it")
    admin = make_org(Role.platform_admin, "Qinghai credit platform operator (青信融)")
    bank = make_org(Role.bank, "Bank A")
    checks = _Checks()
    db = Path(settings.resolved_database_url.removeprefix("sqlite:///"))
    run_household_step(
        base_url,
        admin.token,
        bank.token,
        bank.id,
        db,
        checks,
        Console(quiet=True),
        runtime.enclave.vendor_public_key,
    )
    failed = [(what, detail) for what, ok, detail in checks.made if not ok]
    assert not failed, failed
    made = " | ".join(what for what, _ok, _d in checks.made)
    assert "the enclave approves Bank A's 农牧贷 scorecard" in made and "encrypted itself is refused" in made
    assert "the household asks why (PIPL Art. 24)" in made
