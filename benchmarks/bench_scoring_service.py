#!/usr/bin/env python
"""End-to-end benchmark of encrypted scoring *as a service*: a bank scores its portfolio over HTTP.

Run from the repository root::

    .venv/bin/python benchmarks/bench_scoring_service.py              # 10^5 enterprises, 20 features
    .venv/bin/python benchmarks/bench_scoring_service.py --n 10000    # smaller

Set-up (not timed as part of the target): synthetic platform data for ``--n`` enterprises
(``models.synth.generate``) uploaded as the six provider datasets into a fresh embedded database (SQLite);
a bank; one active consent per enterprise for ``score`` over the fields the model reads — inserted in bulk
straight into the consents table (their grant entries are not written: granting is not what is measured).
The API runs on a real socket in this process; the bank uses the SDK (``pps_client.Client``).

Timed, per run, as the bank sees it: key creation and model encryption; the POST of the public context and
model (the service checks both in its isolated checker); the job (admission by the policy engine with its
ledger entries, the feature table, encoding, evaluation, release with use counts and ledger entries, storing
the result); fetching and decrypting the result. The job's own stage timings come from its summary. The first
run computes the feature table from the encrypted datasets; later runs find it and the encoded columns cached
(a bank re-scoring its portfolio with a retrained model of the same design). In the same process, for scale:
the same scores in plaintext numpy. Target (issue 4): a 10^5 portfolio end to end in under 5 s.
"""

from __future__ import annotations

import argparse
import os
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
from benchmarks._platform import upload_provider_tables
from demo.keyring import signed
from models.synth import generate
from pps.governance.consent import Terms
from pps.infra.settings import Settings
from pps.infra.storage.tables import Organization, Role, utcnow
from pps.ledger.entry import Actor
from pps.runtime import Runtime
from pps_client import Client
from protocols.he_scoring import BankScoringKey

TARGET_S = 5.0
PURPOSE = "loan_underwriting"
OPERATOR = Actor(None, "operator", "cli")
SUBJECT = Actor(None, "subject", "api")
console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)


def setup(rt: Runtime, n: int, tmp: Path) -> tuple[str, str, list[str], dict[str, str]]:
    data = generate(n, 2026)
    with rt.db.transaction() as s:
        admin = rt.identity.create_org(
            s, name="bench provider", role=Role.data_provider, uscc=None, actor=OPERATOR
        )
        bank = rt.identity.create_org(s, name="bench bank", role=Role.bank, uscc=None, actor=OPERATOR)
        code = rt.identity.issue_enrolment_code(s, org=bank, actor=OPERATOR).secret  # the bank mints its own
        token = rt.identity.redeem_enrolment_code(s, code=code, label="bench", ttl=timedelta(days=1))[1]
        bank_id, secret = bank.id, token.secret
        provider_id = admin.id
    datasets = upload_provider_tables(rt, data, tmp, provider_org_id=provider_id)
    usccs: list[str] = data.registry.columns["uscc"].tolist()
    return bank_id, secret, usccs, datasets


