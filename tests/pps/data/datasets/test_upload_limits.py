"""Limits before work: an upload that holds too many rows, columns or expanded bytes is refused before that
cost is paid (a Parquet file by its footer, before any row group is read; CSV and NDJSON at the first row past
the limit), and text cells that hold control or bidirectional-override characters are refused by row."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pps.data.datasets.ingest import Chunker, UploadFormat, UploadLimits, read_chunks
from pps.data.datasets.schema import DatasetSchema
from pps.errors import UploadTooLarge
from pps.infra.storage.tables import Dataset
from pps.runtime import Runtime
from tests.helpers import uscc_for
from tests.pps.data.datasets.conftest import tax_rows, to_csv, to_ndjson, to_parquet
from tests.pps.data.datasets.test_upload import bad, dataset, stored, upload

pytestmark = pytest.mark.db
__all__ = ["dataset"]  # the fixture, used by name


def parquet_bomb(rows: int) -> bytes:
    """The tax schema's columns, ``rows`` identical rows, dictionary- and run-length-encoded: ~70 kB."""
    idx = pa.array(np.zeros(rows, dtype=np.int32))

    def const(value: Any) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(idx, pa.array([value]))

    table = pa.table(
        {
            "uscc": const(uscc_for(1)),
            "month": const("2024-01"),
            "tax_paid": const(1.5),
            "headcount": const(3),
            "filed_on": const("2024-01-15"),
            "late": const(False),
            "note": const("x"),
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=rows)
    return buf.getvalue()


def test_a_parquet_bomb_is_refused_by_its_footer_before_any_row_is_read(
    runtime: Runtime, dataset: Dataset, tax_schema: DatasetSchema, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = parquet_bomb(3_000_000)
    assert len(data) < 200_000  # what the issue measured: 67 kB that cost a minute and 0.5 GB to refuse
    assert runtime.datasets.limits.rows == 2_000_000  # the default
    read: list[int] = []
    original = pq.ParquetFile.iter_batches

    def counting(self: pq.ParquetFile, *args: Any, **kwargs: Any) -> Any:
        read.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counting)
    before = stored(runtime)
    with pytest.raises(UploadTooLarge) as info:
        upload(runtime, dataset, data, UploadFormat.parquet)
    assert stored(runtime) == before and read == []
    assert info.value.details == {"limit": 2_000_000, "found": 3_000_000, "setting": "PPS_UPLOAD_MAX_ROWS"}
    assert "before any row group was read" in info.value.message


def _long_notes(dictionary: bool) -> bytes:
    rows = tax_rows(200, months=1)
    for r in rows:
        r["note"] = "长" * 1000  # 3 kB of UTF-8 per row that compresses to almost nothing
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf, compression="zstd", use_dictionary=dictionary)
    return buf.getvalue()


