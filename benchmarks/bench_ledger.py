#!/usr/bin/env python
"""Benchmarks of the audit ledger (an RFC 6962 Merkle log stored in SQL).

Run from the repository root (``make bench`` runs the full set)::

    .venv/bin/python benchmarks/bench_ledger.py            # full run: 10^4, 10^5, 10^6 entries
    .venv/bin/python benchmarks/bench_ledger.py --quick    # smoke run, well under a minute

Three measurements, each printed as a table with a ratio against a baseline measured in the same process:

1. **Appends per second**, single (one transaction per append: ``Runtime.db.transaction()`` +
   ``Ledger.append``) and batched (``Ledger.append_many``, one transaction per batch), on SQLite (a temp
   file) and on PostgreSQL when reachable (a fresh schema, dropped at the end). Baseline: the same entry
   row (canonical JSON and leaf hash computed the same way) inserted alone into ``ledger_entries`` in the
   same kind of transaction, with no head lock, no frontier, no Merkle nodes and no index rows. Two entry
   kinds: ``bare`` (no objects or subjects: the ratio is the Merkle overhead alone) and ``typical`` (two
   objects and a subject, whose index rows the ledger also writes). Target: >= 2,000 single appends/s on
   SQLite.
2. **Proof generation** (``Ledger.inclusion_proof``, ``Ledger.consistency_proof``; median over random
   queries against the full tree) at each size, on SQLite, the ledger being filled with ``append_many``.
   Baseline: reading all leaf hashes and rebuilding every node (``merkle.perfect_levels``), which is
   what a naive O(n) implementation pays per proof. The growth exponent ``log(t2/t1) / log(n2/n1)``
   between consecutive sizes is ~0 for O(log n) and ~1 for O(n).
3. **verify_ledger** at each size (target: under 30 s at 10^6 entries). Baseline: reading all entry rows
   and SHA-256 hashing them.

Every figure is a median; the machine this runs on is usually small and noisy.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import os
import platform
import random
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, cast

import sqlalchemy
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, create_engine, event, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

import pps
from pps.infra.settings import Settings
from pps.infra.storage.tables import LedgerEntry, LedgerNode, utcnow
from pps.ledger.entry import Actor, EntryDraft, ObjectRef, canonical_bytes, entry_document
from pps.ledger.verify import verify_ledger
from pps.runtime import Runtime
from pps_wire import merkle

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SINGLE_TARGET = 2_000.0  # appends/s, single, SQLite
VERIFY_TARGET_S = 30.0  # seconds for verify_ledger at VERIFY_TARGET_SIZE entries
VERIFY_TARGET_SIZE = 1_000_000
_ENTRIES = cast(sqlalchemy.Table, LedgerEntry.__table__)

console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)


# --- synthetic entries ------------------------------------------------------------------------------------


APPEND_KINDS = ("bare", "typical")


def append_draft(kind: str) -> EntryDraft:
    """The entry appended in section 1.

    ``typical``: an access entry naming two objects and one subject, as the services write them; the
    ledger also stores its object and subject index rows, which the baseline does not.
    ``bare``: the same without objects and subjects, so that the ledger writes exactly the entry row, its
    Merkle nodes and the head: against the baseline (the entry row alone) this isolates the Merkle overhead.
    """
    typical = kind == "typical"
    return EntryDraft(
        action="query.run",
        actor=Actor(org_id="org_3f9c0a6b1d2e4f5a6b7c", role="bank"),
        objects=(
            (ObjectRef("dataset", "ds_0a1b2c3d4e5f60718293"), ObjectRef("query", "q_5f60718293a4b5c6d7e8"))
            if typical
            else ()
        ),
        subjects=("91350100M000100Y43",) if typical else (),
        purpose="credit_assessment",
        consent_ids=("cns_9a8b7c6d5e4f3a2b1c0d",),
        request_id="req_7d1e2f3a4b5c6d7e8f90",
        detail={"rows": 12, "template": "revenue_by_month"},
    )


def fill_drafts() -> list[EntryDraft]:
    """A small pool of small synthetic drafts (a few actions and actors, some with a subject)."""
    actions = ("org.create", "token.issue", "query.run", "consent.grant")
    pool = []
    for i in range(16):
        subjects = (f"91310000MA1FL{i:04d}X",) if i % 2 else ()
        pool.append(
            EntryDraft(
                action=actions[i % len(actions)],
                actor=Actor(org_id=f"org_bench_{i % 4}", role="bank"),
                objects=(ObjectRef("obj", f"o{i}"),),
                subjects=subjects,
                request_id=f"req_{i}",
            )
        )
    return pool


def entry_row(index: int, now: datetime, draft: EntryDraft) -> dict[str, Any]:
    """The ``ledger_entries`` row of ``draft`` at ``index``, built as ``Ledger.append_many`` builds it."""
    data = canonical_bytes(entry_document(index, now, draft))
    return {
        "idx": index,
        "entry": data,
        "leaf_hash": merkle.leaf_hash(data),
        "time": now,
        "actor_org_id": draft.actor.org_id,
        "action": draft.action,
        "purpose": draft.purpose,
        "request_id": draft.request_id,
    }


# --- statistics and formatting ----------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def fmt_rate(per_s: float) -> str:
    return f"{per_s:,.0f}"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.3f}" if seconds < 0.01 else f"{seconds * 1e3:,.1f}"


def fmt_s(seconds: float) -> str:
    return f"{seconds:,.3f}" if seconds < 10 else f"{seconds:,.1f}"


def fmt_size(n: int) -> str:
    exp = math.log10(n) if n > 0 else 0
    return f"10^{round(exp)}" if n > 1 and exp == round(exp) else f"{n:,}"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


# --- databases --------------------------------------------------------------------------------------------


def settings_for(data_dir: Path, database_url: str) -> Settings:
    # Everything given explicitly, so that PPS_* variables or a .env file cannot point the benchmark at a
    # real database or key directory.
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        key_dir=data_dir / "keys",
        environment="test",
        secret_key=secrets.token_urlsafe(48),
        checkpoint_interval_seconds=0,
        auto_migrate=True,
    )


@contextmanager
def sqlite_runtime(workdir: Path, name: str) -> Iterator[Runtime]:
    with tempfile.TemporaryDirectory(prefix=f"pps-bench-{name}-", dir=workdir) as tmp:
        data_dir = Path(tmp)
        rt = Runtime.build(settings_for(data_dir, f"sqlite:///{(data_dir / 'pps.db').as_posix()}"))
        try:
            yield rt
        finally:
            rt.close()


class Postgres:
    """Fresh schemas on one PostgreSQL database, each dropped when its block ends."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.admin: Engine = create_engine(
            url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}, pool_pre_ping=True
        )

    def probe(self) -> str:
        with self.admin.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar_one())

    @contextmanager
    def runtime(self, workdir: Path, name: str) -> Iterator[Runtime]:
        schema = f"bench_{name}_{uuid.uuid4().hex[:10]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(self.url).update_query_dict({"options": f"-csearch_path={schema}"})
        try:
            with tempfile.TemporaryDirectory(prefix=f"pps-bench-{name}-", dir=workdir) as tmp:
                rt = Runtime.build(settings_for(Path(tmp), url.render_as_string(hide_password=False)))
                try:
                    yield rt
                finally:
                    rt.close()
        finally:
            with self.admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))

    def close(self) -> None:
        self.admin.dispose()


