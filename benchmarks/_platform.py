"""The synthetic platform uploaded into a runtime, as the benchmarks that need one set it up."""

from __future__ import annotations

import io
from pathlib import Path

from models.synth import PlatformData
from pps.data.datasets.ingest import UploadFormat
from pps.data.datasets.schema import DatasetSchema
from pps.infra.storage.tables import Role
from pps.ledger.entry import Actor
from pps.runtime import Runtime

OPERATOR = Actor(None, "operator", "cli")


def upload_provider_tables(
    rt: Runtime, data: PlatformData, tmp: Path, *, provider_org_id: str | None = None
) -> dict[str, str]:
    """Every provider table of ``data`` written as CSV under ``tmp`` and uploaded through the dataset service
    (validated, encrypted, ledgered as a real upload is), each by its own provider organisation unless
    ``provider_org_id`` names one for all. Returns ``{table name: dataset id}``."""
    ids: dict[str, str] = {}
    for table in data.provider_tables():
        table.write_csv(tmp)
        with rt.db.transaction() as s:
            provider = (
                provider_org_id
                or rt.identity.create_org(
                    s, name=f"provider {table.name}", role=Role.data_provider, uscc=None, actor=OPERATOR
                ).id
            )
            ds = rt.datasets.create(
                s,
                provider_org_id=provider,
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
            ids[table.name] = ds.id
    return ids
