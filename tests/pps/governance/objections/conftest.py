"""A small platform with the six synthetic provider datasets, each provider with its own token, for the
objection tests; a bank with consents; and the enterprises the flow is about."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from models.synth import PlatformData, generate
from pps.governance.consent import Terms
from pps.infra.storage.tables import (
    CorrectionNotice,
    DatasetVersion,
    Objection,
    ObjectionEvidence,
    Organization,
    Role,
    utcnow,
)
from pps.ledger.entry import Actor
from pps.runtime import Runtime
from protocols.he_scoring import BankScoringKey
from tests.conftest import OrgFactory, OrgHandle
from tests.helpers import signed
from tests.pps.services.scoring.conftest import upload_tables

PURPOSE = "loan_underwriting"
N_ENTERPRISES = 120
OPERATOR = Actor(None, "operator", "cli")


@dataclass
class Flow:
    data: PlatformData
    providers: dict[str, OrgHandle]
    """source name -> its provider"""
    datasets: dict[str, str]
    """source name -> dataset id"""
    subject: OrgHandle
    other_subject: OrgHandle
    bank: OrgHandle
    other_bank: OrgHandle
    consented: list[str]


@pytest.fixture(scope="session")
def small_data() -> PlatformData:
    return generate(N_ENTERPRISES, 4242)


@pytest.fixture(scope="session")
def scoring_key() -> BankScoringKey:
    return BankScoringKey.create()


def consent(rt: Runtime, bank_id: str, usccs: list[str], scope: list[dict[str, object]]) -> None:
    with rt.db.transaction() as s:
        bank = s.get(Organization, bank_id)
        assert bank is not None
        for uscc in usccs:
            terms = Terms(
                purpose=PURPOSE,
                scope=scope,
                operations=["score", "aggregate"],
                granularity="score",
                valid_until=utcnow() + timedelta(days=30),
            )
            c = rt.consents.request(s, bank=bank, subject_uscc=uscc, terms=terms, actor=OPERATOR)
            rt.consents.approve(s, c, signed=signed(rt, s, c), actor=OPERATOR)


@pytest.fixture
def flow(runtime: Runtime, make_org: OrgFactory, small_data: PlatformData, tmp_path: Path) -> Flow:
    providers: dict[str, OrgHandle] = {}
    datasets = upload_tables(runtime, make_org, small_data.provider_tables(), tmp_path, providers)
    usccs = small_data.registry.columns["uscc"].tolist()
    subject = make_org(Role.subject, "Enterprise 0", uscc=usccs[0])
    other = make_org(Role.subject, "Enterprise 1", uscc=usccs[1])
    bank, other_bank = make_org(Role.bank, "Bank A"), make_org(Role.bank, "Bank B")
    consented = usccs[:12]
    consent(
        runtime,
        bank.id,
        consented,
        [
            {"dataset_id": datasets["tax"], "fields": ["taxable_sales"]},
            {"dataset_id": datasets["registry"], "fields": ["*"]},
        ],
    )
    return Flow(small_data, providers, datasets, subject, other, bank, other_bank, consented)


def snapshot(rt: Runtime) -> tuple[int, ...]:
    """What a refused request must leave as it was: the ledger and every table the flow writes."""
    with rt.db.transaction(write=False) as s:
        counts = tuple(
            s.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (Objection, ObjectionEvidence, CorrectionNotice, DatasetVersion)
        )
        states = tuple(s.execute(select(Objection.state).order_by(Objection.id)).scalars())
        return (rt.ledger.size(s), *counts, len(states), sum(st.value == "open" for st in states))
