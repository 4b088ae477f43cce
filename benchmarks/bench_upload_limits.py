"""What a Parquet "row bomb" costs before it is refused: the footer check against full validation.

    .venv/bin/python benchmarks/bench_upload_limits.py                # the issue's file: 3,000,000 rows, ~70 kB
    .venv/bin/python benchmarks/bench_upload_limits.py --rows 300000 --max-rows 100000  # a smoke run

A Parquet file of the tax schema whose rows are all the same (dictionary- and run-length-encoded, zstd) declares
``--rows`` rows in ~70 kB. Both runs read it with the service's reader (``pps.data.datasets.ingest``) in this
process: with the default limits (refused by its footer, before any row group is read) and, as the baseline,
with the limits raised so that it is read and validated row by row until the duplicate keys refuse it. Each run
is timed (one run each: the baseline takes a minute at 3·10^6); memory is the growth of the process's peak
resident set (the limited run goes first) and Arrow's pool peak; the table prints the ratio baseline / limited.
"""

from __future__ import annotations

import argparse
import io
import resource
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

console = Console(width=120)


def bomb(rows: int) -> bytes:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.helpers import uscc_for

    idx = pa.array(np.zeros(rows, dtype=np.int32))
    values = {
        "uscc": uscc_for(1),
        "month": "2024-01",
        "tax_paid": 1.5,
        "headcount": 3,
        "filed_on": "2024-01-15",
        "late": False,
        "note": "x",
    }
    table = pa.table({k: pa.DictionaryArray.from_arrays(idx, pa.array([v])) for k, v in values.items()})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=rows)
    return buf.getvalue()


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB


def read(data: bytes, limits: object) -> tuple[float, int, int, str]:
    """(seconds, Arrow peak bytes, growth of the peak RSS, outcome) of reading ``data`` under ``limits``."""
    import pyarrow as pa

    from pps.data.datasets.ingest import Chunker, UploadFormat, UploadLimits, read_chunks
    from pps.data.datasets.schema import DatasetSchema
    from pps.errors import PPSError
    from tests.pps.data.datasets.conftest import TAX_SCHEMA

    assert isinstance(limits, UploadLimits)
    chunker = Chunker(DatasetSchema.model_validate(TAX_SCHEMA), limits=limits)
    pool = pa.default_memory_pool()
    base = pool.max_memory() or 0
    rss = peak_rss()
    start = time.perf_counter()
    try:
        for _ in read_chunks(io.BytesIO(data), UploadFormat.parquet, chunker):
            pass
        outcome = "accepted"
    except PPSError as exc:
        outcome = exc.code
    seconds = time.perf_counter() - start
    grown = peak_rss() - rss
    return seconds, max(0, (pool.max_memory() or 0) - base), grown, f"{outcome} after {chunker.seen:,} rows"


def main() -> None:
    from pps.data.datasets.ingest import UploadLimits

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=3_000_000, help="rows the bomb declares")
    parser.add_argument(
        "--max-rows",
        type=int,
        default=UploadLimits().rows,
        help="the row limit of the limited run (the default's)",
    )
    args = parser.parse_args()
    data = bomb(args.rows)
    read(bomb(1000), UploadLimits())  # warm: imports and Arrow's first allocations are nobody's cost
    limited = read(data, UploadLimits(rows=args.max_rows))
    baseline = read(data, UploadLimits(rows=10**10, expanded_bytes=1 << 50))
    table = Table(title=f"a Parquet file of {args.rows:,} identical rows, {len(data) / 1024:.0f} kB")
    for col in ("reader", "seconds", "Arrow peak MB", "peak RSS growth MB", "outcome"):
        table.add_column(col, justify="left" if col in ("reader", "outcome") else "right")
    runs = ((f"limit {args.max_rows:,} rows", limited), ("no limits (baseline)", baseline))
    for name, (sec, arrow, py, outcome) in runs:
        table.add_row(name, f"{sec:.4f}", f"{arrow / 1e6:.1f}", f"{py / 1e6:.1f}", outcome)
    console.print(table)
    console.print(
        f"ratio baseline / limited: time {baseline[0] / limited[0]:,.0f}x; memory "
        f"{(baseline[1] + baseline[2]) / 1e6:,.0f} MB against {(limited[1] + limited[2]) / 1e6:,.1f} MB"
    )


if __name__ == "__main__":
    main()
