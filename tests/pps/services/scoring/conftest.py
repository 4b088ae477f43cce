"""A platform with the six synthetic provider datasets uploaded, for the feature store and scoring tests."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.synth import PlatformData, Table, generate
from pps.data.datasets.ingest import UploadFormat
from pps.data.datasets.schema import DatasetSchema
from pps.governance.consent import Terms
from pps.infra.storage.tables import Consent, Organization, Role, utcnow
from pps.ledger.entry import Actor
from pps.runtime import Runtime
from pps.services.scoring import apply_preprocess, parse_preprocess
from tests.conftest import OrgFactory, OrgHandle
from tests.helpers import signed, uscc_for

OPERATOR = Actor(None, "operator", "cli")
SUBJECT = Actor(None, "subject", "api")
PURPOSE = "loan_underwriting"
N_ENTERPRISES = 600


@dataclass
class Platform:
    data: PlatformData
    datasets: dict[str, str]
    """source name -> dataset id"""


def upload_platform(rt: Runtime, make_org: OrgFactory, data: PlatformData, tmp: Path) -> Platform:
    return Platform(data, upload_tables(rt, make_org, data.provider_tables(), tmp))


def upload_tables(
    rt: Runtime,
    make_org: OrgFactory,
    tables: Sequence[Table],
    tmp: Path,
    providers: dict[str, OrgHandle] | None = None,
) -> dict[str, str]:
    """Each table uploaded by its own provider (put in ``providers`` if given); returns name -> dataset id."""
    datasets = {}
    for table in tables:
        provider = make_org(Role.data_provider, f"provider of {table.name}")
        if providers is not None:
            providers[table.name] = provider
        table.write_csv(tmp)
        with rt.db.transaction() as s:
            ds = rt.datasets.create(
                s,
                provider_org_id=provider.id,
                name=table.name,
                description="",
                schema=DatasetSchema.model_validate(table.schema),
                actor=OPERATOR,
            )
            rt.datasets.upload(
                s,
                ds,
                stream=io.BytesIO((tmp / f"{table.name}.csv").read_bytes()),
                fmt=UploadFormat.csv,
                actor=OPERATOR,
            )
            datasets[table.name] = ds.id
    return datasets


@pytest.fixture(scope="session")
def synth_data() -> PlatformData:
    return generate(N_ENTERPRISES, 2026)


@pytest.fixture
def platform(runtime: Runtime, make_org: OrgFactory, synth_data: PlatformData, tmp_path: Path) -> Platform:
    return upload_platform(runtime, make_org, synth_data, tmp_path / "csv")


@dataclass
class World:
    bank: OrgHandle
    other_bank: OrgHandle
    consented: list[str]
    narrow: list[str]
    """consented, but not to the tax field the model reads"""
    revoked: list[str]
    strangers: list[str]
    """not on the platform, no consent"""
    consent_ids: dict[str, str]


def _consent(
    rt: Runtime, bank_id: str, usccs: list[str], scope: list[dict[str, Any]], **kw: Any
) -> dict[str, str]:
    ids = {}
    with rt.db.transaction() as s:
        bank = s.get(Organization, bank_id)
        for uscc in usccs:
            terms = Terms(
                purpose=PURPOSE,
                scope=scope,
                operations=["score", "psi"],
                valid_until=utcnow() + timedelta(days=30),
                **{"granularity": "score", **kw},
            )
            assert bank is not None
            c = rt.consents.request(s, bank=bank, subject_uscc=uscc, terms=terms, actor=SUBJECT)
            rt.consents.approve(s, c, signed=signed(rt, s, c), actor=SUBJECT)
            ids[uscc] = c.id
    return ids


@pytest.fixture
def world(runtime: Runtime, platform: Platform, make_org: OrgFactory) -> World:
    bank, other = make_org(Role.bank, "Bank A"), make_org(Role.bank, "Bank B")
    usccs = platform.data.registry.columns["uscc"].tolist()
    full = [
        {"dataset_id": platform.datasets["tax"], "fields": ["taxable_sales"]},
        {"dataset_id": platform.datasets["registry"], "fields": ["*"]},
    ]
    consented, narrow, revoked = usccs[:60], usccs[60:65], usccs[65:68]
    ids = _consent(runtime, bank.id, consented + revoked, full)
    ids |= _consent(
        runtime, bank.id, narrow, [{"dataset_id": platform.datasets["registry"], "fields": ["*"]}]
    )
    with runtime.db.transaction() as s:
        for u in revoked:
            runtime.consents.revoke(s, s.get(Consent, ids[u]), actor=SUBJECT)
    return World(bank, other, consented, narrow, revoked, [uscc_for(800_001), uscc_for(800_002)], ids)


def plaintext_logits(
    rt: Runtime, subjects: list[str], weights: dict[str, float], bias: float, preprocess: dict[str, Any]
) -> np.ndarray[Any, Any]:
    names = list(weights)
    with rt.db.transaction(write=False) as s:
        table = rt.features.table(s)
    _, rows, _ = table.rows(subjects)
    x = apply_preprocess(table.matrix(names, rows), names, parse_preprocess(preprocess, names))
    return np.asarray(bias + x @ np.array([weights[n] for n in names]))
