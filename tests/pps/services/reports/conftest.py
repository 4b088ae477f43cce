"""A platform with every report source, dishonesty records dated from today, and two enterprises: ``yes`` (it
consented to the bank's report and queries over its tax, social-insurance and utility history) and ``no``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from models.synth import PlatformData
from pps.governance.consent import Terms
from pps.infra.storage.tables import Consent, Organization, Role, utcnow
from pps.ledger.entry import Actor
from pps.runtime import Runtime
from tests.conftest import OrgFactory, OrgHandle
from tests.helpers import signed
from tests.pps.governance.repair.conftest import Rec, base_data, build_records  # noqa: F401 (fixture)
from tests.pps.services.scoring.conftest import upload_tables

PURPOSE = "loan_underwriting"
OPERATOR = Actor(None, "operator", "cli")
SOURCES = ("registry", "tax", "social_insurance", "utilities", "court", "penalties")


@dataclass
class World:
    rt: Runtime
    data: PlatformData
    providers: dict[str, OrgHandle]
    datasets: dict[str, str]
    yes: OrgHandle
    """consented; holds R1 (repairable) and R4"""
    no: OrgHandle
    """no consent; holds R2"""
    bank: OrgHandle
    records: dict[str, Rec]
    consent_id: str


def grant(
    rt: Runtime,
    bank_id: str,
    uscc: str,
    datasets: dict[str, str],
    modes: dict[str, str] | None = None,
    max_uses: int | None = None,
) -> str:
    scope = [
        {
            "dataset_id": datasets["tax"],
            "fields": ["taxable_sales", "tax_paid", "arrears"],
            "modes": modes or {},
        },
        {"dataset_id": datasets["social_insurance"], "fields": ["headcount", "contributions"]},
        {"dataset_id": datasets["utilities"], "fields": ["electricity_kwh", "water_m3", "arrears"]},
        {"dataset_id": datasets["penalties"], "fields": ["fine_paid_on", "tax_arrears"]},
    ]
    with rt.db.transaction() as s:
        bank = s.get(Organization, bank_id)
        assert bank is not None
        terms = Terms(
            purpose=PURPOSE,
            scope=scope,
            operations=["report", "query"],
            valid_until=utcnow() + timedelta(days=30),
            max_uses=max_uses,
        )
        c: Consent = rt.consents.request(s, bank=bank, subject_uscc=uscc, terms=terms, actor=OPERATOR)
        rt.consents.approve(s, c, signed=signed(rt, s, c), actor=OPERATOR)
        return c.id


@pytest.fixture
def world(runtime: Runtime, make_org: OrgFactory, base_data: PlatformData, tmp_path: Path) -> World:  # noqa: F811
    data, recs, (a, b, _c, _d) = build_records(base_data)
    providers: dict[str, OrgHandle] = {}
    tables = [t for t in data.provider_tables() if t.name in SOURCES]
    datasets = upload_tables(runtime, make_org, tables, tmp_path, providers)
    yes = make_org(Role.subject, "Enterprise Yes", uscc=a)
    no = make_org(Role.subject, "Enterprise No", uscc=b)
    bank = make_org(Role.bank, "Bank A")
    cid = grant(runtime, bank.id, a, datasets)
    return World(runtime, data, providers, datasets, yes, no, bank, recs, cid)
