"""Uploads: every format round-trips; every kind of bad input is reported by row and stores nothing."""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import func, select

from pps.data.datasets import codec
from pps.data.datasets.ingest import UploadFormat
from pps.data.datasets.schema import ColumnType, DatasetSchema
from pps.errors import Conflict, UploadRejected
from pps.infra.storage.tables import Dataset, DatasetChunk, DatasetVersion, Role
from pps.ledger.entry import OPERATOR
from pps.runtime import Runtime
from tests.conftest import OrgFactory
from tests.helpers import uscc_for
from tests.pps.data.datasets.conftest import TAX_SCHEMA, tax_rows, to_csv, to_ndjson, to_parquet

pytestmark = pytest.mark.db


@pytest.fixture
def dataset(runtime: Runtime, make_org: OrgFactory, tax_schema: DatasetSchema) -> Dataset:
    provider = make_org(Role.data_provider)
    with runtime.db.transaction() as s:
        return runtime.datasets.create(
            s, provider_org_id=provider.id, name="tax", description="", schema=tax_schema, actor=OPERATOR
        )


def upload(rt: Runtime, ds: Dataset, data: bytes, fmt: UploadFormat) -> DatasetVersion:
    with rt.db.transaction() as s:
        return rt.datasets.upload(
            s, rt.datasets.get(s, ds.id), stream=io.BytesIO(data), fmt=fmt, actor=OPERATOR
        )


def stored(rt: Runtime) -> tuple[int, int, int]:
    with rt.db.transaction(write=False) as s:
        return (
            s.execute(select(func.count()).select_from(DatasetVersion)).scalar_one(),
            s.execute(select(func.count()).select_from(DatasetChunk)).scalar_one(),
            rt.ledger.size(s),
        )


@pytest.mark.parametrize(
    ("fmt", "encode"),
    [(UploadFormat.csv, to_csv), (UploadFormat.ndjson, to_ndjson), (UploadFormat.parquet, to_parquet)],
)
def test_round_trip(runtime: Runtime, dataset: Dataset, fmt: UploadFormat, encode: Any) -> None:
    runtime.datasets.chunk_rows = 100  # several chunks
    rows = tax_rows(120, months=3)
    version = upload(runtime, dataset, encode(rows), fmt)
    assert version.row_count == 360
    assert version.chunk_count == 4
    with runtime.db.transaction(write=False) as s:
        cols = runtime.datasets.read_columns(s, version, [c["name"] for c in TAX_SCHEMA["columns"]])
    for name, col in cols.items():
        got = [col.values[i] if col.valid[i] else None for i in range(len(col))]
        want = [r[name] for r in rows]
        if name == "tax_paid":
            assert np.allclose([g or 0 for g in got], [w or 0 for w in want])
            assert [g is None for g in got] == [w is None for w in want]
        else:
            assert [g.item() if isinstance(g, np.generic) else g for g in got] == want, name


def test_versions_accumulate_and_lineage_is_recorded(runtime: Runtime, dataset: Dataset) -> None:
    from pps.ledger.store import EntryFilter

    upload(runtime, dataset, to_csv(tax_rows(5)), UploadFormat.csv)
    v2 = upload(runtime, dataset, to_csv(tax_rows(6)), UploadFormat.csv)
    assert v2.version == 2
    with runtime.db.transaction(write=False) as s:
        assert runtime.datasets.get(s, dataset.id).current_version == 2
        entries = runtime.ledger.entries(s, EntryFilter(object=("dataset", dataset.id)))
    actions = [e.entry.split(b'"action":"')[1].split(b'"')[0].decode() for e in entries]
    assert actions == ["dataset.create", "dataset.upload", "dataset.upload"]
    assert b'"rows":18' in entries[-1].entry


def bad(rt: Runtime, ds: Dataset, data: bytes, fmt: UploadFormat = UploadFormat.csv) -> UploadRejected:
    before = stored(rt)
    with pytest.raises(UploadRejected) as info:
        upload(rt, ds, data, fmt)
    assert stored(rt) == before, "a rejected upload stored something"
    return info.value


def problems(err: UploadRejected) -> list[tuple[int, str | None]]:
    return [(p["row"], p["column"]) for p in err.details["problems"]]


def test_invalid_uscc_type_errors_and_duplicates_are_reported_by_row(
    runtime: Runtime, dataset: Dataset
) -> None:
    rows = tax_rows(4, months=2)
    rows[1]["uscc"] = uscc_for(1)[:17] + ("0" if uscc_for(1)[17] != "0" else "1")
    rows[2]["tax_paid"] = "lots"
    rows[3]["month"] = "2024-13"
    rows[4]["headcount"] = "3.5"
    rows[5]["filed_on"] = "2024-02-30"
    rows[6]["late"] = "maybe"
    rows.append(dict(rows[0]))  # duplicate key of row 2
    err = bad(runtime, dataset, to_csv(rows))
    assert problems(err) == [
        (3, "uscc"),
        (4, "tax_paid"),
        (5, "month"),
        (6, "headcount"),
        (7, "filed_on"),
        (8, "late"),
        (10, None),
    ]
    assert "duplicate key" in err.details["problems"][-1]["message"]
    assert err.details["problem_count"] == 7


