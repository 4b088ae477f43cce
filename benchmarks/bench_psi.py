#!/usr/bin/env python
"""Benchmark of PSI (``protocols.psi``): setup, online phase, and a repeat query served from the cache.

Run from the repository root::

    .venv/bin/python benchmarks/bench_psi.py            # server sets of 10^4, 10^5, 10^6; client 10^4
    .venv/bin/python benchmarks/bench_psi.py --quick    # smoke run, well under a minute

Per server-set size, each measured ``--repeats`` times (medians reported):

* **setup, 1 worker**: ``prepare_setup(..., shards=1, workers=1)``, the library's single-threaded cost;
* **setup, W workers**: ``W`` shards encrypted in ``W`` spawned processes (W = usable cores, or ``--workers``);
* **online**: client request + server re-encryption + client intersection against every shard;
* **first query**: what the service pays on a cache miss: ``ServerSet.of`` (canonicalise + digest) +
  ``SetupCache.get_or_prepare`` (miss: parallel setup) + online;
* **repeat query**: the same on a cache hit (digest + lookup + online).

Ratios: parallel speed-up (setup 1 worker / setup W workers) and repeat / first. Targets (issue 4): at
10^6 x 10^4, first query < 60 s and repeat < 5 s on the 2-core machine. The client set is half members,
half non-members. The machine is small and shared, and other sessions may be benchmarking at the same
time: figures are medians, but may still be noisy (the load average is printed).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from rich.console import Console
from rich.table import Table

from pps.identity.uscc import ALPHABET, new_uscc, validate_uscc
from pps.services.psi_cache import CacheOutcome, SetupCache
from protocols.psi import (
    DEFAULT_MAX_CLIENT_ITEMS,
    PreparedSetup,
    PSIParams,
    ServerSet,
    SetupStructure,
    default_workers,
    prepare_setup,
    run_locally,
)

FIRST_TARGET_S = 60.0
REPEAT_TARGET_S = 5.0
TARGET_SERVER = 1_000_000
TARGET_CLIENT = 10_000
T = TypeVar("T")

console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)


def uscc(n: int) -> str:
    """A valid USCC derived from ``n`` (distinct for distinct ``n``)."""
    digest = hashlib.sha256(n.to_bytes(8, "big")).digest()
    return new_uscc("91" + "630100", "".join(ALPHABET[b % len(ALPHABET)] for b in digest[:8]))


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f}" if seconds < 10 else f"{seconds:.1f}"


def fmt_n(n: int) -> str:
    exp = len(str(n)) - 1
    return f"10^{exp}" if n == 10**exp else f"{n:,}"


@dataclass
class Row:
    server: int
    client: int
    setup_1: list[float] = field(default_factory=list)
    setup_w: list[float] = field(default_factory=list)
    online: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    repeat: list[float] = field(default_factory=list)
    digest: list[float] = field(default_factory=list)
    wire: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def med(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")


def query(
    cache: SetupCache, items: list[str], client: list[str], params: PSIParams, workers: int, expected: int
) -> tuple[float, float, CacheOutcome, PreparedSetup]:
    """One PSI as the service runs it; returns (digest seconds, setup seconds, cache outcome, setup)."""
    start = time.perf_counter()
    server_set = ServerSet.of(items)  # the service forms the consented set anew for each query
    digested = time.perf_counter()
    setup, outcome = cache.get_or_prepare("bank", "credit", server_set, params, workers=workers)
    prepared = time.perf_counter()
    result, _ = run_locally(client, setup, normalise=validate_uscc, reveal_intersection=True)
    assert result.size >= expected, (result.size, expected)
    return digested - start, prepared - digested, outcome, setup


def bench_size(
    n_server: int, n_client: int, params: PSIParams, workers: int, repeats: int, skip_single: bool
) -> Row:
    row = Row(n_server, n_client)
    items = [uscc(i) for i in range(n_server)]
    half = n_client // 2
    client = [uscc(i) for i in range(half)] + [uscc(10**9 + i) for i in range(n_client - half)]
    expected = min(half, n_server)
    for r in range(repeats):
        console.print(f"  n={fmt_n(n_server)} repeat {r + 1}/{repeats}", style="dim")
        if not skip_single:
            t, _ = timed(
                partial(
                    prepare_setup, ServerSet.of(items), params, normalise=validate_uscc, shards=1, workers=1
                )
            )
            row.setup_1.append(t)
        cache = SetupCache()
        run = partial(query, cache, items, client, params, workers, expected)
        t_first, (t_digest, t_setup, outcome, setup) = timed(run)
        assert outcome is CacheOutcome.MISS
        row.first.append(t_first)
        row.setup_w.append(t_setup)
        row.digest.append(t_digest)
        t_repeat, (_, _, outcome, _) = timed(run)
        assert outcome is CacheOutcome.HIT
        row.repeat.append(t_repeat)
        for reveal in (True, False):
            t, _ = timed(
                partial(run_locally, client, setup, normalise=validate_uscc, reveal_intersection=reveal)
            )
            row.online.append(t)
        row.wire = {
            "setup": len(setup.message),
            "request": 11 + 33 * n_client,
            "response": 43 + 33 * n_client,
        }
    return row


def report(rows: list[Row], workers: int, structure: SetupStructure) -> None:
    table = Table(title=f"PSI ({structure.name}), client set {fmt_n(rows[0].client)}; medians, seconds")
    for col in (
        "server set",
        "setup 1 worker",
        f"setup {workers} workers",
        "speed-up",
        "digest",
        "online",
        "first query",
        "repeat query",
        "repeat / first",
        "setup bytes",
    ):
        table.add_column(col, justify="right")
    for row in rows:
        s1, sw = row.med(row.setup_1), row.med(row.setup_w)
        first, repeat = row.med(row.first), row.med(row.repeat)
        table.add_row(
            fmt_n(row.server),
            fmt_s(s1) if row.setup_1 else "-",
            fmt_s(sw),
            f"{s1 / sw:.2f}x" if row.setup_1 else "-",
            fmt_s(row.med(row.digest)),
            fmt_s(row.med(row.online)),
            fmt_s(first),
            fmt_s(repeat),
            f"{repeat / first:.3f}",
            f"{row.wire['setup']:,}",
        )
    console.print(table)
    console.print(
        f"request {rows[0].wire['request']:,} bytes, response {rows[0].wire['response']:,} bytes "
        f"(client set {rows[0].client:,}); online = request + re-encryption + intersection (median over both modes)"
    )
    target = next((r for r in rows if r.server == TARGET_SERVER and r.client == TARGET_CLIENT), None)
    if target is None:
        console.print(
            f"targets: not measured (need server {fmt_n(TARGET_SERVER)} x client {fmt_n(TARGET_CLIENT)})"
        )
        return
    first, repeat = target.med(target.first), target.med(target.repeat)
    for name, value, limit in (("first", first, FIRST_TARGET_S), ("repeat", repeat, REPEAT_TARGET_S)):
        verdict = "[green]met[/green]" if value < limit else "[red]NOT met[/red]"
        console.print(f"target {name} query < {limit:.0f} s at 10^6 x 10^4: {fmt_s(value)} s -> {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat (a smoke run)")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="server set sizes, comma-separated")
    parser.add_argument("--client", type=int, default=10_000, help="client set size")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (medians reported)")
    parser.add_argument("--workers", type=int, default=None, help="setup workers (default: usable cores)")
    parser.add_argument("--structure", choices=["gcs", "raw"], default="gcs", help="setup data structure")
    parser.add_argument("--fpr", type=float, default=1e-6, help="false-positive bound per query")
    parser.add_argument("--skip-single", action="store_true", help="skip the 1-worker setup baseline")
    args = parser.parse_args()

    sizes = [2_000, 20_000] if args.quick else [int(x) for x in args.sizes.split(",")]
    n_client = 1_000 if args.quick else args.client
    repeats = 1 if args.quick else args.repeats
    workers = args.workers or max(2, default_workers())
    structure = SetupStructure.GCS if args.structure == "gcs" else SetupStructure.RAW
    params = PSIParams(
        fpr=args.fpr, max_client_items=max(n_client, DEFAULT_MAX_CLIENT_ITEMS), structure=structure
    )

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    console.print(
        f"python {platform.python_version()}, {default_workers()} usable cores, load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; fpr {params.fpr:g}, max client items "
        f"{params.max_client_items:,}, {workers} setup workers; {repeats} repeat(s), medians. "
        "Shared machine: figures may be noisy."
    )
    rows = [bench_size(n, n_client, params, workers, repeats, args.skip_single) for n in sizes]
    report(rows, workers, structure)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    console.print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
