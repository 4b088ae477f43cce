"""Datasets: a provider declares them and uploads versions; banks read the catalogue; subjects their records."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pps_client._client import dumps
from pps_client._resources._base import Resource
from pps_wire.schemas import (
    CatalogDataset,
    DatasetCreate,
    DatasetPublic,
    DatasetSchema,
    EntryOut,
    PlatformAggregatesIn,
    PlatformAggregatesOut,
    SubjectDataset,
    VersionPublic,
)

UploadFormat = Literal["csv", "ndjson", "parquet"]
MEDIA_TYPES: dict[str, str] = {
    "csv": "text/csv",
    "ndjson": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}


class Datasets(Resource):
    def create(
        self, name: str, schema: DatasetSchema | Mapping[str, Any], *, description: str = ""
    ) -> DatasetPublic:
        """Declare a dataset and its schema (a provider). ``schema``: a :class:`~pps_wire.schemas.DatasetSchema`
        or its JSON form (``{"subject_key", "columns": [{"name", "type", "sensitivity", ...}]}``)."""
        declared = schema if isinstance(schema, DatasetSchema) else DatasetSchema.model_validate(schema)
        body = DatasetCreate.model_validate({"name": name, "description": description, "schema": declared})
        return self._client._call("POST", "/v1/datasets", DatasetPublic, json_body=dumps(body))

    def list(self) -> builtins.list[DatasetPublic]:
        """My datasets (a provider), or every dataset's metadata (admins, auditors); following the pages."""
        return self._client._pages("/v1/datasets", DatasetPublic)

    def get(self, dataset_id: str) -> DatasetPublic:
        return self._client._call("GET", f"/v1/datasets/{dataset_id}", DatasetPublic)

    def upload(
        self,
        dataset_id: str,
        content: bytes | Iterable[bytes],
        *,
        fmt: UploadFormat,
        timeout: float = 600.0,
    ) -> VersionPublic:
        """Upload a new version: ``content`` is the file, as bytes or an iterable of chunks (streamed). The
        service checks every row before it stores anything (:class:`~pps_client.InvalidRequest` with
        ``details["problems"]`` otherwise) and encrypts what it stores."""
        if fmt not in MEDIA_TYPES:
            raise ValueError(f"fmt must be one of {', '.join(MEDIA_TYPES)}, got {fmt!r}")
        response = self._client._request(
            "POST",
            f"/v1/datasets/{dataset_id}/versions",
            params={"format": fmt},
            content=content,
            headers={"content-type": MEDIA_TYPES[fmt]},
            timeout=timeout,
        )
        return VersionPublic.model_validate(response.json())

    def delete(self, dataset_id: str) -> DatasetPublic:
        """Delete a dataset: every version is crypto-shredded."""
        return self._client._call("DELETE", f"/v1/datasets/{dataset_id}", DatasetPublic)

    def lineage(self, dataset_id: str) -> builtins.list[EntryOut]:
        """Every ledger entry about this dataset (other organisations' subjects masked), following the pages."""
        return self._client._pages(f"/v1/datasets/{dataset_id}/lineage", EntryOut, {"limit": 500})

    def catalog(self) -> builtins.list[CatalogDataset]:
        """What data the safe-room holds (a bank): datasets and columns, never values."""
        return self._client._call_list("GET", "/v1/catalog", CatalogDataset)

    def my_records(self) -> builtins.list[SubjectDataset]:
        """An enterprise's own records in every dataset (free self-query; on the record)."""
        return self._client._call_list("GET", "/v1/me/records", SubjectDataset)

    def set_platform_aggregates(self, dataset_id: str, enabled: bool) -> PlatformAggregatesOut:
        """As the dataset's provider: allow (or stop) platform-wide aggregates over its C2 fields."""
        body = PlatformAggregatesIn(platform_aggregates=enabled)
        return self._client._call(
            "PATCH", f"/v1/datasets/{dataset_id}/aggregates", PlatformAggregatesOut, json_body=dumps(body)
        )
