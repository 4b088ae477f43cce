#!/usr/bin/env python
"""Benchmark of deciding consent again before every mini-batch of a vertical training (issue 24, item 4):
what the check costs, beside what the batch it guards costs, in one run.

Run from the repository root::

    .venv/bin/python benchmarks/bench_consent_per_batch.py            # 10^4 consenting enterprises
    .venv/bin/python benchmarks/bench_consent_per_batch.py --quick    # 2,000, 1024-bit key, smoke run

It builds a safe-room on a temporary SQLite database (``bench_vertical_service.build``: synthetic platform data,
every enterprise consenting to Bank A to train), admits them all, and times (medians of ``--repeats``):

* **per batch**: ``PolicyEngine.in_force`` over the batch's admitted consents, what the service runs before a
  batch's FORWARD and again before its RESIDUALS (twice per batch);
* **per epoch start**: the same over every subject;
* **the protocol's batch**: one epoch of ``train_vertical_lr`` in-process (bank, platform and coordinator, the
  platform's 20 standardised features, the bank's 10), divided by its batch count — the baseline the ratio is
  against.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks.bench_vertical_service import PURPOSE, build
from pps.governance.policy import Decision, Request
from protocols import paillier_fast as pf
from protocols import vertical_lr as vl

console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _median(fn: Callable[[], None], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--batch-sizes", default="64,500,2000")
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2,000 rows, a 1024-bit key, 3 repeats")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.key_bits, args.repeats = 2_000, 1024, 3
    sizes = [int(b) for b in args.batch_sizes.split(",") if int(b) <= args.rows]
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        t = time.perf_counter()
        rt, tokens, names, labels = build(args.rows, tmp)
        console.print(f"set-up: {args.rows:,} enterprises consenting in {time.perf_counter() - t:.1f} s")
        subjects = list(labels)
        with rt.db.transaction(write=False) as s:
            fields = rt.features.fields_for(s, names)
            admitted = rt.policy.decide(
                s, Request(tokens["bank_id"], tuple(subjects), fields, "train", PURPOSE)
            )
            assert all(d.allowed for d in admitted)
            table_ = rt.features.table(s)
        _, rows, _ = table_.rows(subjects)
        xh = table_.matrix(names, rows)
        scale = xh.std(axis=0)
        scale[scale == 0] = 1.0
        xh = (xh - xh.mean(axis=0)) / scale
        y = np.array([labels[u] for u in subjects], dtype=float)
        xg = np.random.default_rng(1).normal(size=(len(subjects), 10)) + 0.5 * y[:, None]

        def check(part: Sequence[Decision]) -> None:
            with rt.db.transaction(write=False) as s:
                assert all(d.allowed for d in rt.policy.in_force(s, part))

        results = []
        epoch_check = _median(lambda: check(admitted), args.repeats)
        for size in sizes:
            batch_check = _median(partial(check, admitted[:size]), args.repeats)
            config = vl.VerticalLRConfig(epochs=1, batch_size=size, early_stopping=False)
            coordinator = vl.Coordinator(pf.generate_keypair(args.key_bits)[1])
            t = time.perf_counter()
            vl.train_vertical_lr(vl.Guest(xg, y), vl.Host(xh), coordinator, config)
            batches = len(vl.batches_for(config, len(subjects), 0))
            per_batch = (time.perf_counter() - t) / batches
            results.append((size, batch_check, per_batch, batches))
        rt.close()
    table = Table(
        title=f"consent decided again per batch: {len(subjects):,} subjects, {len(names)} platform + 10 bank "
        f"features, {args.key_bits}-bit Paillier, median of {args.repeats} (SQLite)"
    )
    table.add_column("batch size", justify="right")
    table.add_column("check per batch (ms)", justify="right")
    table.add_column("protocol per batch (ms)", justify="right")
    table.add_column("two checks / batch", justify="right")
    table.add_column("epoch-start check (ms)", justify="right")
    table.add_column("epoch-start / epoch", justify="right")
    for size, batch_check, per_batch, batches in results:
        table.add_row(
            f"{size:,}",
            f"{batch_check * 1e3:.2f}",
            f"{per_batch * 1e3:.1f}",
            f"{2 * batch_check / per_batch:.2%}",
            f"{epoch_check * 1e3:.1f}",
            f"{epoch_check / (per_batch * batches):.2%}",
        )
    console.print(table)


if __name__ == "__main__":
    main()
