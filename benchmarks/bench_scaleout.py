#!/usr/bin/env python
"""Scale-out benchmark (``pps.infra.executor``): encrypted scoring and PSI setup at 10^6 on each execution backend.

Run from the repository root::

    .venv/bin/python benchmarks/bench_scaleout.py            # 10^6 enterprises x 20 features; PSI at 10^6
    .venv/bin/python benchmarks/bench_scaleout.py --quick    # 10^5, one repeat, PSI at 10^5 (a smoke run)

What is measured (each scoring configuration ``--repeats`` times, medians reported):

* **Encrypted scoring of N enterprises** through :func:`pps.services.scoring.evaluate_in_chunks` — the code path
  of the scoring job — on: the in-process executor (1 worker), a local process pool (1 and 2 workers), and a
  local Ray instance (``ray.init(num_cpus=2)``, 1 and 2 actors). Chunks hold 8 result ciphertexts (65,536
  enterprises at N=8192 with complex packing); workers encode their chunk's feature rows and evaluate the
  bank's encrypted 20-feature logistic model, with noise and re-randomisation. Every result is decrypted by
  the bank's key and compared with plaintext numpy. Admission, ledger and release (the coordinator's part,
  see docs/benchmarks.md section 6b) are not in this figure.
* **Warm workers.** Each backend's executor is created once and kept for all its runs, as the runtime keeps
  it: the first (one-chunk) job on it starts the workers and is reported as the **cold start**; every timed
  job after that runs on warm workers, which still receive, check and build the job's state (the bank's
  context and model) once per worker and drop it at the end of the job.
* **Per-chunk cost** (seconds of one worker per chunk) = (job time - time of a one-chunk job) / (chunks - 1) x
  workers; **start-up per job** = the one-chunk job less one chunk (on warm workers: shipping and building
  the job's state in each worker, the worker's own check of the context and model, dropping it at the end);
  the **overhead of the Ray path per chunk** is the 1-actor per-chunk cost minus the in-process one (likewise
  for the process pool).
* **The executor's own cost per chunk**: 16 chunks that do nothing but travel (a scoring-sized chunk of
  features in, 1 MB out) on warm workers; wall-clock milliseconds per chunk, median of 3.
* **Peak memory** of the job: the summed RSS of this process and all its descendants (pool workers, Ray's
  raylet, GCS and workers, the isolated checkers), sampled every 50 ms; shared pages count once per process,
  so this is an upper bound.
* **PSI setup of N items** (``prepare_setup`` with an executor): in-process (1 worker), warm process pool and
  Ray with 2 workers (one run each: a minute per run at 10^6; the workers are started before the timing).
* **Projection to more nodes** from the measured per-chunk costs, with its assumptions printed beside it.

The machine has 2 cores and is shared with other sessions: absolute figures may be pessimistic, and "2
workers" compete with whatever else runs. The load average is printed.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from rich.console import Console
from rich.table import Table

from pps.identity.uscc import ALPHABET, new_uscc, validate_uscc
from pps.infra.executor import Executor, LocalExecutor, RayExecutor
from pps.services.scoring import BLOCKS_PER_CHUNK, evaluate_in_chunks
from protocols.he_scoring import BankScoringKey, SlotLayout, check_public_context, load_model
from protocols.psi import PSIParams, ServerSet, prepare_setup

T = TypeVar("T")
NOISE_STD = 2.0**-16
GIB = 1 << 30
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


# --- memory of the process tree ------------------------------------------------------------------------------


def _tree_rss_bytes(root: int) -> int:
    """Summed RSS of ``root`` and every descendant (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            statm = (entry / "statm").read_text().split()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        pid = int(entry.name)
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(statm[1]) * page
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, ()))
    return total


def _tree_cpu_seconds(root: int) -> float:
    """CPU seconds (user + system, with reaped children) of ``root`` and every live descendant (from /proc)."""
    children: dict[int, list[int]] = {}
    cpu: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        cpu[pid] = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += cpu.get(pid, 0)
        stack.extend(children.get(pid, ()))
    return total / os.sysconf("SC_CLK_TCK")


class PeakRSS:
    """Samples the process tree's RSS in a thread while a block runs."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self.cpu_start = 0.0
        self.cpu = 0.0
        """CPU seconds the process tree spent in the block (the sampler's own included, on every backend)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss_bytes(os.getpid()))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakRSS:
        self.peak = _tree_rss_bytes(os.getpid())
        self.cpu_start = _tree_cpu_seconds(os.getpid())
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _tree_rss_bytes(os.getpid()))
        self.cpu = _tree_cpu_seconds(os.getpid()) - self.cpu_start


