"""What checking governed state against the ledger costs: a full replay, the periodic incremental run, and
``pps audit verify`` of the same ledger as the baseline.

    .venv/bin/python benchmarks/bench_state_replay.py                    # 5,000 consents
    .venv/bin/python benchmarks/bench_state_replay.py --consents 2000    # a smoke run

A fresh SQLite database gets one bank, one dataset and ``--consents`` enterprises' consents (granted through
``ConsentService``, each with its ledger entry and receipt), then ``--releases`` releases over all of them (each
spends one use per consent: ``policy.release`` entries of 2,000 subjects). Then, in this process:

* **full**: a new :class:`pps.ledger.replay.Reconciler` replays every governed-state entry and compares every
  consent, budget and objection row (what the service does at start);
* **incremental**: the same reconciler again after one more release (what the periodic check does);
* **baseline**: :func:`pps.ledger.verify.verify_ledger` of the same ledger (``pps audit verify``).

The table prints seconds and the ratio to the baseline.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

console = Console(width=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--consents", type=int, default=5_000)
    parser.add_argument("--releases", type=int, default=3)
    args = parser.parse_args()

    from pps.data.datasets.schema import DatasetSchema
    from pps.governance import state as _governed  # noqa: F401  (registers the reducers)
    from pps.governance.consent import Terms
    from pps.governance.policy import Request
    from pps.infra.settings import Settings
    from pps.infra.storage.tables import Organization, Role, utcnow
    from pps.ledger.entry import OPERATOR, Actor, ObjectRef
    from pps.ledger.replay import Reconciler
    from pps.ledger.verify import verify_ledger
    from pps.runtime import Runtime
    from tests.helpers import signed, uscc_for
    from tests.pps.data.datasets.conftest import TAX_SCHEMA

    with tempfile.TemporaryDirectory() as tmp:
        rt = Runtime.build(
            Settings(
                data_dir=Path(tmp),
                environment="test",
                secret_key="bench-secret-key-that-is-long-enough-0123456789",
                checkpoint_interval_seconds=0,
            )
        )
        try:
            started = time.perf_counter()
            with rt.db.transaction() as s:
                bank = rt.identity.create_org(s, name="Bank", role=Role.bank, uscc=None, actor=OPERATOR)
                provider = rt.identity.create_org(
                    s, name="Tax", role=Role.data_provider, uscc=None, actor=OPERATOR
                )
                ds = rt.datasets.create(
                    s,
                    provider_org_id=provider.id,
                    name="tax",
                    description="",
                    schema=DatasetSchema.model_validate(TAX_SCHEMA),
                    actor=OPERATOR,
                ).id
                bank_id = bank.id
            usccs = [uscc_for(i) for i in range(args.consents)]
            terms = Terms(
                purpose="loan_underwriting",
                scope=[{"dataset_id": ds, "fields": ["tax_paid"]}],
                operations=["score"],
                valid_until=utcnow() + timedelta(days=30),
                max_uses=args.releases + 5,
            )
            for start in range(0, len(usccs), 1000):
                with rt.db.transaction() as s:
                    bank_org = s.get(Organization, bank_id)
                    assert bank_org is not None
                    for u in usccs[start : start + 1000]:
                        c = rt.consents.request(s, bank=bank_org, subject_uscc=u, terms=terms, actor=OPERATOR)
                        rt.consents.approve(
                            s, c, signed=signed(rt, s, c), actor=Actor(None, "subject", "api")
                        )
            req = Request(bank_id, tuple(usccs), {ds: ("tax_paid",)}, "score", "loan_underwriting")

            def release(n: int) -> None:
                with rt.db.transaction() as s:
                    rt.policy.release(
                        s, req, job=ObjectRef("job", f"job_{n}"), what="score:x", actor=OPERATOR
                    )

            for n in range(args.releases):
                release(n)
            built = time.perf_counter() - started
            with rt.db.transaction(write=False) as s:
                size = rt.ledger.size(s)

            reconciler = Reconciler(rt.ledger)
            t = time.perf_counter()
            with rt.db.transaction(write=False, snapshot=True) as s:
                full = reconciler.run(s)
            full_s = time.perf_counter() - t
            assert full.ok, full.summary()
            release(args.releases)
            t = time.perf_counter()
            with rt.db.transaction(write=False, snapshot=True) as s:
                incremental = reconciler.run(s)
            inc_s = time.perf_counter() - t
            assert incremental.ok, incremental.summary()
            t = time.perf_counter()
            with rt.db.transaction(write=False, snapshot=True) as s:
                verify_ledger(s, rt.ledger)
            base_s = time.perf_counter() - t
        finally:
            rt.close()

    table = Table(
        title=f"governed state against the ledger: {args.consents:,} consents, {size:,} entries "
        f"(built in {built:.0f} s), SQLite"
    )
    for col in ("run", "entries folded", "rows compared", "seconds", "÷ verify"):
        table.add_column(col, justify="right" if col != "run" else "left")
    rows = sum(full.rows_checked.values())
    table.add_row(
        "full replay (start-up)",
        f"{full.entries_replayed:,}",
        f"{rows:,}",
        f"{full_s:.2f}",
        f"{full_s / base_s:.2f}",
    )
    table.add_row(
        "incremental (periodic)",
        f"{incremental.entries_replayed:,}",
        f"{rows:,}",
        f"{inc_s:.2f}",
        f"{inc_s / base_s:.2f}",
    )
    table.add_row("baseline: pps audit verify", f"{size:,}", "—", f"{base_s:.2f}", "1.00")
    console.print(table)


if __name__ == "__main__":
    main()