def grant_all(rt: Runtime, bank_id: str, usccs: list[str], fields: dict[str, tuple[str, ...]]) -> None:
    """Every enterprise requested and approved through the consent service, its approval signed by its own
    enrolled key (issue 24) and ledgered, in transactions of 1,000: consents written straight into the table
    would be refused as diverging from the ledger (issue 21), as they should be."""
    terms = Terms(
        purpose=PURPOSE,
        scope=[{"dataset_id": k, "fields": list(v)} for k, v in fields.items()],
        operations=["score"],
        valid_until=utcnow() + timedelta(days=30),
        granularity="score",  # the benchmark decrypts scores
    )
    for start in range(0, len(usccs), 1000):
        with rt.db.transaction() as s:
            bank = s.get(Organization, bank_id)
            assert bank is not None
            for u in usccs[start : start + 1000]:
                c = rt.consents.request(s, bank=bank, subject_uscc=u, terms=terms, actor=SUBJECT)
                rt.consents.approve(s, c, signed=signed(rt, s, c), actor=SUBJECT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--n", type=int, default=100_000, help="enterprises on the platform and in the portfolio"
    )
    parser.add_argument("--runs", type=int, default=4, help="scoring runs (the first one is cold)")
    args = parser.parse_args()
    console.print(
        f"[bold]Encrypted scoring as a service[/] — {args.n:,} enterprises, cores {os.cpu_count()}, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        settings = Settings(
            data_dir=tmp / "data",
            environment="test",
            unsafe_unapproved_models=True,  # measures the HE path itself, with a bank-encrypted model
            secret_key="bench-secret-key-that-is-long-enough-0123456789",
            checkpoint_interval_seconds=0,
        )
        rt = Runtime.build(settings)
        t0 = time.perf_counter()
        bank_id, token, usccs, _datasets = setup(rt, args.n, tmp / "csv")
        with rt.db.transaction(write=False) as s:
            info = [f for f in rt.features.catalogue(s) if f.available]
        names = [f.name for f in info if not f.name.startswith("industry_")][:20]
        with rt.db.transaction(write=False) as s:
            fields = rt.features.fields_for(s, names)
        grant_all(rt, bank_id, usccs, fields)
        console.print(
            f"set-up (generate, upload six datasets, {len(usccs):,} consents): {time.perf_counter() - t0:.1f} s"
        )
        rng = np.random.default_rng(7)
        weights = {n: float(rng.normal(0, 0.3)) for n in names}
        bias = -2.0
        preprocess = {n: {"center": 0.0, "scale": 10.0} for n in names}
        app = create_app(runtime=rt)
        rows: list[dict[str, float]] = []
        errors: list[float] = []
        with running_server(app) as url, Client(url, token) as client:
            for _run in range(args.runs):
                marks: dict[str, float] = {}
                start = time.perf_counter()
                key = BankScoringKey.create()
                model = key.encrypt_model(weights, bias)
                marks["bank: key + encrypt model"] = time.perf_counter()
                job = client.scoring.submit(
                    key, model, purpose=PURPOSE, subjects=usccs, preprocess=preprocess
                )
                marks["POST: upload + check context and model"] = time.perf_counter()
                done = client.jobs.wait(job.id, timeout=600, poll=0.05)
                marks["job: admit, features, encode, evaluate, release"] = time.perf_counter()
                result = client.scoring.result(job.id, key, model)
                marks["bank: fetch result + decrypt"] = time.perf_counter()
                row: dict[str, float] = {}
                previous = start
                for stage, mark in marks.items():
                    row[stage] = mark - previous
                    previous = mark
                row["total"] = previous - start
                summary = done.summary or {}
                for stage, seconds in summary.get("timings", {}).items():
                    row[f"  in job: {stage.removesuffix('_s')}"] = float(seconds)
                row["result MB"] = summary["result_bytes"] / 1e6
                rows.append(row)
                with rt.db.transaction(write=False) as s:
                    table = rt.features.table(s)
                _, idx, _ = table.rows(result.subjects)
                x = table.matrix(names, idx) / 10.0
                expected = 1 / (1 + np.exp(-(bias + x @ np.array([weights[n] for n in names]))))
                errors.append(float(np.max(np.abs(result.probabilities - expected))))
                assert len(result.subjects) == len(usccs)
        # plaintext baseline in the same process
        with rt.db.transaction(write=False) as s:
            table = rt.features.table(s)
        x = table.matrix(names, list(range(len(table.usccs)))) / 10.0
        w = np.array([weights[n] for n in names])
        plain = []
        for _ in range(5):
            t = time.perf_counter()
            _ = 1 / (1 + np.exp(-(bias + x @ w)))
            plain.append(time.perf_counter() - t)
        rt.close()

    out = Table(title=f"{args.n:,} enterprises x {len(names)} features, end to end over HTTP (seconds)")
    out.add_column("stage")
    out.add_column("cold (run 1)", justify="right")
    out.add_column("warm (median of the rest)", justify="right")
    for stage in rows[0]:
        warm = statistics.median(r[stage] for r in rows[1:]) if len(rows) > 1 else float("nan")
        out.add_row(stage, f"{rows[0][stage]:.3f}", f"{warm:.3f}")
    console.print(out)
    warm_total = statistics.median(r["total"] for r in rows[1:]) if len(rows) > 1 else rows[0]["total"]
    plain_s = statistics.median(plain)
    console.print(
        f"warm end to end {warm_total:.2f} s = {args.n / warm_total:,.0f} enterprises/s "
        f"(target < {TARGET_S:.0f} s at 10^5: {'met' if warm_total < TARGET_S else 'NOT met'}); "
        f"cold {rows[0]['total']:.2f} s. Plaintext numpy: {plain_s * 1e3:.2f} ms "
        f"(ratio {warm_total / plain_s:,.0f}x). Max |p - p_plain| = {max(errors):.2e}."
    )


if __name__ == "__main__":
    main()