# --- scoring ---------------------------------------------------------------------------------------------------


@dataclass
class ScoringRow:
    backend: str
    workers: int
    chunks: int
    times: list[float] = field(default_factory=list)
    startup: list[float] = field(default_factory=list)
    cold: float = 0.0
    peak_rss: int = 0
    cpu: list[float] = field(default_factory=list)
    max_error: float = 0.0

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def per_chunk(self) -> float:
        """Seconds of one worker per chunk: the marginal cost of a chunk beyond a one-chunk job, times the
        workers that share them."""
        one = statistics.median(self.startup)
        return max(0.0, self.median - one) / max(1, self.chunks - 1) * self.workers

    @property
    def startup_median(self) -> float:
        """Per-job start-up: the one-chunk job less one chunk's work."""
        return max(0.0, statistics.median(self.startup) - self.per_chunk / self.workers)


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    gc.collect()
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_scoring(
    backends: list[tuple[str, Callable[[], Executor]]], n: int, features: int, repeats: int
) -> tuple[list[ScoringRow], dict[str, Any]]:
    key = BankScoringKey.create()
    rng = np.random.default_rng(2026)
    names = [f"f{j}" for j in range(features)]
    weights = {name: float(w) for name, w in zip(names, rng.normal(0, 0.3, features), strict=True)}
    message = key.encrypt_model(weights, -1.0)
    context = check_public_context(key.public_context_bytes())
    model = load_model(context, message)
    x = rng.normal(size=(n, features))
    expected = -1.0 + x @ np.array(list(weights.values()))
    per = SlotLayout(n, context.slots, model.packing).per_ciphertext
    chunks = -(-n // (BLOCKS_PER_CHUNK * per))
    one_chunk = x[: BLOCKS_PER_CHUNK * per]
    rows: list[ScoringRow] = []
    for label, make in backends:
        executor = make()
        row = ScoringRow(label, executor.workers, chunks)
        try:
            row.cold, _ = timed(  # the first job starts the workers; the timed runs find them warm
                partial(evaluate_in_chunks, executor, context, model, one_chunk, noise_std=NOISE_STD)
            )
            for r in range(repeats):
                startup, _ = timed(
                    partial(evaluate_in_chunks, executor, context, model, one_chunk, noise_std=NOISE_STD)
                )
                with PeakRSS() as peak:
                    seconds, result = timed(
                        partial(evaluate_in_chunks, executor, context, model, x, noise_std=NOISE_STD)
                    )
                row.startup.append(startup)
                row.times.append(seconds)
                row.peak_rss = max(row.peak_rss, peak.peak)
                row.cpu.append(peak.cpu)
                if r == 0:
                    raw = key.decrypt_scores(result, model=message).raw
                    row.max_error = float(np.max(np.abs(raw - expected)))
                    assert row.max_error < 1e-2, row.max_error
                console.print(
                    f"  scoring {label:<22} run {r + 1}: {seconds:6.2f} s (start-up {startup:5.2f} s), "
                    f"peak tree RSS {peak.peak / GIB:5.2f} GiB, CPU {peak.cpu:5.2f} s"
                )
        finally:
            executor.close()
        rows.append(row)
    info = {"per_ciphertext": per, "rows_per_chunk": BLOCKS_PER_CHUNK * per, "x_bytes": x.nbytes}
    return rows, info


# --- the executor's own cost per chunk -------------------------------------------------------------------------

RESULT_BYTES = 1 << 20
"""About what a scoring chunk returns (8 result ciphertexts)."""


def _echo_chunk(_state: None, chunk: np.ndarray) -> bytes:
    """No work: a chunk of features in, a result-sized blob out (what the executor itself costs)."""
    return bytes(RESULT_BYTES) if chunk.size else b""


def _drain(results: Iterator[bytes]) -> int:
    return sum(len(r) for r in results)


def bench_overhead(
    backends: list[tuple[str, Callable[[], Executor]]], rows: int, features: int, chunks: int
) -> list[tuple[str, int, float]]:
    """Milliseconds per chunk of a job whose chunks do nothing but travel (scoring-sized in and out), on
    warm workers: the pure executor overhead (pickling, pipe / object store, scheduling), median of 3."""
    x = np.random.default_rng(1).normal(size=(rows, features))
    out = []
    for label, make in backends:
        executor = make()
        try:
            list(executor.map_chunks(_echo_chunk, [x[:1]] * executor.workers))  # warm up
            times = []
            for _ in range(3):
                seconds, _ = timed(partial(_drain, executor.map_chunks(_echo_chunk, [x] * chunks)))
                times.append(seconds)
        finally:
            executor.close()
        per = 1000 * statistics.median(times) / chunks
        console.print(
            f"  overhead {label:<22} {per:6.1f} ms per chunk (wall clock, {executor.workers} workers)"
        )
        out.append((label, executor.workers, per))
    return out


# --- PSI setup -----------------------------------------------------------------------------------------------


def uscc(n: int) -> str:
    digest = hashlib.sha256(n.to_bytes(8, "big")).digest()
    return new_uscc("91" + "630100", "".join(ALPHABET[b % len(ALPHABET)] for b in digest[:8]))


def bench_psi(
    backends: list[tuple[str, Callable[[], Executor]]], n: int
) -> list[tuple[str, int, float, int]]:
    server_set = ServerSet.of(uscc(i) for i in range(n))
    out = []
    for label, make in backends:
        executor = make()
        try:
            list(executor.map_chunks(_warm_up, range(executor.workers)))  # start the workers, untimed
            with PeakRSS() as peak:
                seconds, setup = timed(
                    partial(
                        prepare_setup, server_set, PSIParams(), normalise=validate_uscc, executor=executor
                    )
                )
        finally:
            executor.close()
        console.print(
            f"  PSI setup {label:<20} {seconds:6.1f} s, {setup.shard_count} shards, CPU {peak.cpu:6.1f} s"
        )
        out.append((label, executor.workers, seconds, peak.peak))
    return out


def _warm_up(_state: None, x: int) -> int:
    return x


# --- report --------------------------------------------------------------------------------------------------


def report(
    rows: list[ScoringRow], info: dict[str, Any], psi: list[tuple[str, int, float, int]], n: int, psi_n: int
) -> None:
    by = {r.backend: r for r in rows}
    base = by.get("in-process")
    table = Table(
        title=f"Encrypted scoring of {n:,} enterprises ({rows[0].chunks} chunks of {info['rows_per_chunk']:,})"
    )
    for col in (
        "backend",
        "workers",
        "job s (median)",
        "enterprises/s",
        "speed-up vs 1 worker",
        "vs in-process",
        "cold start s",
        "start-up s (warm)",
        "per chunk ms",
        "CPU s (tree)",
        "peak tree RSS",
        "max |error|",
    ):
        table.add_column(col, justify="left" if col == "backend" else "right")
    for r in rows:
        family = r.backend.split(" ")[0]
        one = next((o for o in rows if o.backend.split(" ")[0] == family and o.workers == 1), None)
        speed = f"{one.median / r.median:.2f}x" if one is not None and one is not r else "—"
        vs_inline = f"{base.median / r.median:.2f}x" if base is not None and base is not r else "—"
        table.add_row(
            r.backend,
            str(r.workers),
            f"{r.median:.2f}",
            f"{n / r.median:,.0f}",
            speed,
            vs_inline,
            f"{r.cold:.2f}",
            f"{r.startup_median:.2f}",
            f"{1000 * r.per_chunk:.1f}",
            f"{statistics.median(r.cpu):.2f}",
            f"{r.peak_rss / GIB:.2f} GiB",
            f"{r.max_error:.1e}",
        )
    console.print(table)
    if base is not None:
        for r in rows:
            if r is not base:
                console.print(
                    f"  per-chunk overhead of {r.backend} vs in-process: "
                    f"{1000 * (r.per_chunk - base.per_chunk):+.1f} ms per chunk "
                    f"(+{r.startup_median - base.startup_median:.2f} s start-up per job)"
                )
    if psi:
        t = Table(title=f"PSI server setup of {psi_n:,} items")
        for col in ("backend", "workers", "seconds", "speed-up", "peak tree RSS"):
            t.add_column(col, justify="left" if col == "backend" else "right")
        single = next((s for _, w, s, _ in psi if w == 1), None)
        for label, w, seconds, peak in psi:
            t.add_row(
                label,
                str(w),
                f"{seconds:.1f}",
                f"{single / seconds:.2f}x" if single else "—",
                f"{peak / GIB:.2f} GiB",
            )
        console.print(t)
    ray1 = next((r for r in rows if r.backend.startswith("ray") and r.workers == 1), None)
    ray2 = next((r for r in rows if r.backend.startswith("ray") and r.workers == 2), None)
    if base is not None and ray1 is not None and ray2 is not None:
        project(base, ray1, ray2, info, n)


def project(base: ScoringRow, ray1: ScoringRow, ray2: ScoringRow, info: dict[str, Any], n: int) -> None:
    """Projection from the measured per-chunk costs (assumptions printed)."""
    compute = base.per_chunk  # one chunk's work on one core, in-process
    overhead = max(0.0, ray1.per_chunk - compute)  # what the Ray path adds per chunk
    chunk_bytes = info["x_bytes"] / base.chunks
    link = 10e9 / 8  # bytes/s
    transfer = chunk_bytes / link
    startup = ray2.startup_median
    t = Table(title="Projection: Ray, 16 workers per node (time for the HE evaluation of a job)")
    for col in ("nodes", "workers", f"{n:,} enterprises", f"{10 * n:,}", f"{100 * n:,}"):
        t.add_column(col, justify="right")
    for nodes in (1, 2, 4, 8, 16):
        workers = 16 * nodes
        cells = []
        for total in (n, 10 * n, 100 * n):
            chunks = -(-total // info["rows_per_chunk"])
            waves = -(-chunks // workers)
            # every chunk's features leave the coordinator: its link carries them one after the other
            egress = chunks * transfer
            cells.append(f"{startup + max(waves * (compute + overhead + transfer), egress):.1f} s")
        t.add_row(str(nodes), str(workers), *cells)
    console.print(t)
    console.print(
        f"  assumptions: per-chunk compute {1000 * compute:.0f} ms (measured in-process on this machine's core), "
        f"Ray overhead {1000 * overhead:.0f} ms per chunk (measured with 1 actor), "
        f"{chunk_bytes / 1e6:.1f} MB of features per chunk over the coordinator's 10 Gbit/s link "
        f"({1000 * transfer:.0f} ms; the link sends one chunk at a time, so a job needs at least chunks x that), "
        f"start-up {startup:.2f} s per job on warm actors; chunks are "
        "independent and equal, so a job cannot use more workers than it has chunks; the coordinator's serial part (admission, ledger, release: seconds per 10^5 "
        "enterprises on SQLite, docs/benchmarks.md 6b) is not included and bounds the speed-up (Amdahl)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10^5 enterprises, one repeat, PSI at 10^5")
    parser.add_argument("--n", type=int, default=1_000_000, help="enterprises to score")
    parser.add_argument("--features", type=int, default=20, help="features of the model")
    parser.add_argument("--repeats", type=int, default=3, help="runs per scoring configuration (medians)")
    parser.add_argument("--psi-n", type=int, default=1_000_000, help="PSI server set size")
    parser.add_argument("--skip-psi", action="store_true", help="no PSI setup runs")
    parser.add_argument("--psi-all", action="store_true", help="PSI also on a pool of 1 process")
    parser.add_argument("--skip-ray", action="store_true", help="local backends only")
    args = parser.parse_args()
    if args.quick:
        args.n, args.repeats, args.psi_n = 100_000, 1, 100_000
    console.print(
        f"bench_scaleout: {platform.python_version()}, {os.cpu_count()} cores, load average "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())} (shared machine)"
    )
    if not args.skip_ray:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=2 * GIB, log_to_driver=False)
    backends: list[tuple[str, Callable[[], Executor]]] = [
        ("in-process", lambda: LocalExecutor(1)),
        ("pool (1 process)", lambda: LocalExecutor(1, processes=True)),
        ("pool (2 processes)", lambda: LocalExecutor(2)),
    ]
    if not args.skip_ray:
        backends += [
            ("ray (1 actor)", lambda: RayExecutor(workers=1)),
            ("ray (2 actors)", lambda: RayExecutor(workers=2)),
        ]
    rows, info = bench_scoring(backends, args.n, args.features, args.repeats)
    bench_overhead(backends, info["rows_per_chunk"], args.features, 16)
    psi = []
    if not args.skip_psi:
        psi_backends: list[tuple[str, Callable[[], Executor]]] = [
            ("in-process", lambda: LocalExecutor(1)),
            ("pool (2 processes)", lambda: LocalExecutor(2)),
        ]
        if not args.skip_ray:
            psi_backends.append(("ray (2 actors)", lambda: RayExecutor(workers=2)))
        if args.psi_all:
            psi_backends[1:1] = [("pool (1 process)", lambda: LocalExecutor(1, processes=True))]
        psi = bench_psi(psi_backends, args.psi_n)
    report(rows, info, psi, args.n, args.psi_n)
    console.print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
