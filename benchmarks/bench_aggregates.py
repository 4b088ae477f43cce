"""Benchmark of aggregate queries under output controls: queries per second, against plain numpy.

    .venv/bin/python benchmarks/bench_aggregates.py            # 10^4 and 10^5 enterprises x 24 months
    .venv/bin/python benchmarks/bench_aggregates.py --quick    # 2,000 enterprises, a smoke run

For each size, the synthetic ``registry`` and ``tax`` datasets are uploaded (validated, encrypted) to a fresh
SQLite safe-room; a bank then asks, over all 24 months in platform scope:

* ``count``     enterprises with tax data, grouped by industry;
* ``sum``       of ``taxable_sales`` per enterprise clamped to [0, 10^6], grouped by size class;
* ``histogram`` of the same, 10 bins, micro enterprises only.

A query is the whole service path, in-process (no HTTP): a read transaction that checks the query and reads
the cached columns, then a write transaction that locks the bank's budget row, evaluates the policy and the
platform opt-in, computes the cells, checks every released cell against the bank's earlier cohorts
(differencing), spends epsilon, adds OpenDP noise, stores the cohorts and appends the ledger entry. The first
query of a size decrypts the columns into the cache and is shown apart ("cold").

The baseline is the same aggregate in plain numpy in the same process, from plaintext arrays already in
memory (subjects already mapped to registry rows, as the service's cache has them): per-enterprise sums with
``bincount``, clamp, group, ``numpy.random.laplace`` — no database, no controls, no ledger.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

console = Console(width=130)
UPPER = 1_000_000.0
EPS = 0.1


def build(n: int, tmp: Path) -> tuple[Any, Any, Any, float]:
    """A safe-room with registry + tax for ``n`` enterprises; returns (runtime, bank actor, data, upload s)."""
    from models.synth import generate
    from pps.data.datasets.ingest import UploadFormat
    from pps.data.datasets.schema import DatasetSchema
    from pps.infra.settings import Settings
    from pps.infra.storage.tables import Role
    from pps.ledger.entry import OPERATOR, Actor
    from pps.runtime import Runtime

    data = generate(n, seed=4, months=24)
    rt = Runtime.build(
        Settings(
            data_dir=tmp,
            checkpoint_interval_seconds=0,
            aggregate_max_epsilon=1.0,
            aggregate_default_budget=1_000_000,
        )
    )
    t0 = time.perf_counter()
    for table in (data.registry, data.tax):
        table.write_csv(tmp / "csv")
        content = (tmp / "csv" / f"{table.name}.csv").read_bytes()
        with rt.db.transaction() as s:
            org = rt.identity.create_org(
                s, name=f"provider {table.name}", role=Role.data_provider, uscc=None, actor=OPERATOR
            )
            ds = rt.datasets.create(
                s,
                provider_org_id=org.id,
                name=table.name,
                description="",
                schema=DatasetSchema.model_validate(table.schema),
                actor=OPERATOR,
            )
            rt.datasets.upload(s, ds, stream=io.BytesIO(content), fmt=UploadFormat.csv, actor=OPERATOR)
            if table.name == "tax":
                rt.aggregates.set_platform_aggregates(s, ds, True, actor=Actor(org.id, "data_provider"))
    uploaded = time.perf_counter() - t0
    with rt.db.transaction() as s:
        bank = rt.identity.create_org(s, name="Bank A", role=Role.bank, uscc=None, actor=OPERATOR)
    return rt, Actor(bank.id, "bank"), data, uploaded


def queries() -> dict[str, Any]:
    from pps.services.aggregates import AggregateSpec

    common: dict[str, Any] = {"scope": "platform", "purpose": "risk_statistics", "epsilon": EPS}
    measure: dict[str, Any] = {"dataset": "tax", "field": "taxable_sales"}
    return {
        "count": AggregateSpec("count", **common, **measure, group_by=("industry",)),
        "sum": AggregateSpec("sum", **common, **measure, group_by=("size_class",), lower=0.0, upper=UPPER),
        "histogram": AggregateSpec(
            "histogram",
            **common,
            **measure,
            cohort={"size_class": ["micro"]},
            lower=0.0,
            upper=UPPER,
            bins=10,
        ),
    }


def numpy_baselines(data: Any) -> dict[str, Callable[[], Any]]:
    """The same aggregates over plaintext in memory (prepared outside the timing, like the service's cache)."""
    reg, tax = data.registry.columns, data.tax.columns
    index = {u: i for i, u in enumerate(reg["uscc"].tolist())}
    subject = np.fromiter((index[u] for u in tax["uscc"].tolist()), dtype=np.intp, count=len(tax["uscc"]))
    n = len(reg["uscc"])
    sales = np.asarray(tax["taxable_sales"], dtype=np.float64)
    industry_codes, industry = np.unique(reg["industry"].astype(str), return_inverse=True)
    size_codes, size = np.unique(reg["size_class"].astype(str), return_inverse=True)
    micro = size == int(np.flatnonzero(size_codes == "micro")[0])
    rng = np.random.default_rng()

    def per_subject() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        valid = ~np.isnan(sales)
        has = np.bincount(subject[valid], minlength=n) > 0
        sums = np.bincount(subject[valid], weights=sales[valid], minlength=n)
        return has, np.clip(sums, 0.0, UPPER)

    def count() -> Any:
        has, _ = per_subject()
        cells = np.bincount(industry[has], minlength=len(industry_codes))
        return cells + rng.laplace(0, 1 / EPS, len(cells))

    def total() -> Any:
        has, sums = per_subject()
        cells = np.bincount(size[has], weights=sums[has], minlength=len(size_codes))
        return cells + rng.laplace(0, UPPER / EPS, len(cells))

    def histogram() -> Any:
        has, sums = per_subject()
        counts, _ = np.histogram(sums[has & micro], bins=10, range=(0.0, UPPER))
        return counts + rng.laplace(0, 1 / EPS, len(counts))

    return {"count": count, "sum": total, "histogram": histogram}


def timed(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="2,000 enterprises, 5 repeats")
    args = parser.parse_args()
    sizes, repeats = ([2_000], 5) if args.quick else (args.sizes, args.repeats)

    table = Table(title=f"aggregate queries, platform scope, 24 months, epsilon {EPS} (SQLite, in-process)")
    for col in (
        "enterprises",
        "tax rows",
        "query",
        "cells",
        "cold s",
        "service q/s",
        "ms/query",
        "numpy q/s",
        "ratio",
    ):
        table.add_column(col, justify="right")
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            rt, bank, data, uploaded = build(n, Path(tmp))
            console.print(f"{n:,} enterprises: registry + tax uploaded in {uploaded:.1f} s")
            baselines = numpy_baselines(data)
            for name, spec in queries().items():
                t0 = time.perf_counter()
                answer = rt.aggregates.answer(spec, actor=bank)
                cold = time.perf_counter() - t0
                service = timed(lambda s=spec, r=rt, b=bank: r.aggregates.answer(s, actor=b), repeats)
                base = timed(baselines[name], repeats)
                table.add_row(
                    f"{n:,}",
                    f"{data.tax.n_rows:,}",
                    name,
                    str(len(answer.cells)),
                    f"{cold:.2f}",
                    f"{1 / service:,.1f}",
                    f"{service * 1000:.1f}",
                    f"{1 / base:,.0f}",
                    f"{service / base:.0f}×",
                )
            rt.close()
    console.print(table)


if __name__ == "__main__":
    main()
