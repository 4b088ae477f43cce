#!/usr/bin/env python
"""What the credit report and an authorised portfolio query cost (issue 23).

Run from the repository root::

    .venv/bin/python benchmarks/bench_reports.py                 # 20 000 enterprises, a portfolio of 500
    .venv/bin/python benchmarks/bench_reports.py --n 5000 --portfolio 200

Set-up (not timed): synthetic platform data for ``--n`` enterprises uploaded as provider datasets into a fresh
embedded database (SQLite); a bank; half of a ``--portfolio`` of enterprises consent to its ``query`` and
``report`` operations over tax, social insurance and utilities.

Timed, in the same process: (1) the policy engine's per-field disclosure decision for the portfolio; (2) the
baseline — reading the portfolio's tax rows subject by subject (``rows_of``, each a pass over the subject-key
column); (3) the same rows read once for the whole portfolio (``rows_of_many``, what a query does); (4) the whole
query — decisions, reads, masking, one signed document and one ledger entry per subject; (5) one credit report
(mean of 10). The ratio (2)/(3) is what reading once saves.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks._platform import upload_provider_tables
from demo.keyring import signed
from models.synth import generate
from pps.governance.consent import Terms
from pps.infra.settings import Settings
from pps.infra.storage.tables import DatasetVersion, Role, utcnow
from pps.ledger.entry import Actor
from pps.runtime import Runtime

OPERATOR = Actor(None, "operator", "cli")
SUBJECT = Actor(None, "subject", "api")
PURPOSE = "loan_underwriting"
console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--portfolio", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        rt = Runtime.build(
            Settings(
                _env_file=None,
                data_dir=tmp / "data",
                database_url=f"sqlite:///{tmp / 'pps.db'}",
                environment="development",
                checkpoint_interval_seconds=0,
            )
        )
        data = generate(args.n, 7)
        ids = upload_provider_tables(rt, data, tmp)
        with rt.db.transaction() as s:
            bank = rt.identity.create_org(s, name="bank", role=Role.bank, uscc=None, actor=OPERATOR)
        portfolio = [str(u) for u in data.registry.columns["uscc"].tolist()[: args.portfolio]]
        scope = [
            {"dataset_id": ids["tax"], "fields": ["taxable_sales", "tax_paid"]},
            {"dataset_id": ids["social_insurance"], "fields": ["headcount", "contributions"]},
            {"dataset_id": ids["utilities"], "fields": ["arrears", "electricity_kwh"]},
        ]
        with rt.db.transaction() as s:
            for uscc in portfolio[::2]:
                terms = Terms(PURPOSE, scope, ["query", "report"], utcnow() + timedelta(days=30))
                c = rt.consents.request(s, bank=bank, subject_uscc=uscc, terms=terms, actor=OPERATOR)
                # the enterprise signs its own approval with its enrolled key (issue 24)
                rt.consents.approve(s, c, signed=signed(rt, s, c), actor=SUBJECT)
        fields = {ids["tax"]: ("taxable_sales", "tax_paid"), ids["utilities"]: ("arrears", "electricity_kwh")}
        rows: list[tuple[str, float, str]] = []
        with rt.db.transaction(write=False) as s:
            t0 = time.perf_counter()
            decided = rt.policy.disclose(
                s, bank_org_id=bank.id, subjects=portfolio, fields=fields, operation="query", purpose=PURPOSE
            )
            rows.append(
                ("policy decision, every field", time.perf_counter() - t0, f"{len(decided):,} subjects")
            )
            ds = rt.datasets.get(s, ids["tax"])
            version = s.get(DatasetVersion, (ds.id, ds.current_version))
            assert version is not None
            t0 = time.perf_counter()
            one_by_one = sum(len(rt.datasets.rows_of(s, version, u)) for u in portfolio)
            baseline = time.perf_counter() - t0
            rows.append(("tax rows, subject by subject (baseline)", baseline, f"{one_by_one:,} rows"))
            t0 = time.perf_counter()
            at_once = sum(len(v) for v in rt.datasets.rows_of_many(s, version, portfolio).values())
            once = time.perf_counter() - t0
            rows.append(("tax rows, read once for the portfolio", once, f"{at_once:,} rows"))
        actor = Actor(bank.id, "bank", "api")
        with rt.db.transaction() as s:
            t0 = time.perf_counter()
            issued = rt.reports.query(
                s, bank_org_id=bank.id, subjects=portfolio, fields=fields, purpose=PURPOSE, actor=actor
            )
            query = time.perf_counter() - t0
        allowed = sum(1 for i in issued if i.document["allowed"])
        rows.append(
            ("whole query: decide, read, mask, sign, record", query, f"{allowed} of {len(issued)} answered")
        )
        t0 = time.perf_counter()
        for uscc in portfolio[:10]:
            with rt.db.transaction() as s:
                rt.reports.report(s, subject_uscc=uscc, bank_org_id=bank.id, purpose=PURPOSE, actor=actor)
        rows.append(("one credit report (mean of 10)", (time.perf_counter() - t0) / 10, "6 sources"))
        rt.close()
    out = Table(title=f"credit report and queries, {args.n:,} enterprises, portfolio of {args.portfolio}")
    out.add_column("what")
    out.add_column("seconds", justify="right")
    out.add_column("size", justify="right")
    for what, seconds, n in rows:
        out.add_row(what, f"{seconds:.3f}", n)
    console.print(out)
    console.print(f"ratio subject by subject / read once: {baseline / once:.1f}")


if __name__ == "__main__":
    main()
