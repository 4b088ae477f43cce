"""Datasets: a provider's declarations and versions, the catalogue banks read, a subject's own records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ConfigDict, Field

from pps_wire.schemas.common import Request, Response
from pps_wire.schemas.dataset_schema import DatasetSchema


class DatasetCreate(Request):
    name: str = Field(min_length=1, max_length=100)
    description: str = Field("", max_length=1000)
    schema_: DatasetSchema = Field(alias="schema", description="the declared columns and keys")


class VersionPublic(Response):
    version: int
    rows: int
    format: str
    kek_version: int | None
    created_at: datetime
    shredded_at: datetime | None


class DatasetPublic(Response):
    """Metadata only: never values."""

    id: str
    name: str
    description: str
    provider_org_id: str
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    schema_: DatasetSchema = Field(serialization_alias="schema", validation_alias="schema")
    current_version: int | None
    created_at: datetime
    deleted_at: datetime | None
    versions: list[VersionPublic] = []


class CatalogColumn(Response):
    name: str
    type: str
    unit: str | None
    description: str
    sensitivity: str


class CatalogDataset(Response):
    """What a bank may know of a dataset: its provider, shape and columns — never values."""

    id: str
    name: str
    description: str
    provider: str
    rows: int | None
    subject_key: str
    period_key: str | None
    record_key: str | None
    columns: list[CatalogColumn]


class SubjectDataset(Response):
    dataset_id: str
    dataset: str
    provider: str
    version: int
    columns: list[CatalogColumn]
    rows: list[dict[str, Any]]
    """the subject's rows as the provider holds them: column -> value (typed as the columns say)"""
