#!/usr/bin/env python
"""Benchmark of vertical LR *as a service*: the same epoch over HTTP with the coordinator in the enclave, and
in-process with the library's three parties, side by side in one run.

Run from the repository root::

    .venv/bin/python benchmarks/bench_vertical_service.py             # 10^4 aligned rows x (10 bank + 20 platform)
    .venv/bin/python benchmarks/bench_vertical_service.py --quick     # 2,000 rows, smoke run

It builds a safe-room on a temporary SQLite database (synthetic platform data for ``--rows`` enterprises, each
consenting to Bank A to train), starts the API on 127.0.0.1, and times per run (``--repeats``, medians):

* **PSI alignment** (operation ``train``) of the bank's customers;
* **start**: quote verified, coordinator provisioned in the enclave, consent admission of every row, the
  platform's columns read and standardised;
* **epoch over the service**: one epoch of the protocol, one HTTP round trip per mini-batch, the host in the
  server process, the coordinator's decryptions in the enclave process (obfuscators made on demand);
* **finish**: consent decided again (one use spent per consent), the model registered;
* **epoch in-process**: the same data, batches and key size through ``train_vertical_lr`` with an in-process
  coordinator — the ratio is the cost of HTTP, the enclave boundary and the service around the protocol.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from api.app import create_app
from api.live import running_server
from models.features import FEATURE_KINDS
from models.synth import generate
from pps.data.datasets.ingest import UploadFormat
from pps.data.datasets.schema import DatasetSchema
from pps.infra.settings import Settings
from pps.infra.storage.tables import Role
from pps.ledger.entry import OPERATOR
from pps.runtime import Runtime
from pps_client import Client
from protocols import paillier_fast as pf
from protocols import vertical_lr as vl

console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
PURPOSE = "joint_model_training"


def build(rows: int, tmp: Path) -> tuple[Runtime, dict[str, str], list[str], dict[str, int]]:
    rt = Runtime.build(
        Settings(
            _env_file=None,
            data_dir=tmp,
            database_url=f"sqlite:///{(tmp / 'pps.db').as_posix()}",
            environment="development",
            checkpoint_interval_seconds=0,
            psi_workers=1,
        )
    )
    data = generate(rows, seed=21)
    with rt.db.transaction() as s:
        bank = rt.identity.create_org(s, name="Bank A", role=Role.bank, uscc=None, actor=OPERATOR)
        code = rt.identity.issue_enrolment_code(s, org=bank, actor=OPERATOR).secret  # the bank mints its own
        token = rt.identity.redeem_enrolment_code(s, code=code, label="bench", ttl=timedelta(days=1))[
            1
        ].secret
        for table in data.provider_tables():
            provider = rt.identity.create_org(
                s, name=f"provider of {table.name}", role=Role.data_provider, uscc=None, actor=OPERATOR
            )
            ds = rt.datasets.create(
                s,
                provider_org_id=provider.id,
                name=table.name,
                description="",
                schema=DatasetSchema.model_validate(table.schema),
                actor=OPERATOR,
            )
            table.write_csv(tmp / "csv")
            rt.datasets.upload(
                s,
                ds,
                stream=io.BytesIO((tmp / "csv" / f"{table.name}.csv").read_bytes()),
                fmt=UploadFormat.csv,
                actor=OPERATOR,
            )
    usccs = [str(u) for u in data.registry.columns["uscc"].tolist()]
    labels = dict(zip(usccs, (int(v) for v in data.labels.columns["defaulted"].tolist()), strict=True))
    from demo.training import bulk_consent

    with rt.db.transaction() as s:
        names = [
            f.name for f in rt.features.catalogue(s) if f.available and FEATURE_KINDS[f.name] != "binary"
        ][:20]
    bulk_consent(rt, bank.id, usccs, ["train"], features=names)
    return rt, {"bank": token, "bank_id": bank.id}, names, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--guest-features", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2,000 rows, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.repeats = 2_000, 1
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        t = time.perf_counter()
        rt, tokens, names, labels = build(args.rows, tmp)
        console.print(
            f"set-up: {args.rows:,} enterprises uploaded and consenting in {time.perf_counter() - t:.1f} s"
        )
        customers = list(labels)
        y = np.array([labels[c] for c in customers], dtype=float)
        rng = np.random.default_rng(1)
        x_bank = rng.normal(size=(len(customers), args.guest_features)) + 0.5 * y[:, None]
        config = vl.VerticalLRConfig(epochs=1, batch_size=args.batch_size, early_stopping=False)
        timings: dict[str, list[float]] = {
            k: [] for k in ("psi", "start", "epoch_http", "finish", "epoch_local")
        }
        app = create_app(runtime=rt)
        with running_server(app) as url, Client(url, tokens["bank"], timeout=600) as bank:
            for _ in range(args.repeats):
                t = time.perf_counter()
                found = bank.psi.run(customers, purpose=PURPOSE, operation="train")
                timings["psi"].append(time.perf_counter() - t)
                aligned = [c for c in customers if c in (found.intersection or ())]
                t = time.perf_counter()
                started = bank.vertical.start(
                    bank.vertical.start_body(
                        name="bench",
                        purpose=PURPOSE,
                        subjects=aligned,
                        platform_features=names,
                        vendor_key=rt.enclave.vendor_public_key,
                        key_bits=args.key_bits,
                    )
                )
                timings["start"].append(time.perf_counter() - t)
                pos = {c: i for i, c in enumerate(customers)}
                idx = [pos[c] for c in started.subjects]
                guest = vl.Guest(x_bank[idx], y[idx])
                t = time.perf_counter()
                bank.vertical.run_guest(started, guest, config)
                timings["epoch_http"].append(time.perf_counter() - t)
                t = time.perf_counter()
                bank.vertical.finish(started.id)
                timings["finish"].append(time.perf_counter() - t)
                # the same epoch in one process (the host's matrix as the service standardised it)
                with rt.db.transaction(write=False) as s:
                    features = rt.features.table(s)
                _, rows, _ = features.rows(started.subjects)
                xh = features.matrix(names, rows)
                scale = xh.std(axis=0)
                scale[scale == 0] = 1.0
                xh = (xh - xh.mean(axis=0)) / scale
                coordinator = vl.Coordinator(pf.generate_keypair(args.key_bits)[1])
                t = time.perf_counter()
                vl.train_vertical_lr(vl.Guest(x_bank[idx], y[idx]), vl.Host(xh), coordinator, config)
                timings["epoch_local"].append(time.perf_counter() - t)
        rt.close()
    med = {k: statistics.median(v) for k, v in timings.items()}
    table = Table(
        title=f"vertical LR service: {len(aligned):,} rows x ({args.guest_features} bank + {len(names)} "
        f"platform), {args.key_bits}-bit Paillier, batch {args.batch_size}, median of {args.repeats}"
    )
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_column("ratio to the in-process epoch", justify="right")
    for key, label in (
        ("psi", "PSI alignment (operation train)"),
        ("start", "start: quote, coordinator in the enclave, admission, columns"),
        ("epoch_http", "one epoch over the service (HTTP, enclave coordinator)"),
        ("finish", "finish: consent again, register"),
        ("epoch_local", "one epoch in-process (library, same data)"),
    ):
        table.add_row(label, f"{med[key]:.2f}", f"{med[key] / med['epoch_local']:.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
