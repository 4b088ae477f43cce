"""Streaming, validating readers for uploads: CSV, JSON records (NDJSON) and Parquet.

Rows are read one at a time (Parquet: one row group at a time), converted to the declared column types and
collected into chunks of ``chunk_rows`` rows. Nothing is kept of a chunk once it has been handed on, so the
memory an upload needs is one chunk plus 12 bytes per row (an 8-byte hash of its key and its row number, in
compact arrays, to find duplicate keys once all rows are read) — not a second copy of the file.

**Limits before work.** What an upload may cost is bounded before that cost is paid (:class:`UploadLimits`,
from ``PPS_UPLOAD_MAX_ROWS``, ``PPS_UPLOAD_MAX_COLUMNS`` and ``PPS_UPLOAD_MAX_EXPANDED_BYTES``): a Parquet
file's footer is read first, and a file that declares more rows, columns or uncompressed bytes than allowed is
refused before any row group is read (a 67 kB file can declare 3,000,000 rows); CSV and NDJSON are counted as
they stream and refused at the first row past the limit. Refusals are :class:`~pps.errors.UploadTooLarge`.

Text cells are refused if they hold NUL, another control character (tab and line breaks excepted) or a
bidirectional override (:mod:`pps.infra.text`): such data is never stored, so it is never shown raw.

Every problem is reported with the row it is on (row 1 is the CSV header or the first NDJSON line; for
Parquet, row 1 is the first data row), up to :data:`MAX_REPORTED` of them; after the first problem no more
chunks are produced, and the whole upload is refused at the end.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import math
import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import IO, Any

import numpy as np

from pps.data.datasets.schema import ColumnSpec, ColumnType, DatasetSchema
from pps.errors import InvalidResidentID, InvalidUSCC, UploadRejected, UploadTooLarge
from pps.identity.uscc import validate_uscc
from pps.infra.text import find_unsafe

MAX_REPORTED = 50
MAX_TEXT = 4000
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_INT = re.compile(r"^[+-]?\d{1,19}$")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


class UploadFormat(StrEnum):
    csv = "csv"
    ndjson = "ndjson"
    parquet = "parquet"


@dataclass(frozen=True)
class RowProblem:
    row: int
    column: str | None
    message: str

    def as_json(self) -> dict[str, Any]:
        return {"row": self.row, "column": self.column, "message": self.message}


def rejected(problems: list[RowProblem], total: int) -> UploadRejected:
    shown = "; ".join(
        f"row {p.row}" + (f", column {p.column}" if p.column else "") + f": {p.message}" for p in problems[:3]
    )
    more = f" (and {total - 3} more)" if total > 3 else ""
    return UploadRejected(
        f"upload refused, nothing stored: {total} problem(s): {shown}{more}",
        details={"problems": [p.as_json() for p in problems], "problem_count": total},
    )


@dataclass(frozen=True)
class UploadLimits:
    """The most an upload may hold; checked before the work (see the module docstring)."""

    rows: int = 2_000_000
    columns: int = 256
    expanded_bytes: int = 1 << 30
    """Parquet: the uncompressed size of all column chunks, as the footer declares it."""

    @staticmethod
    def refuse(what: str, found: int, limit: int, setting: str, when: str) -> UploadTooLarge:
        return UploadTooLarge(
            f"upload refused {when}, nothing stored: {what} {found:,}, more than the limit of {limit:,} "
            f"({setting})",
            details={"limit": limit, "found": found, "setting": setting},
        )


class _Bad(Exception):
    pass


ConversionError = _Bad
"""What a converter in :data:`CONVERTERS` raises for a value of the wrong type (its message says why)."""


# --- converters: (raw value, from_text) -> typed value or None ------------------------------------------


def _text(v: Any, from_text: bool) -> str:
    if not isinstance(v, str):
        raise _Bad(f"expected text, got {type(v).__name__}")
    if len(v) > MAX_TEXT:
        raise _Bad(f"text longer than {MAX_TEXT} characters")
    problem = find_unsafe(v)
    if problem is not None:
        raise _Bad(f"text {problem}; control and bidirectional-override characters are refused")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise _Bad("text is not valid Unicode (a lone surrogate)") from None
    return v


def _uscc(v: Any, from_text: bool) -> str:
    try:
        return validate_uscc(_text(v, from_text))
    except InvalidUSCC as exc:
        raise _Bad(exc.message) from None


def _int(v: Any, from_text: bool) -> int:
    if isinstance(v, str) and from_text:
        if not _INT.match(v.strip()):
            raise _Bad(f"{v!r} is not an integer")
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise _Bad(f"expected an integer, got {type(v).__name__}")
    if not -(2**63) <= v < 2**63:
        raise _Bad("integer out of the 64-bit range")
    return v


def _float(v: Any, from_text: bool) -> float:
    if isinstance(v, str) and from_text:
        try:
            v = float(v)
        except ValueError:
            raise _Bad(f"{v!r} is not a number") from None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _Bad(f"expected a number, got {type(v).__name__}")
    try:
        f = float(v)
    except OverflowError:
        raise _Bad("number out of range") from None
    if not math.isfinite(f):
        raise _Bad("numbers must be finite (no NaN or infinity)")
    return f


def _bool(v: Any, from_text: bool) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and from_text:
        low = v.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    raise _Bad(f"{v!r} is not a boolean (true/false)")


def _date(v: Any, from_text: bool) -> str:
    if isinstance(v, dt.datetime):
        raise _Bad("expected a date, got a timestamp")
    if isinstance(v, dt.date):
        return v.isoformat()
    s = _text(v, from_text)
    if not _DATE.match(s):
        raise _Bad(f"{s!r} is not a date (YYYY-MM-DD)")
    try:
        dt.date.fromisoformat(s)
    except ValueError:
        raise _Bad(f"{s!r} is not a valid date") from None
    return s


def _month(v: Any, from_text: bool) -> str:
    s = _text(v, from_text)
    if not _MONTH.match(s):
        raise _Bad(f"{s!r} is not a month (YYYY-MM)")
    return s


def _no_pseudonyms(v: Any, from_text: bool) -> str:
    raise _Bad("this server cannot pseudonymise resident ID numbers (no pseudonym key is configured)")


CONVERTERS: dict[ColumnType, Callable[[Any, bool], Any]] = {
    ColumnType.resident_id: _no_pseudonyms,
    ColumnType.uscc: _uscc,
    ColumnType.string: _text,
    ColumnType.int: _int,
    ColumnType.float: _float,
    ColumnType.bool: _bool,
    ColumnType.date: _date,
    ColumnType.month: _month,
}


# --- the validator ------------------------------------------------------------------------------------


@dataclass
class Chunker:
    """Validates rows against a schema and groups them into column-major chunks."""

    schema: DatasetSchema
    chunk_rows: int = 65_536
    limits: UploadLimits = field(default_factory=UploadLimits)
    seen: int = 0
    """data rows read so far, good or bad (what :attr:`UploadLimits.rows` bounds)"""
    problems: list[RowProblem] = field(default_factory=list)
    problem_count: int = 0
    rows: int = 0
    _digests: array[int] = field(default_factory=lambda: array("Q"))
    _row_numbers: array[int] = field(default_factory=lambda: array("L"))
    _buffer: dict[str, list[Any]] = field(default_factory=dict)
    pseudonymize: Callable[[str], str] | None = None
    """resident ID number -> person code (``pps.identity.persons.Pseudonymizer.code``): what a resident_id
    column stores instead of the number"""

    def __post_init__(self) -> None:
        self._columns: list[ColumnSpec] = list(self.schema.columns)
        converters = dict(CONVERTERS)
        if self.pseudonymize is not None:
            converters[ColumnType.resident_id] = self._person_code
        self._convert = [(c.name, converters[c.type]) for c in self._columns]
        self._keys = self.schema.key_columns
        self._reset()

    def _person_code(self, v: Any, from_text: bool) -> str:
        assert self.pseudonymize is not None
        if isinstance(v, int) and not isinstance(v, bool):
            raise _Bad("a resident ID number must be text (as a number it loses its check character)")
        try:
            return self.pseudonymize(_text(v, from_text))
        except InvalidResidentID as exc:
            raise _Bad(exc.message) from None

    def _reset(self) -> None:
        self._buffer = {c.name: [] for c in self._columns}

    def admit(self) -> None:
        """Count one data row read from the file; refuse the upload at the first row past the limit."""
        self.seen += 1
        if self.seen > self.limits.rows:
            raise self.limits.refuse(
                "the file holds at least this many data rows:",
                self.seen,
                self.limits.rows,
                "PPS_UPLOAD_MAX_ROWS",
                "at the first row past the limit",
            )

    def admit_columns(self, count: int) -> None:
        if count > self.limits.columns:
            raise self.limits.refuse(
                "the file has this many columns:",
                count,
                self.limits.columns,
                "PPS_UPLOAD_MAX_COLUMNS",
                "before any row was read",
            )

    def problem(self, row: int, column: str | None, message: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_REPORTED:
            self.problems.append(RowProblem(row, column, message))

    def add(self, row: int, record: Mapping[str, Any], *, from_text: bool) -> dict[str, list[Any]] | None:
        """Validate one record; returns a full chunk when one is ready."""
        typed: dict[str, Any] = {}
        ok = True
        for name, convert in self._convert:
            raw = record.get(name)
            if raw is None or (from_text and raw == ""):
                typed[name] = None
                continue
            try:
                typed[name] = convert(raw, from_text)
            except _Bad as exc:
                self.problem(row, name, str(exc))
                ok = False
        if not ok:
            return None
        for name in self._keys:
            if typed[name] is None:
                self.problem(row, name, "key columns must not be empty")
                return None
        key = "\x1f".join(str(typed[k]) for k in self._keys).encode()
        self._digests.append(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little"))
        self._row_numbers.append(row)
        self.rows += 1
        if self.problem_count:
            return None  # keep validating to report every problem, but stop producing chunks
        for name, _ in self._convert:
            self._buffer[name].append(typed[name])
        if len(self._buffer[self._keys[0]]) >= self.chunk_rows:
            return self.flush()
        return None

    def flush(self) -> dict[str, list[Any]] | None:
        if self.problem_count or not self._buffer[self._keys[0]]:
            return None
        chunk = self._buffer
        self._reset()
        return chunk

    def check_columns(self, present: Iterable[str], row: int) -> None:
        declared = [c.name for c in self._columns]
        present = list(present)
        unknown = [c for c in present if c not in declared]
        missing = [c for c in declared if c not in present]
        dupes = sorted({c for c in present if present.count(c) > 1})
        if unknown:
            self.problem(row, None, f"unknown column(s) not in the schema: {', '.join(unknown)}")
        if missing:
            self.problem(row, None, f"declared column(s) missing from the file: {', '.join(missing)}")
        if dupes:
            self.problem(row, None, f"column(s) given twice: {', '.join(dupes)}")
        if self.problem_count:
            raise rejected(self.problems, self.problem_count)

    def _check_duplicates(self) -> None:
        digests = np.frombuffer(self._digests, dtype=np.uint64)
        if len(digests) < 2:
            return
        order = np.argsort(digests, kind="stable")
        same = np.flatnonzero(digests[order][1:] == digests[order][:-1])
        rows = np.frombuffer(
            self._row_numbers, dtype=np.uint32 if self._row_numbers.itemsize == 4 else np.uint64
        )
        dupes = sorted((int(rows[order[i + 1]]), int(rows[order[i]])) for i in same)
        keys = ", ".join(self._keys)
        for row, first in dupes:
            self.problem(row, None, f"duplicate key: the same ({keys}) as row {first}")

    def finish(self) -> None:
        self._check_duplicates()
        if self.problem_count:
            raise rejected(self.problems, self.problem_count)
        if self.rows == 0:
            raise rejected([RowProblem(1, None, "the file holds no data rows")], 1)


# --- readers ------------------------------------------------------------------------------------------


def _csv_rows(stream: IO[bytes], chunker: Chunker) -> Iterator[dict[str, list[Any]]]:
    text = io.TextIOWrapper(
        stream, encoding="utf-8-sig", errors="strict", newline=""
    )  # a BOM is not a column
    reader = csv.reader(text, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise rejected([RowProblem(1, None, "the file is empty")], 1) from None
    header = [h.strip() for h in header]
    chunker.admit_columns(len(header))
    chunker.check_columns(header, 1)
    width = len(header)
    row = 1
    for values in reader:
        row += 1
        if not values:
            continue
        chunker.admit()
        if len(values) != width:
            chunker.problem(row, None, f"expected {width} fields, got {len(values)}")
            continue
        chunk = chunker.add(row, dict(zip(header, values, strict=True)), from_text=True)
        if chunk is not None:
            yield chunk


class _DuplicateField(Exception):
    pass


def _record(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key, value in pairs:
        if key in record:  # which value would win is a parser's choice: refused, never guessed
            raise _DuplicateField(key)
        record[key] = value
    return record


def _ndjson_rows(stream: IO[bytes], chunker: Chunker) -> Iterator[dict[str, list[Any]]]:
    declared = {c.name for c in chunker.schema.columns}
    for row, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        chunker.admit()
        try:
            record = json.loads(line, object_pairs_hook=_record)
        except _DuplicateField as exc:
            chunker.problem(row, str(exc), "the field is given twice in this record")
            continue
        except RecursionError:
            chunker.problem(row, None, "JSON nested too deeply")
            continue
        except (ValueError, UnicodeDecodeError) as exc:
            chunker.problem(row, None, f"not a JSON object: {exc}")
            continue
        if not isinstance(record, dict):
            chunker.problem(row, None, "each line must be one JSON object")
            continue
        unknown = [k for k in record if k not in declared]
        if unknown:
            chunker.problem(row, None, f"unknown field(s) not in the schema: {', '.join(map(str, unknown))}")
            continue
        chunk = chunker.add(row, record, from_text=False)
        if chunk is not None:
            yield chunk


def _check_parquet_footer(pf: Any, chunker: Chunker) -> None:
    """Refuse a Parquet file by what its footer declares, before any row group is read."""
    meta = pf.metadata
    limits = chunker.limits
    chunker.admit_columns(meta.num_columns)
    before = "before any row group was read"
    if meta.num_rows > limits.rows:
        raise limits.refuse(
            "its Parquet footer declares this many data rows:",
            meta.num_rows,
            limits.rows,
            "PPS_UPLOAD_MAX_ROWS",
            before,
        )
    expanded = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if expanded > limits.expanded_bytes:
        raise limits.refuse(
            "its Parquet footer declares this many uncompressed bytes:",
            expanded,
            limits.expanded_bytes,
            "PPS_UPLOAD_MAX_EXPANDED_BYTES",
            before,
        )


def _decoded_bytes(batch: Any) -> int:
    """What a record batch takes once every dictionary-encoded value is written out (without doing so)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    total = 0
    for column in batch.columns:
        if pa.types.is_dictionary(column.type) and len(column.dictionary):
            lengths = pc.fill_null(pc.binary_length(column.dictionary), 0).to_numpy(zero_copy_only=False)
            indices = pc.fill_null(column.indices, 0).to_numpy(zero_copy_only=False)
            total += int(lengths[indices].sum()) + 8 * len(column)
        else:
            total += column.nbytes
    return total


