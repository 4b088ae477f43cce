"""A platform whose dishonesty records are written for the repair tests, dated from today, with tax data that
shows one enterprise's arrears cleared; a bank with consents over the records; aggregate noise switchable off."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from models.synth import PlatformData, Table, generate
from pps.governance.consent import Terms
from pps.infra.settings import Settings
from pps.infra.storage.tables import (
    LedgerEntry,
    Organization,
    RecordExclusion,
    RepairApplication,
    RepairNotice,
    RepairProof,
    Role,
    utcnow,
)
from pps.ledger.entry import Actor
from pps.runtime import Runtime
from tests.conftest import OrgFactory, OrgHandle
from tests.helpers import signed
from tests.pps.services.scoring.conftest import upload_tables

PURPOSE = "loan_underwriting"
OPERATOR = Actor(None, "operator", "cli")
N = 80
TODAY = utcnow().date()


def _months_back(day: dt.date, months: int) -> str:
    m = day.year * 12 + day.month - 1 - months
    return f"{m // 12:04d}-{m % 12 + 1:02d}"


@dataclass(frozen=True)
class Rec:
    uscc: str
    record_id: str
    kind: str
    authority: str
    decided: dt.date
    grade: str
    min_m: int
    max_m: int
    fine: float | None = None
    paid: dt.date | None = None
    arrears: float | None = None


@dataclass
class World:
    data: PlatformData
    providers: dict[str, OrgHandle]
    datasets: dict[str, str]
    a: OrgHandle
    """its fine paid and tax arrears cleared: R1 can be repaired; R4 is too recent"""
    b: OrgHandle
    """its fine unpaid: R2 is denied"""
    c: OrgHandle
    """a minor record R3 that expires by itself"""
    d: OrgHandle
    """disputes a tax value the provider cannot verify"""
    bank: OrgHandle
    consented: list[str]
    records: dict[str, Rec]


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    # cohorts of one: the aggregate in these tests is about a handful of records, not about output controls
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        environment="test",
        secret_key="test-secret-key-that-is-long-enough-0123456789",
        checkpoint_interval_seconds=0,
        psi_workers=1,
        unsafe_unapproved_models=True,  # as the shared fixture: these tests are about records, not approval
        aggregate_min_cohort_size=1,
        aggregate_max_epsilon=10,
        aggregate_default_budget=100,
    )


@pytest.fixture(scope="session")
def base_data() -> PlatformData:
    return generate(N, 1818, start=_months_back(TODAY, 24))


def _filed_last_month(data: PlatformData) -> list[str]:
    last = _months_back(TODAY, 1)
    tax = data.tax.columns
    return sorted({u for u, m in zip(tax["uscc"].tolist(), tax["month"].tolist(), strict=True) if m == last})


def build_records(data: PlatformData) -> tuple[PlatformData, dict[str, Rec], list[str]]:
    a, b, c, d = _filed_last_month(data)[:4]
    t = TODAY
    recs = {
        "R1": Rec(a, "苏税罚〔2026〕101号", "administrative_penalty", "tax", t - timedelta(days=150), "general", 3, 12,
                  fine=5000.0, paid=t - timedelta(days=140), arrears=2000.0),
        "R4": Rec(a, "苏市监异〔2026〕7号", "abnormal_operation", "market_regulation", t - timedelta(days=30),
                  "general", 3, 12),
        "R2": Rec(b, "苏环罚〔2026〕33号", "administrative_penalty", "environment", t - timedelta(days=120),
                  "general", 3, 12, fine=8000.0),
        "R3": Rec(c, "苏市监罚〔2026〕55号", "administrative_penalty", "market_regulation", t - timedelta(days=45),
                  "minor", 0, 3, fine=500.0, paid=t - timedelta(days=40)),
    }  # fmt: skip
    rows = list(recs.values())
    pen = data.penalties
    assert pen is not None
    columns = {
        "uscc": np.array([r.uscc for r in rows], dtype=object),
        "record_id": np.array([r.record_id for r in rows], dtype=object),
        "kind": np.array([r.kind for r in rows], dtype=object),
        "authority": np.array([r.authority for r in rows], dtype=object),
        "decided_on": np.array([r.decided for r in rows], dtype="datetime64[D]"),
        "conduct_ended_on": np.array([r.decided - timedelta(days=20) for r in rows], dtype="datetime64[D]"),
        "grade": np.array([r.grade for r in rows], dtype=object),
        "min_publicity_months": np.array([r.min_m for r in rows], dtype=np.int64),
        "max_publicity_months": np.array([r.max_m for r in rows], dtype=np.int64),
        "fine_amount": np.array([np.nan if r.fine is None else r.fine for r in rows]),
        "fine_paid_on": np.array([r.paid if r.paid else "NaT" for r in rows], dtype="datetime64[D]"),
        "tax_arrears": np.array([np.nan if r.arrears is None else r.arrears for r in rows]),
    }
    penalties = Table("penalties", pen.provider, pen.schema, columns)
    # the tax data shows A's arrears from the decision month, cleared two months later
    tax = data.tax.columns
    decided_month = recs["R1"].decided.isoformat()[:7]
    cleared_month = _months_back(recs["R1"].decided, -2)
    arrears = np.zeros(len(tax["uscc"]))
    for i, (u, m) in enumerate(zip(tax["uscc"].tolist(), tax["month"].tolist(), strict=True)):
        if u == a and decided_month <= m < cleared_month:
            arrears[i] = 2000.0
    new_tax = dataclasses.replace(data.tax, columns={**tax, "arrears": arrears})
    return dataclasses.replace(data, penalties=penalties, tax=new_tax), recs, [a, b, c, d]


def consent_all(rt: Runtime, bank_id: str, usccs: list[str], datasets: dict[str, str]) -> None:
    scope = [
        {"dataset_id": datasets["registry"], "fields": ["*"]},
        {"dataset_id": datasets["tax"], "fields": ["taxable_sales", "tax_paid", "arrears"]},
        {"dataset_id": datasets["penalties"], "fields": ["*"]},
    ]
    with rt.db.transaction() as s:
        bank = s.get(Organization, bank_id)
        assert bank is not None
        for uscc in usccs:
            terms = Terms(
                purpose=PURPOSE,
                scope=scope,
                operations=["score", "aggregate"],
                valid_until=utcnow() + timedelta(days=30),
                granularity="score",  # these tests read scores back; issue 17's default for the purpose is a grade
            )
            c = rt.consents.request(s, bank=bank, subject_uscc=uscc, terms=terms, actor=OPERATOR)
            rt.consents.approve(s, c, signed=signed(rt, s, c), actor=OPERATOR)


@pytest.fixture
def world(runtime: Runtime, make_org: OrgFactory, base_data: PlatformData, tmp_path: Path) -> World:
    data, recs, (a, b, c, d) = build_records(base_data)
    providers: dict[str, OrgHandle] = {}
    tables = [t for t in data.provider_tables() if t.name in ("registry", "tax", "penalties")]
    datasets = upload_tables(runtime, make_org, tables, tmp_path, providers)
    orgs = [
        make_org(Role.subject, f"Enterprise {x}", uscc=u) for x, u in zip("ABCD", (a, b, c, d), strict=True)
    ]
    bank = make_org(Role.bank, "Bank A")
    usccs = data.registry.columns["uscc"].tolist()
    consented = sorted({a, b, c, d, *usccs[:8]})
    consent_all(runtime, bank.id, consented, datasets)
    return World(data, providers, datasets, *orgs, bank, consented, recs)


def snapshot(rt: Runtime) -> tuple[int, ...]:
    """What a refused request must leave as it was: the ledger and every table the repair flow writes."""
    with rt.db.transaction(write=False) as s:
        return tuple(
            s.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (LedgerEntry, RepairApplication, RepairProof, RepairNotice, RecordExclusion)
        )