def test_unknown_and_missing_columns(runtime: Runtime, dataset: Dataset) -> None:
    rows = tax_rows(2)
    for r in rows:
        r["secret_extra"] = 1
        del r["late"]
    err = bad(runtime, dataset, to_csv(rows))
    messages = " ".join(p["message"] for p in err.details["problems"])
    assert "secret_extra" in messages and "late" in messages
    assert problems(err)[0][0] == 1


def test_json_records_with_wrong_types(runtime: Runtime, dataset: Dataset) -> None:
    rows = tax_rows(2)
    rows[0]["headcount"] = "12"  # a string is not an integer in JSON
    rows[1]["tax_paid"] = True
    data = to_ndjson(rows) + b"not json\n[1,2]\n" + b'{"uscc": "x", "extra": 1}\n'
    err = bad(runtime, dataset, data, UploadFormat.ndjson)
    assert problems(err) == [(1, "headcount"), (2, "tax_paid"), (7, None), (8, None), (9, None)]


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (b"", UploadFormat.csv),
        (b"uscc,month,tax_paid,headcount,filed_on,late,note\n", UploadFormat.csv),
        (b"\xff\xfe\x00garbage", UploadFormat.csv),
        (b'uscc,month\n"unterminated', UploadFormat.csv),
        (b"PAR1 not really parquet", UploadFormat.parquet),
        (b"\n\n", UploadFormat.ndjson),
    ],
)
def test_malformed_files(runtime: Runtime, dataset: Dataset, data: bytes, fmt: UploadFormat) -> None:
    err = bad(runtime, dataset, data, fmt)
    assert err.details["problems"]


def test_nan_and_infinity_are_refused(runtime: Runtime, dataset: Dataset) -> None:
    rows = tax_rows(2)
    rows[0]["tax_paid"] = "nan"
    rows[1]["tax_paid"] = "inf"
    assert problems(bad(runtime, dataset, to_csv(rows))) == [(2, "tax_paid"), (3, "tax_paid")]


def test_upload_to_a_deleted_dataset(runtime: Runtime, dataset: Dataset) -> None:
    with runtime.db.transaction() as s:
        runtime.datasets.delete(s, runtime.datasets.get(s, dataset.id), actor=OPERATOR)
    with pytest.raises(Exception, match="does not exist"):
        upload(runtime, dataset, to_csv(tax_rows(1)), UploadFormat.csv)


def test_duplicate_dataset_name(runtime: Runtime, dataset: Dataset, tax_schema: DatasetSchema) -> None:
    with pytest.raises(Conflict), runtime.db.transaction() as s:
        runtime.datasets.create(
            s,
            provider_org_id=dataset.provider_org_id,
            name="tax",
            description="",
            schema=tax_schema,
            actor=OPERATOR,
        )


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.update(subject_key="nope"),
        lambda s: s.update(subject_key="month"),
        lambda s: s.update(period_key="tax_paid"),
        lambda s: s.update(record_key="note"),  # with period_key also set
        lambda s: s["columns"].append(dict(s["columns"][0])),
        lambda s: s["columns"][2].update(type="decimal"),
        lambda s: s["columns"][2].update(sensitivity="C4"),
        lambda s: s["columns"][2].update(name="Tax Paid"),
        lambda s: s["columns"][2].update(colour="red"),
    ],
)
def test_schema_contradictions_are_refused(mutate: Any) -> None:
    import copy

    schema = copy.deepcopy(TAX_SCHEMA)
    mutate(schema)
    with pytest.raises(ValidationError):
        DatasetSchema.model_validate(schema)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(list(ColumnType)),
    st.lists(st.one_of(st.none(), st.integers(-(2**62), 2**62)), max_size=40),
    st.lists(st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)), max_size=40),
    st.lists(st.one_of(st.none(), st.text(max_size=20)), max_size=40),
)
def test_codec_round_trips(ctype: ColumnType, ints: list[Any], floats: list[Any], texts: list[Any]) -> None:
    values: list[Any] = {
        ColumnType.int: ints,
        ColumnType.float: floats,
        ColumnType.bool: [None if v is None else v % 2 == 0 for v in ints],
    }.get(ctype, texts)
    col = codec.decode(codec.encode(ctype, values))
    got = [
        col.values[i].item() if isinstance(col.values[i], np.generic) else col.values[i]
        for i in range(len(col))
    ]
    assert [g if col.valid[i] else None for i, g in enumerate(got)] == values


def test_hostile_json_records(runtime: Runtime, dataset: Dataset) -> None:
    rows = tax_rows(3)
    data = to_ndjson(rows).splitlines(keepends=True)
    data[0] = re.sub(rb'"tax_paid": [0-9.]+', b'"tax_paid": ' + b"9" * 400, data[0])  # overflows a float
    data[1] = data[1].replace(b'"note": "', rb'"note": "\ud800')  # a lone surrogate in JSON
    data[2] = b"[" * 200_000 + b"]" * 200_000 + b"\n"
    err = bad(runtime, dataset, b"".join(data), UploadFormat.ndjson)
    assert problems(err) == [(1, "tax_paid"), (2, "note"), (3, None)]


def test_a_csv_with_a_byte_order_mark(runtime: Runtime, dataset: Dataset) -> None:
    version = upload(runtime, dataset, b"\xef\xbb\xbf" + to_csv(tax_rows(2)), UploadFormat.csv)
    assert version.row_count == 6