def _parquet_rows(stream: IO[bytes], chunker: Chunker) -> Iterator[dict[str, list[Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(stream)
    except (pa.ArrowInvalid, OSError) as exc:
        raise rejected([RowProblem(1, None, f"not a Parquet file: {exc}")], 1) from None
    _check_parquet_footer(pf, chunker)
    chunker.check_columns(pf.schema_arrow.names, 1)
    # text columns are read as dictionaries (indices into the distinct values), so that what a batch would
    # expand to is summed before it is expanded: a few distinct long strings repeated over many rows
    texts = [
        f.name for f in pf.schema_arrow if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
    ]
    if texts:
        stream.seek(0)
        pf = pq.ParquetFile(stream, read_dictionary=texts)
    row = 0
    expanded = 0
    limit = chunker.limits.expanded_bytes
    try:
        for batch in pf.iter_batches(batch_size=chunker.chunk_rows):
            expanded += _decoded_bytes(batch)
            if expanded > limit:
                raise chunker.limits.refuse(
                    "its data rows decoded to at least this many bytes:",
                    expanded,
                    limit,
                    "PPS_UPLOAD_MAX_EXPANDED_BYTES",
                    f"after row {row}, before they were expanded",
                )
            for record in batch.to_pylist():
                row += 1
                chunker.admit()  # the footer's count is checked above; this holds if it lied
                chunk = chunker.add(row, record, from_text=False)
                if chunk is not None:
                    yield chunk
    except (pa.ArrowInvalid, OSError) as exc:
        chunker.problem(row + 1, None, f"unreadable Parquet data: {exc}")


def read_chunks(stream: IO[bytes], fmt: UploadFormat, chunker: Chunker) -> Iterator[dict[str, list[Any]]]:
    """Yield validated column-major chunks; raise :class:`~pps.errors.UploadRejected` at the end if anything was wrong."""
    readers = {
        UploadFormat.csv: _csv_rows,
        UploadFormat.ndjson: _ndjson_rows,
        UploadFormat.parquet: _parquet_rows,
    }
    try:
        yield from readers[fmt](stream, chunker)
    except UnicodeDecodeError as exc:
        chunker.problem(chunker.rows + 2, None, f"the file is not UTF-8 text: {exc.reason}")
    except csv.Error as exc:
        chunker.problem(chunker.rows + 2, None, f"malformed CSV: {exc}")
    last = chunker.flush()
    chunker.finish()
    if last is not None:
        yield last


def as_stream(data: bytes) -> IO[bytes]:
    return io.BytesIO(data)