def test_a_parquet_file_declaring_too_many_uncompressed_bytes_is_refused_by_its_footer(
    runtime: Runtime, dataset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime.datasets.limits = UploadLimits(expanded_bytes=256 * 1024)
    data = _long_notes(dictionary=False)
    assert len(data) < 64 * 1024
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", None)  # never reached
    with pytest.raises(UploadTooLarge, match="uncompressed bytes") as info:
        upload(runtime, dataset, data, UploadFormat.parquet)
    assert info.value.details["setting"] == "PPS_UPLOAD_MAX_EXPANDED_BYTES"
    assert info.value.details["found"] > 600_000


def test_a_dictionary_encoded_parquet_file_is_refused_by_its_decoded_size_before_it_is_expanded(
    runtime: Runtime, dataset: Dataset
) -> None:
    """The footer counts a dictionary once; the rows would repeat it: decoded sizes are summed batch by batch,
    from the dictionary and the indices, before a batch becomes Python values."""
    runtime.datasets.limits = UploadLimits(expanded_bytes=256 * 1024)
    data = _long_notes(dictionary=True)
    with pytest.raises(UploadTooLarge, match="decoded") as info:
        upload(runtime, dataset, data, UploadFormat.parquet)
    assert info.value.details["found"] > 256 * 1024


@pytest.mark.parametrize("fmt", [UploadFormat.csv, UploadFormat.parquet])
def test_too_many_columns_are_refused_before_rows(
    runtime: Runtime, dataset: Dataset, fmt: UploadFormat
) -> None:
    runtime.datasets.limits = UploadLimits(columns=10)
    rows = [{**r, **{f"extra_{i}": 1 for i in range(20)}} for r in tax_rows(2, months=1)]
    data = to_csv(rows) if fmt is UploadFormat.csv else to_parquet(rows)
    with pytest.raises(UploadTooLarge, match="columns") as info:
        upload(runtime, dataset, data, fmt)
    assert info.value.details == {"limit": 10, "found": 27, "setting": "PPS_UPLOAD_MAX_COLUMNS"}


@pytest.mark.parametrize(
    ("fmt", "encode"),
    [(UploadFormat.csv, to_csv), (UploadFormat.ndjson, to_ndjson), (UploadFormat.parquet, to_parquet)],
)
def test_rows_are_counted_as_they_stream(
    runtime: Runtime, dataset: Dataset, fmt: UploadFormat, encode: Any
) -> None:
    runtime.datasets.limits = UploadLimits(rows=10)
    assert upload(runtime, dataset, encode(tax_rows(5, months=2)), fmt).row_count == 10  # at the limit: taken
    before = stored(runtime)
    with pytest.raises(UploadTooLarge) as info:
        upload(runtime, dataset, encode(tax_rows(11, months=1)), fmt)
    assert stored(runtime) == before
    assert info.value.details["setting"] == "PPS_UPLOAD_MAX_ROWS"


def test_streaming_stops_at_the_first_row_past_the_limit(tax_schema: DatasetSchema) -> None:
    """Rows past the limit are never read: the reader stops at row limit + 1 of a million-row CSV."""
    chunker = Chunker(tax_schema, chunk_rows=4, limits=UploadLimits(rows=8))
    line = f"{uscc_for(1)},2024-01,1.0,3,2024-01-15,false,\n".encode()
    header = b"uscc,month,tax_paid,headcount,filed_on,late,note\n"
    stream = _Counting(header + line * 1_000_000)
    with pytest.raises(UploadTooLarge):
        list(read_chunks(stream, UploadFormat.csv, chunker))
    assert chunker.seen == 9
    assert stream.furthest < 100_000  # the million rows after it were not read (io buffers a little)


class _Counting(io.BytesIO):
    furthest = 0

    def read1(self, size: int = -1, /) -> bytes:
        data = super().read1(size)
        self.furthest = max(self.furthest, self.tell())
        return data

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        self.furthest = max(self.furthest, self.tell())
        return data

    def readinto(self, buffer: Any, /) -> int:
        n = super().readinto(buffer)
        self.furthest = max(self.furthest, self.tell())
        return n


def test_a_record_naming_a_field_twice_is_refused(runtime: Runtime, dataset: Dataset) -> None:
    rows = tax_rows(2, months=1)
    good = to_ndjson(rows).decode().splitlines()
    twice = good[1][:-1] + ', "headcount": 999}'  # JSON would keep the last value silently
    err = bad(runtime, dataset, (good[0] + "\n" + twice + "\n").encode(), UploadFormat.ndjson)
    assert err.details["problems"] == [
        {"row": 2, "column": "headcount", "message": "the field is given twice in this record"}
    ]


@pytest.mark.parametrize(
    ("note", "what"),
    [
        ("a\x00b", "NUL (U+0000)"),
        ("Bank \u202eA", "RIGHT-TO-LEFT OVERRIDE (U+202E)"),
        ("\u2067isolated\u2069", "RIGHT-TO-LEFT ISOLATE (U+2067)"),
        ("\x1b[31mred", "ESC"),
        ("c1 \x85", "U+0085"),
    ],
)
@pytest.mark.parametrize("fmt", [UploadFormat.csv, UploadFormat.ndjson, UploadFormat.parquet])
def test_text_cells_with_control_or_bidi_override_characters_are_refused_by_row(
    runtime: Runtime, dataset: Dataset, note: str, what: str, fmt: UploadFormat
) -> None:
    rows = tax_rows(3, months=1)
    rows[1]["note"] = note
    encode = {UploadFormat.csv: to_csv, UploadFormat.ndjson: to_ndjson, UploadFormat.parquet: to_parquet}[fmt]
    err = bad(runtime, dataset, encode(rows), fmt)
    (problem,) = err.details["problems"]
    assert problem["column"] == "note" and what in problem["message"]
    assert problem["row"] == (3 if fmt is UploadFormat.csv else 2)


def test_tabs_line_breaks_and_right_to_left_scripts_are_data(runtime: Runtime, dataset: Dataset) -> None:
    rows = tax_rows(3, months=1)
    rows[0]["note"] = "line one\nline two\tcolumn"
    rows[1]["note"] = "ئۇيغۇرچە 藏文 བོད་ཡིག"  # Uyghur (written right to left), Chinese, Tibetan
    version = upload(runtime, dataset, to_csv(rows), UploadFormat.csv)
    with runtime.db.transaction(write=False) as s:
        notes = runtime.datasets.read_columns(s, version, ["note"])["note"].values
    assert list(notes[:2]) == [rows[0]["note"], rows[1]["note"]]
