from __future__ import annotations

from typing import Any

import pytest

from pps.data.datasets.schema import DatasetSchema
from tests.helpers import uscc_for

TAX_SCHEMA: dict[str, Any] = {
    "dataset": "tax",
    "subject_key": "uscc",
    "period_key": "month",
    "columns": [
        {"name": "uscc", "type": "uscc", "description": "enterprise", "sensitivity": "C1"},
        {"name": "month", "type": "month", "description": "filing month", "sensitivity": "C1"},
        {"name": "tax_paid", "type": "float", "unit": "CNY", "description": "tax paid", "sensitivity": "C2"},
        {
            "name": "headcount",
            "type": "int",
            "unit": "persons",
            "description": "employees",
            "sensitivity": "C2",
        },
        {"name": "filed_on", "type": "date", "description": "filing date", "sensitivity": "C1"},
        {"name": "late", "type": "bool", "description": "filed late", "sensitivity": "C2"},
        {"name": "note", "type": "string", "description": "free text", "sensitivity": "C3"},
    ],
}


def tax_rows(n_subjects: int, months: int = 3) -> list[dict[str, Any]]:
    rows = []
    for i in range(n_subjects):
        for m in range(1, months + 1):
            rows.append(
                {
                    "uscc": uscc_for(i),
                    "month": f"2024-{m:02d}",
                    "tax_paid": None if (i + m) % 7 == 0 else round(1000.5 * (i + 1) / m, 2),
                    "headcount": 3 + i % 50,
                    "filed_on": f"2024-{m:02d}-15",
                    "late": (i + m) % 5 == 0,
                    "note": f'备注 {i}-{m}, "quoted"' if i % 3 == 0 else None,
                }
            )
    return rows


def to_csv(rows: list[dict[str, Any]], columns: list[str] | None = None) -> bytes:
    import csv
    import io

    columns = columns or list(rows[0])
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(columns)
    for r in rows:
        w.writerow(
            [
                "" if r.get(c) is None else ("true" if r[c] is True else "false" if r[c] is False else r[c])
                for c in columns
            ]
        )
    return buf.getvalue().encode()


def to_ndjson(rows: list[dict[str, Any]]) -> bytes:
    import json

    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def to_parquet(rows: list[dict[str, Any]]) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows)
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=1000)
    return buf.getvalue()


@pytest.fixture
def tax_schema() -> DatasetSchema:
    return DatasetSchema.model_validate(TAX_SCHEMA)
