"""A platform with the synthetic registry and tax datasets uploaded, banks, and plaintext answers to compare."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.synth import PlatformData, generate
from pps.data.datasets.ingest import UploadFormat
from pps.data.datasets.schema import DatasetSchema
from pps.governance.consent import Terms
from pps.infra.storage.tables import Consent, Role
from pps.ledger.entry import Actor
from pps.runtime import Runtime
from tests.conftest import OrgFactory, OrgHandle
from tests.helpers import signed

OPERATOR = Actor(None, "operator", "cli")
N_ENTERPRISES = 400
MONTHS = 12


@dataclass
class World:
    data: PlatformData
    datasets: dict[str, str]
    """source name -> dataset id"""
    providers: dict[str, OrgHandle]
    bank: OrgHandle
    other_bank: OrgHandle

    def actor(self, org: OrgHandle | None = None) -> Actor:
        org = org or self.bank
        return Actor(org.id, org.role.value, "api", org.token_id)


def upload(rt: Runtime, provider: OrgHandle, name: str, schema: dict[str, Any], content: bytes) -> str:
    with rt.db.transaction() as s:
        ds = rt.datasets.create(
            s,
            provider_org_id=provider.id,
            name=name,
            description="",
            schema=DatasetSchema.model_validate(schema),
            actor=OPERATOR,
        )
        rt.datasets.upload(s, ds, stream=io.BytesIO(content), fmt=UploadFormat.csv, actor=OPERATOR)
        return ds.id


@pytest.fixture(scope="session")
def synth() -> PlatformData:
    return generate(N_ENTERPRISES, 404, months=MONTHS)


@pytest.fixture
def world(runtime: Runtime, make_org: OrgFactory, synth: PlatformData, tmp_path: Path) -> World:
    datasets, providers = {}, {}
    for table in (synth.registry, synth.tax):
        provider = make_org(Role.data_provider, f"provider of {table.name}")
        table.write_csv(tmp_path)
        datasets[table.name] = upload(
            runtime, provider, table.name, table.schema, (tmp_path / f"{table.name}.csv").read_bytes()
        )
        providers[table.name] = provider
    return World(synth, datasets, providers, make_org(Role.bank, "Bank A"), make_org(Role.bank, "Bank B"))


def consent(
    rt: Runtime,
    world: World,
    usccs: list[str],
    *,
    fields: dict[str, list[str]] | None = None,
    operations: tuple[str, ...] = ("aggregate",),
    purpose: str = "risk_statistics",
    bank: OrgHandle | None = None,
) -> dict[str, str]:
    """Consents (requested by the bank, approved) for these enterprises; returns USCC -> consent id."""
    bank = bank or world.bank
    fields = fields or {"registry": ["industry", "region", "size_class"], "tax": ["taxable_sales"]}
    terms = Terms(
        purpose=purpose,
        scope=[{"dataset_id": world.datasets[n], "fields": f} for n, f in fields.items()],
        operations=list(operations),
        valid_until=datetime.now(UTC) + timedelta(days=30),
    )
    out = {}
    with rt.db.transaction() as s:
        from pps.infra.storage.tables import Organization

        org = s.get(Organization, bank.id)
        assert org is not None
        for u in usccs:
            c: Consent = rt.consents.request(
                s, bank=org, subject_uscc=u, terms=terms, actor=world.actor(bank)
            )
            rt.consents.approve(s, c, signed=signed(rt, s, c), actor=OPERATOR)
            out[u] = c.id
    return out


# --- plaintext answers ------------------------------------------------------------------------------


def registry_of(data: PlatformData) -> dict[str, dict[str, str]]:
    cols = data.registry.columns
    return {
        str(u): {"industry": str(i), "region": str(r), "size_class": str(z)}
        for u, i, r, z in zip(cols["uscc"], cols["industry"], cols["region"], cols["size_class"], strict=True)
    }


def contributions(
    data: PlatformData, field: str = "taxable_sales", months: tuple[str, str] | None = None
) -> dict[str, float]:
    """Per enterprise: the sum of its valid values in the month range (enterprises with data only)."""
    cols = data.tax.columns
    month = np.asarray(cols["month"]).astype(str)
    values = np.asarray(cols[field], dtype=float)
    keep = ~np.isnan(values)
    if months is not None:
        keep &= (month >= months[0]) & (month <= months[1])
    out: dict[str, float] = {}
    for u, v in zip(np.asarray(cols["uscc"])[keep], values[keep], strict=True):
        out[str(u)] = out.get(str(u), 0.0) + float(v)
    return out