# --- 1. appends -------------------------------------------------------------------------------------------


@dataclass
class AppendResult:
    backend: str
    mode: str
    entry: str
    per_txn: int
    ledger: list[float] = field(default_factory=list)  # appends/s, one value per repeat
    baseline: list[float] = field(default_factory=list)  # rows/s, one value per repeat

    @property
    def overhead(self) -> float:
        return median(self.baseline) / median(self.ledger)


class BaselineWriter:
    """Inserts entry rows alone (no head lock, no frontier, no Merkle nodes) into its own database."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.next_index = 0

    def insert(self, drafts: Sequence[EntryDraft]) -> None:
        with self.rt.db.transaction() as session:
            now = utcnow()
            rows = [entry_row(self.next_index + i, now, d) for i, d in enumerate(drafts)]
            session.connection().execute(_ENTRIES.insert(), rows)
        self.next_index += len(drafts)


def ledger_append_single(rt: Runtime, draft: EntryDraft, n: int) -> None:
    for _ in range(n):
        with rt.db.transaction() as session:
            rt.ledger.append(session, draft)


def ledger_append_batched(rt: Runtime, drafts: Sequence[EntryDraft], batches: int) -> None:
    for _ in range(batches):
        with rt.db.transaction() as session:
            rt.ledger.append_many(session, drafts)


def baseline_single(base: BaselineWriter, draft: EntryDraft, n: int) -> None:
    one = [draft]
    for _ in range(n):
        base.insert(one)


def baseline_batched(base: BaselineWriter, drafts: Sequence[EntryDraft], batches: int) -> None:
    for _ in range(batches):
        base.insert(drafts)


def bench_appends(
    backend: str, ledger_rt: Runtime, base_rt: Runtime, args: argparse.Namespace
) -> list[AppendResult]:
    base = BaselineWriter(base_rt)
    n_batched = args.batches * args.batch_size
    results: list[AppendResult] = []
    runs: list[tuple[list[float], Callable[[], None], int]] = []
    for kind in APPEND_KINDS:
        draft = append_draft(kind)
        batch = [draft] * args.batch_size
        single = AppendResult(backend, "single", kind, 1)
        batched = AppendResult(backend, "batched", kind, args.batch_size)
        results += [single, batched]
        # warm up both databases (connection pool, statement caches, first pages of the files)
        ledger_append_single(ledger_rt, draft, args.warmup)
        baseline_single(base, draft, args.warmup)
        ledger_append_batched(ledger_rt, batch, 1)
        baseline_batched(base, batch, 1)
        runs += [
            (single.ledger, partial(ledger_append_single, ledger_rt, draft, args.single_n), args.single_n),
            (single.baseline, partial(baseline_single, base, draft, args.single_n), args.single_n),
            (batched.ledger, partial(ledger_append_batched, ledger_rt, batch, args.batches), n_batched),
            (batched.baseline, partial(baseline_batched, base, batch, args.batches), n_batched),
        ]
    for r in range(args.repeats):
        # interleave everything and alternate the order, so that the machine's drift favours no column
        for sink, fn, count in runs if r % 2 == 0 else reversed(runs):
            elapsed, _ = timed(fn)
            sink.append(count / elapsed)
    with ledger_rt.db.transaction(write=False) as session:
        size = ledger_rt.ledger.size(session)
        root = ledger_rt.ledger.root(session)
    per_kind = args.warmup + args.batch_size + args.repeats * (args.single_n + n_batched)
    if size != len(APPEND_KINDS) * per_kind:
        raise SystemExit(
            f"{backend}: the ledger holds {size} entries, expected {len(APPEND_KINDS) * per_kind}"
        )
    if not root:
        raise SystemExit(f"{backend}: empty root")
    return results


def print_appends(results: list[AppendResult], args: argparse.Namespace) -> None:
    table = Table(
        title=f"1. Ledger appends per second (median of {args.repeats} repeats)",
        caption="baseline = the same entry row (canonical JSON + leaf hash) inserted alone in the same kind "
        "of transaction: no head lock, no frontier, no Merkle nodes, no object/subject index rows. "
        "overhead = baseline / ledger. bare entry: no objects or subjects, so its overhead is the Merkle "
        "overhead alone; typical entry: 2 objects + 1 subject, whose index rows the ledger also writes.",
    )
    for col in ("backend", "mode", "entry", "per txn", "ledger appends/s", "min-max", "µs/append"):
        table.add_column(col, justify="left" if col in ("backend", "mode", "entry") else "right")
    for col in ("baseline rows/s", "min-max ", "overhead x"):
        table.add_column(col, justify="right")
    for res in results:
        med = median(res.ledger)
        table.add_row(
            res.backend,
            res.mode,
            res.entry,
            str(res.per_txn),
            fmt_rate(med),
            f"{fmt_rate(min(res.ledger))}-{fmt_rate(max(res.ledger))}",
            f"{1e6 / med:,.0f}",
            fmt_rate(median(res.baseline)),
            f"{fmt_rate(min(res.baseline))}-{fmt_rate(max(res.baseline))}",
            f"{res.overhead:.2f}",
        )
    console.print(table)
    for res in results:
        if res.backend == "sqlite" and res.mode == "single":
            med = median(res.ledger)
            if med >= SINGLE_TARGET:
                verdict = f"[green]MET[/] ({fmt_rate(med)}/s, {med / SINGLE_TARGET - 1:+.1%} vs target)"
            else:
                verdict = f"[red]MISSED[/] by {1 - med / SINGLE_TARGET:.1%} ({fmt_rate(med)}/s)"
            console.print(
                f"Target >= {SINGLE_TARGET:,.0f} single appends/s on SQLite, {res.entry} entry: {verdict}"
            )
            if min(res.ledger) < SINGLE_TARGET <= med:
                console.print(
                    f"  note: the slowest repeat ({fmt_rate(min(res.ledger))}/s) was below the target; "
                    "the margin is thin on this machine"
                )
    console.print()


# --- 2. proofs --------------------------------------------------------------------------------------------


@dataclass
class ProofResult:
    size: int
    fill_s: float
    fill_entries: int
    inclusion: list[float]
    consistency: list[float]
    inclusion_len: float
    consistency_len: float
    rebuild: list[float]
    rebuild_read: list[float]
    plan: str
    full_scan: bool

    @property
    def fill_rate(self) -> float:
        return self.fill_entries / self.fill_s if self.fill_s else 0.0


def fill_to(rt: Runtime, target: int, pool: Sequence[EntryDraft], batch: int) -> tuple[float, int]:
    """Append synthetic entries until the ledger holds ``target``; returns (seconds, entries appended)."""
    with rt.db.transaction(write=False) as session:
        size = rt.ledger.size(session)
    added = size
    start = time.perf_counter()
    while size < target:
        count = min(batch, target - size)
        drafts = [pool[(size + i) % len(pool)] for i in range(count)]
        with rt.db.transaction() as session:
            rt.ledger.append_many(session, drafts)
        size += count
    return time.perf_counter() - start, size - added


def read_leaves(session: Session) -> list[bytes]:
    rows = session.execute(
        select(LedgerNode.hash)
        .where(LedgerNode.level == 0)
        .order_by(LedgerNode.index)
        .execution_options(yield_per=20_000)
    )
    return [bytes(h) for (h,) in rows]


def root_at(levels: list[list[bytes]], size: int) -> bytes:
    return merkle.fold_right([levels[lvl][i] for lvl, i in merkle.perfect_subtrees(0, size)])


def node_query_plan(rt: Runtime, session: Session, index: int, size: int) -> tuple[str, bool]:
    """EXPLAIN the node lookup exactly as ``Ledger.inclusion_proof`` sends it (SQLite only)."""
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool) -> None:
        if "ledger_nodes" in statement:
            captured.append((statement, parameters))

    engine = rt.db.engine
    event.listen(engine, "before_cursor_execute", capture)
    try:
        rt.ledger.inclusion_proof(session, index, size)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    if not captured or not rt.db.is_sqlite:
        return "n/a", False
    statement, params = captured[0]
    rows = session.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + statement, tuple(params)).all()
    details = [str(row[-1]) for row in rows]
    full_scan = any(d.startswith("SCAN ledger_nodes") for d in details)
    return "; ".join(d for d in details if "ledger_nodes" in d or "SUBQUERY" in d)[:200], full_scan


def bench_proofs_at(rt: Runtime, size: int, fill: tuple[float, int], args: argparse.Namespace) -> ProofResult:
    rng = random.Random(args.seed + size)
    incl_queries = [rng.randrange(size) for _ in range(args.queries)]
    cons_queries = [rng.randrange(1, size) if size > 1 else 1 for _ in range(args.queries)]
    incl_times: list[float] = []
    cons_times: list[float] = []
    incl_proofs: list[list[bytes]] = []
    cons_proofs: list[list[bytes]] = []
    ledger = rt.ledger
    with rt.db.transaction(write=False) as session:
        # warm-up: the first queries pay for statement compilation and cold pages
        for index in incl_queries[:5]:
            ledger.inclusion_proof(session, index, size)
        gc.collect()
        for index in incl_queries:
            t0 = time.perf_counter()
            proof = ledger.inclusion_proof(session, index, size)
            incl_times.append(time.perf_counter() - t0)
            incl_proofs.append(proof)
        for first in cons_queries:
            t0 = time.perf_counter()
            proof = ledger.consistency_proof(session, first, size)
            cons_times.append(time.perf_counter() - t0)
            cons_proofs.append(proof)
        plan, full_scan = node_query_plan(rt, session, incl_queries[0], size)

    # baseline: what a naive implementation pays for each proof: read every leaf hash, rebuild every node
    rebuild: list[float] = []
    rebuild_read: list[float] = []
    levels: list[list[bytes]] = []
    for _ in range(args.rebuild_repeats):
        levels = []  # free the previous tree before timing the next one
        with rt.db.transaction(write=False) as session:
            gc.collect()
            t0 = time.perf_counter()
            leaves = read_leaves(session)
            t1 = time.perf_counter()
            levels, _frontier = merkle.perfect_levels(leaves)
            t2 = time.perf_counter()
        rebuild.append(t2 - t0)
        rebuild_read.append(t1 - t0)

    # the proofs must be right, or their speed means nothing
    root = root_at(levels, size)
    with rt.db.transaction(write=False) as session:
        if ledger.root(session, size) != root:
            raise SystemExit(f"size {size}: the ledger's root differs from the rebuilt tree's root")
    for index, proof in list(zip(incl_queries, incl_proofs, strict=True))[: args.check]:
        merkle.verify_inclusion(index, size, levels[0][index], proof, root)
    for first, proof in list(zip(cons_queries, cons_proofs, strict=True))[: args.check]:
        merkle.verify_consistency(first, size, root_at(levels, first), root, proof)

    return ProofResult(
        size=size,
        fill_s=fill[0],
        fill_entries=fill[1],
        inclusion=incl_times,
        consistency=cons_times,
        inclusion_len=median([len(p) for p in incl_proofs]),
        consistency_len=median([len(p) for p in cons_proofs]),
        rebuild=rebuild,
        rebuild_read=rebuild_read,
        plan=plan,
        full_scan=full_scan,
    )


def growth_exponent(prev: ProofResult | None, cur: ProofResult, attr: str) -> str:
    if prev is None:
        return "-"
    t_prev, t_cur = median(getattr(prev, attr)), median(getattr(cur, attr))
    return f"{math.log(t_cur / t_prev) / math.log(cur.size / prev.size):.2f}"


def print_proofs(results: list[ProofResult], args: argparse.Namespace) -> None:
    table = Table(
        title=f"2. Proof generation on SQLite (median of {args.queries} random queries, tree = whole ledger)",
        caption="baseline = read all leaf hashes + rebuild every node (merkle.perfect_levels), the cost of a "
        "naive O(n) proof; median of "
        f"{args.rebuild_repeats}. speed-up = baseline / proof. exponent = log(t2/t1)/log(n2/n1): ~0 is "
        "O(log n), ~1 is O(n).",
    )
    cols = (
        "entries",
        "inclusion ms (p95)",
        "exp.",
        "consistency ms (p95)",
        "exp.",
        "proof len",
        "baseline s (read)",
        "speed-up incl.",
        "speed-up cons.",
    )
    for col in cols:
        table.add_column(col, justify="right")
    prev: ProofResult | None = None
    for res in results:
        base = median(res.rebuild)
        table.add_row(
            fmt_size(res.size),
            f"{fmt_ms(median(res.inclusion))} ({fmt_ms(p95(res.inclusion))})",
            growth_exponent(prev, res, "inclusion"),
            f"{fmt_ms(median(res.consistency))} ({fmt_ms(p95(res.consistency))})",
            growth_exponent(prev, res, "consistency"),
            f"{res.inclusion_len:g} / {res.consistency_len:g}",
            f"{fmt_s(base)} ({fmt_s(median(res.rebuild_read))})",
            f"{base / median(res.inclusion):,.1f}x",
            f"{base / median(res.consistency):,.1f}x",
        )
        prev = res
    console.print(table)
    for res in results:
        console.print(
            f"fill to {fmt_size(res.size)}: {res.fill_entries:,} entries appended with append_many "
            f"(batches of {args.fill_batch:,}) in {fmt_s(res.fill_s)} s = {fmt_rate(res.fill_rate)}/s"
        )
    if len(results) >= 2:
        first, last = results[0], results[-1]
        growth = median(last.inclusion) / median(first.inclusion)
        size_growth = last.size / first.size
        log_growth = math.log2(last.size) / math.log2(first.size)
        flat = growth <= max(3.0, 2 * log_growth)
        verdict = "[green]flat-ish (consistent with O(log n))[/]" if flat else "[red]NOT flat[/]"
        console.print(
            f"Inclusion proof time grew {growth:,.1f}x while n grew {size_growth:,.0f}x "
            f"(log n grew {log_growth:.2f}x): {verdict}"
        )
    scans = [r for r in results if r.full_scan]
    console.print(f"node lookup query plan (SQLite EXPLAIN QUERY PLAN): {results[-1].plan}")
    if scans:
        console.print(
            "[red]  the node lookup scans the whole ledger_nodes table[/] (SQLite does not serve a row-value "
            "IN over a VALUES list from the (level, index) primary key), so each proof costs O(n)"
        )
    console.print()


# --- 3. verify_ledger -------------------------------------------------------------------------------------


@dataclass
class VerifyResult:
    size: int
    verify: list[float]
    baseline: list[float]
    checkpoints: int


def read_and_hash(session: Session) -> int:
    count = 0
    rows = session.execute(
        select(LedgerEntry.idx, LedgerEntry.entry)
        .order_by(LedgerEntry.idx)
        .execution_options(yield_per=20_000)
    )
    sha256 = hashlib.sha256
    for row in rows:
        sha256(b"\x00" + bytes(row.entry)).digest()
        count += 1
    return count


def bench_verify_at(rt: Runtime, size: int, first_note: str | None, args: argparse.Namespace) -> VerifyResult:
    repeats = args.verify_repeats
    verify_times: list[float] = []
    base_times: list[float] = []
    checkpoints = 0
    for _ in range(repeats):
        with rt.db.transaction(write=False) as session:
            elapsed, report = timed(partial(verify_ledger, session, rt.ledger, against=first_note))
        if report.tree_size != size:
            raise SystemExit(f"verify_ledger saw {report.tree_size} entries, expected {size}")
        checkpoints = report.checkpoints_checked
        verify_times.append(elapsed)
        with rt.db.transaction(write=False) as session:
            elapsed, count = timed(partial(read_and_hash, session))
        if count != size:
            raise SystemExit(f"read {count} entries, expected {size}")
        base_times.append(elapsed)
    return VerifyResult(size, verify_times, base_times, checkpoints)


def print_verify(results: list[VerifyResult]) -> None:
    table = Table(
        title="3. verify_ledger on SQLite (median)",
        caption="baseline = read all entry rows (idx, entry) in index order and SHA-256 them; "
        "ratio = verify / baseline.",
    )
    for col in ("entries", "runs", "verify_ledger s", "entries/s", "baseline s", "ratio x", "checkpoints"):
        table.add_column(col, justify="right")
    for res in results:
        v = median(res.verify)
        table.add_row(
            fmt_size(res.size),
            str(len(res.verify)),
            fmt_s(v),
            fmt_rate(res.size / v),
            fmt_s(median(res.baseline)),
            f"{v / median(res.baseline):.1f}",
            str(res.checkpoints),
        )
    console.print(table)
    at_target = [r for r in results if r.size == VERIFY_TARGET_SIZE]
    if at_target:
        v = median(at_target[0].verify)
        if v < VERIFY_TARGET_S:
            verdict = f"[green]MET[/] ({fmt_s(v)} s, {1 - v / VERIFY_TARGET_S:.0%} headroom)"
        else:
            verdict = (
                f"[red]MISSED[/] by {v - VERIFY_TARGET_S:.1f} s ({fmt_s(v)} s, {v / VERIFY_TARGET_S:.2f}x)"
            )
        console.print(f"Target verify_ledger < {VERIFY_TARGET_S:.0f} s at 10^6 entries: {verdict}")
    else:
        console.print("Target verify_ledger < 30 s at 10^6 entries: not measured (10^6 is not among --sizes)")
    console.print()


# --- main -------------------------------------------------------------------------------------------------


def parse_sizes(value: str) -> list[int]:
    try:
        sizes = sorted({int(float(part)) for part in value.split(",") if part.strip()})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of sizes: {value!r}") from exc
    if not sizes or sizes[0] < 2:
        raise argparse.ArgumentTypeError("sizes must be integers >= 2")
    return sizes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark the PPS audit ledger: appends/s, proof generation, verify_ledger. "
        "Defaults in brackets are [full run; --quick].",
    )
    p.add_argument(
        "--sizes",
        type=parse_sizes,
        default=None,
        help="ledger sizes for proofs and verify [10000,100000,1000000; 1000,10000]",
    )
    p.add_argument("--quick", action="store_true", help="small sizes and counts: a smoke run of 10-20 s")
    p.add_argument("--skip-postgres", action="store_true", help="do not try PostgreSQL")
    p.add_argument(
        "--pg-url",
        default=DEFAULT_PG_URL,
        help=f"PostgreSQL database to create schemas in [{DEFAULT_PG_URL}]",
    )
    p.add_argument(
        "--only",
        choices=("appends", "proofs", "verify"),
        action="append",
        help="run only these sections (repeatable) [all]",
    )
    p.add_argument("--repeats", type=int, default=None, help="repeats of each append measurement [5; 3]")
    p.add_argument("--single-n", type=int, default=None, help="single appends per repeat [2000; 300]")
    p.add_argument("--batch-size", type=int, default=1000, help="entries per append_many transaction [1000]")
    p.add_argument("--batches", type=int, default=None, help="append_many transactions per repeat [10; 3]")
    p.add_argument("--warmup", type=int, default=200, help="single appends before measuring [200; 50]")
    p.add_argument(
        "--fill-batch", type=int, default=10_000, help="entries per append_many when filling [10000]"
    )
    p.add_argument("--queries", type=int, default=None, help="random proof queries per size [200; 50]")
    p.add_argument("--rebuild-repeats", type=int, default=None, help="baseline rebuilds per size [3; 1]")
    p.add_argument("--verify-repeats", type=int, default=None, help="verify_ledger runs per size [3; 1]")
    p.add_argument(
        "--check", type=int, default=20, help="proofs per size checked against the rebuilt tree [20]"
    )
    p.add_argument("--seed", type=int, default=6962, help="seed of the random proof queries [6962]")
    p.add_argument(
        "--workdir", type=Path, default=None, help="where the temporary SQLite files go [system temp]"
    )
    p.add_argument("--json", type=Path, default=None, help="also write the raw measurements (JSON) here")
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {
        "sizes": [1_000, 10_000] if quick else [10_000, 100_000, 1_000_000],
        "repeats": 3 if quick else 5,
        "single_n": 300 if quick else 2_000,
        "batches": 3 if quick else 10,
        "queries": 50 if quick else 200,
        "rebuild_repeats": 1 if quick else 3,
        "verify_repeats": 1 if quick else 3,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if quick:
        args.warmup = min(args.warmup, 50)
    if args.queries < 1 or args.repeats < 1 or args.rebuild_repeats < 1 or args.verify_repeats < 1:
        p.error("--queries, --repeats, --rebuild-repeats and --verify-repeats must be >= 1")
    args.only = set(args.only or ("appends", "proofs", "verify"))
    return args


def source_info() -> str:
    """Which ``pps`` is measured: its directory and, in a git checkout, the commit and whether it is dirty."""
    root = Path(pps.__file__).resolve().parent.parent

    def git(*cmd: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(root), *cmd], capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root:
            raise subprocess.SubprocessError("pps is not at the top of the checkout")
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "pps")
    except (OSError, subprocess.SubprocessError):
        return f"{root} (not a git checkout)"
    return f"{root} at commit {commit}" + (" + uncommitted changes under pps/" if dirty else "")


def machine_info(pg_version: str | None) -> dict[str, Any]:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = os.cpu_count() or 0
    return {
        "cpus": affinity,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": sqlalchemy.__version__,
        "postgresql": pg_version,
        "pps": source_info(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.gettempdir())
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    pg: Postgres | None = None
    pg_version: str | None = None
    pg_note = "skipped (--skip-postgres)"
    if not args.skip_postgres and "appends" in args.only:
        candidate = Postgres(args.pg_url)
        try:
            pg_version = candidate.probe()
            pg = candidate
            pg_note = (
                f"PostgreSQL {pg_version} at {make_url(args.pg_url).render_as_string(hide_password=True)}"
            )
        except Exception as exc:  # any failure to connect means: no PostgreSQL here
            candidate.close()
            pg_note = f"unreachable, skipped ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"

    info = machine_info(pg_version)
    console.print(
        f"[bold]PPS ledger benchmark[/] {'(quick) ' if args.quick else ''}— {info['cpus']} CPUs, "
        f"Python {info['python']}, SQLite {info['sqlite']}, SQLAlchemy {info['sqlalchemy']}, "
        f"{info['platform']}"
    )
    console.print(f"pps measured: {info['pps']}")
    console.print(f"sizes: {', '.join(f'{n:,}' for n in args.sizes)}; PostgreSQL: {pg_note}\n")
    out: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": info}

    try:
        if "appends" in args.only:
            appends: list[AppendResult] = []
            with sqlite_runtime(workdir, "sqlite") as rt, sqlite_runtime(workdir, "sqlite-base") as base:
                appends += bench_appends("sqlite", rt, base, args)
            if pg is not None:
                with pg.runtime(workdir, "pg") as rt, pg.runtime(workdir, "pgbase") as base:
                    appends += bench_appends("postgresql", rt, base, args)
            print_appends(appends, args)
            out["appends"] = [vars(r) | {"overhead": r.overhead} for r in appends]

        if args.only & {"proofs", "verify"}:
            proofs: list[ProofResult] = []
            verifies: list[VerifyResult] = []
            with sqlite_runtime(workdir, "sizes") as rt:
                pool = fill_drafts()
                first_note: str | None = None
                for size in args.sizes:
                    fill = fill_to(rt, size, pool, args.fill_batch)
                    with rt.db.transaction() as session:
                        note = rt.ledger.publish_checkpoint(session).note
                    first_note = first_note or note
                    if "proofs" in args.only:
                        proofs.append(bench_proofs_at(rt, size, fill, args))
                        console.print(
                            f"  [dim]{fmt_size(size)}: inclusion {fmt_ms(median(proofs[-1].inclusion))} ms, "
                            f"rebuild {fmt_s(median(proofs[-1].rebuild))} s[/]"
                        )
                    if "verify" in args.only:
                        verifies.append(bench_verify_at(rt, size, first_note, args))
                        took = median(verifies[-1].verify)
                        console.print(f"  [dim]{fmt_size(size)}: verify_ledger {fmt_s(took)} s[/]")
            console.print()
            if proofs:
                print_proofs(proofs, args)
                out["proofs"] = [vars(r) for r in proofs]
            if verifies:
                print_verify(verifies)
                out["verify"] = [vars(r) for r in verifies]
    finally:
        if pg is not None:
            pg.close()

    total = time.perf_counter() - started
    console.print(f"total time: {total:,.0f} s")
    out["total_seconds"] = total
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
