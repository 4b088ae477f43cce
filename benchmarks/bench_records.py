#!/usr/bin/env python
"""What dishonesty records cost the safe-room: the feature table with and without them, the release check.

Run from the repository root::

    .venv/bin/python benchmarks/bench_records.py              # 10^5 enterprises
    .venv/bin/python benchmarks/bench_records.py --n 20000    # smaller

Set-up (not timed): synthetic platform data for ``--n`` enterprises (``models.synth.generate``; about 6 % of
them have dishonesty records) uploaded as provider datasets into a fresh embedded database (SQLite), and
``--repaired`` of the records written as repaired (``record_exclusions``).

Timed, in the same process: (1) the baseline — the feature table from the six datasets without the records
source; (2) the same with the ``penalties`` source bound, its records read, filtered (repairs, publicity,
retention) and counted; (3) the release check (:meth:`pps.governance.records.RecordBook.withheld`) for a
portfolio of every enterprise, as a scoring release makes it. The ratio (2)/(1) is what records add to a
feature-table build; (3) is per release.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks._platform import upload_provider_tables
from models.synth import generate
from pps.data.features import FeatureStore
from pps.governance.records import RecordBook
from pps.infra.settings import Settings
from pps.infra.storage.tables import RecordExclusion, utcnow
from pps.ledger.entry import Actor
from pps.runtime import Runtime

OPERATOR = Actor(None, "operator", "cli")
console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repaired", type=float, default=0.2, help="share of records written as repaired")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        settings = Settings(
            _env_file=None,
            data_dir=tmp / "data",
            database_url=f"sqlite:///{tmp / 'pps.db'}",
            environment="development",
            checkpoint_interval_seconds=0,
        )
        rt = Runtime.build(settings)
        data = generate(args.n, 7)
        ids = upload_provider_tables(rt, data, tmp)
        with rt.db.transaction() as s:
            assert data.penalties is not None
            records = list(
                zip(
                    data.penalties.columns["uscc"].tolist(),
                    data.penalties.columns["record_id"].tolist(),
                    strict=True,
                )
            )
            for uscc, rid in records[: int(len(records) * args.repaired)]:
                s.add(
                    RecordExclusion(
                        dataset_id=ids["penalties"],
                        record_id=rid,
                        subject_uscc=uscc,
                        reason="repaired",
                        excluded_at=utcnow(),
                    )
                )
        rows = []

        # (1) baseline: no records source bound (the penalties dataset retired for the measurement)
        from pps.data.sources import SOURCES, bind_sources

        without = tuple(n for n in SOURCES if n != "penalties")
        store = FeatureStore(rt.datasets)
        with rt.db.transaction(write=False) as s:
            binding = bind_sources(s, without)
            t0 = time.perf_counter()
            base = store.table(s, binding)
            baseline = time.perf_counter() - t0
        rows.append(("feature table, six sources (baseline)", baseline, len(base.usccs)))

        store = FeatureStore(rt.datasets)
        with rt.db.transaction(write=False) as s:
            t0 = time.perf_counter()
            full = store.table(s)
            with_records = time.perf_counter() - t0
        counted = sum(len(v) for v in full.counted.values())
        rows.append(("feature table, with dishonesty records", with_records, counted))

        with rt.db.transaction(write=False) as s:
            t0 = time.perf_counter()
            held = RecordBook.withheld(s, full.counted, full.usccs)
            check = time.perf_counter() - t0
        rows.append(("release check, every enterprise", check, len(held)))
        rt.close()

    out = Table(
        title=f"dishonesty records, {args.n:,} enterprises, {len(records):,} records, {args.repaired:.0%} repaired"
    )
    out.add_column("what")
    out.add_column("seconds", justify="right")
    out.add_column("rows / records counted / withheld", justify="right")
    for what, seconds, n in rows:
        out.add_row(what, f"{seconds:.3f}", f"{n:,}")
    console.print(out)
    console.print(f"ratio with records / baseline: {with_records / baseline:.2f}")


if __name__ == "__main__":
    main()
