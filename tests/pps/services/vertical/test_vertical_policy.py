"""Vertical-model scoring under the published model policy (settings as in production): the host half a
training produced is checked before any contribution is computed — a bank steers it through its labels, so a
training can make it read a platform feature back — and contributions go only to subjects whose consent allows
a score, counted against their disclosure budget."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from models.synth import generate
from pps.errors import ModelRefused
from pps.governance.consent import Terms
from pps.infra.settings import Settings
from pps.infra.storage.tables import Disclosure, LedgerEntry, Organization, Role, utcnow
from pps.ledger.entry import Actor
from pps.runtime import Runtime
from pps.services.registry import PLATFORM
from protocols import paillier_fast as pf
from tests.conftest import OrgFactory
from tests.helpers import signed
from tests.pps.services.scoring.conftest import upload_platform

pytestmark = [pytest.mark.db, pytest.mark.slow]

PURPOSE = "joint_model_training"
FEATURES = ["company_age_years", "log_registered_capital", "tax_filing_ratio", "log_sales_mean_last6"]
SUBJECT = Actor(None, "subject", "api")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"unsafe_unapproved_models": False})


def _register(rt: Runtime, bank: str, fields: dict[str, list[str]], weights: list[float]) -> str:
    with rt.db.transaction(write=False) as s:
        table = rt.features.table(s)
    x = np.column_stack([table.values[n] for n in FEATURES])
    with rt.db.transaction() as s:
        record = rt.models.register(
            s,
            kind="vertical_lr",
            name="host half",
            owners=[bank],
            feature_schema=[f"platform:{n}" for n in FEATURES],
            training={"rows": 300},
            artifacts={
                PLATFORM: {
                    "features": FEATURES,
                    "weights": weights,
                    "mean": np.nanmean(x, axis=0).tolist(),
                    "scale": np.nanstd(x, axis=0).tolist(),
                    "fields": fields,
                }
            },
            ledger_indices=[],
            actor=Actor(bank, "bank", "api"),
            purpose=PURPOSE,
        )
    return record.id


def test_a_crafted_host_half_is_refused_and_contributions_follow_granularity(
    runtime: Runtime, make_org: OrgFactory, tmp_path: Path
) -> None:
    data = generate(300, 2027)
    platform = upload_platform(runtime, make_org, data, tmp_path / "csv")
    bank = make_org(Role.bank, "Bank A")
    with runtime.db.transaction(write=False) as s:
        fields = {k: list(v) for k, v in runtime.features.fields_for(s, FEATURES).items()}
    assert platform.datasets
    usccs = data.registry.columns["uscc"].tolist()
    with runtime.db.transaction() as s:
        org = s.get(Organization, bank.id)
        assert org is not None
        for i, u in enumerate(usccs[:12]):
            terms = Terms(
                purpose=PURPOSE,
                scope=[{"dataset_id": d, "fields": f} for d, f in fields.items()],
                operations=["score"],
                valid_until=utcnow() + timedelta(days=30),
                granularity="score" if i < 8 else "grade",
            )
            c = runtime.consents.request(s, bank=org, subject_uscc=u, terms=terms, actor=SUBJECT)
            runtime.consents.approve(s, c, signed=signed(runtime, s, c), actor=SUBJECT)
    public, _private = pf.generate_keypair(2048)
    actor = Actor(bank.id, "bank", "api")
    crafted = _register(runtime, bank.id, fields, [0.0, 0.0, 0.0, 1.0])  # the host half reads sales back
    with pytest.raises(ModelRefused, match="log_sales_mean_last6 carries 100%"):
        runtime.training.contributions(
            crafted, actor=actor, purpose=PURPOSE, subjects=usccs[:12], bank_key=public.to_bytes()
        )
    with runtime.db.transaction(write=False) as s:
        entries = [json.loads(e) for e in s.scalars(select(LedgerEntry.entry))]
        assert [e["detail"]["path"] for e in entries if e["action"] == "model.refuse"] == [
            "vertical.contributions"
        ]
        assert not [e for e in entries if e["action"] == "policy.release"]  # nothing released
    honest = _register(runtime, bank.id, fields, [0.4, -0.5, -0.6, -0.45])
    message, found, excluded = runtime.training.contributions(
        honest, actor=actor, purpose=PURPOSE, subjects=usccs[:12], bank_key=public.to_bytes()
    )
    assert message and found == usccs[:8] and excluded == {"granularity": 4}
    with runtime.db.transaction(write=False) as s:
        rows = s.scalars(select(Disclosure).where(Disclosure.model_digest == f"vertical:{honest}")).all()
    assert sorted(r.subject_uscc for r in rows) == sorted(usccs[:8])
