"""The declared schema of a dataset, as the server imports it.

The schema is part of the API (a provider declares it, ``GET /v1/datasets`` returns it), so it is defined once in
:mod:`pps_wire.schemas.dataset_schema`; this module is the server's import path for it.
"""

from __future__ import annotations

from pps_wire.schemas.dataset_schema import (
    ColumnSpec,
    ColumnType,
    DatasetSchema,
    Disclosure,
    Sensitivity,
    narrowest,
)

__all__ = ["ColumnSpec", "ColumnType", "DatasetSchema", "Disclosure", "Sensitivity", "narrowest"]
