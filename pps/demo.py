"""The end-to-end scenario of ``make demo`` on the embedded default (SQLite, in-process).

It grows with the product. Today: bootstrap an operator, onboard data providers, banks, an auditor and
enterprises over the real HTTP API, show that the role and tenant checks refuse what they must, let an
enterprise fetch and verify its own access history, let the auditor check checkpoint consistency, verify the
whole ledger offline, and show that editing one row in the database is caught. Every step is checked; the
demo exits non-zero if any check fails.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pps import errors
from pps.identity.uscc import ALPHABET, make_uscc
from pps.ledger.checkpoint import NoteVerifier
from pps.ledger.entry import OPERATOR
from pps.ledger.verify import verify_ledger
from pps.runtime import Runtime
from pps.settings import Settings
from pps.storage.tables import Role


def demo_usccs(n: int, seed: int = 7) -> list[str]:
    """``n`` valid, distinct USCCs of enterprises registered in Suzhou (320500)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible demo data, not secrets
    codes: set[str] = set()
    while len(codes) < n:
        org_code = "".join(rng.choice(ALPHABET) for _ in range(9))
        codes.add(make_uscc("91" + "320500" + org_code))
    return sorted(codes)


class Checks:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.rows: list[tuple[str, bool, str]] = []

    def check(self, what: str, ok: bool, detail: str = "") -> None:
        self.rows.append((what, ok, detail))
        mark = "[green]✓[/]" if ok else "[bold red]✗[/]"
        self.console.print(f"  {mark} {what}" + (f" [dim]({detail})[/]" if detail else ""))

    def refused(self, what: str, expected: type[errors.PPSError], call: Callable[[], Any]) -> None:
        try:
            call()
        except expected as exc:
            self.check(what, True, f"{exc.code}: {exc.message}")
            return
        except errors.PPSError as exc:
            self.check(what, False, f"refused with {exc.code}, expected {expected.code}")
            return
        self.check(what, False, "was allowed")

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.rows)


def run_demo(data_dir: Path, console: Console) -> bool:
    from api.app import create_app
    from api.live import running_server
    from pps.client import PPSClient

    t0 = time.perf_counter()
    shutil.rmtree(data_dir, ignore_errors=True)
    settings = Settings(data_dir=data_dir, environment="development", checkpoint_interval_seconds=0)
    rt = Runtime.build(settings)
    checks = Checks(console)

    console.rule("[bold]1. Bootstrap the platform operator")
    with rt.db.transaction() as session:
        admin_org = rt.identity.create_org(
            session,
            name="Suzhou credit platform operator",
            role=Role.platform_admin,
            uscc=None,
            actor=OPERATOR,
        )
        admin_token = rt.identity.issue_token(
            session, org=admin_org, label="bootstrap", ttl=timedelta(days=1), actor=OPERATOR
        ).secret
    checks.check("operator organisation and first token created", True, admin_org.id)

    app = create_app(runtime=rt)
    with running_server(app) as url:
        console.print(f"  API running at {url}")
        admin = PPSClient(url, admin_token)

        console.rule("[bold]2. Onboard organisations over the API")
        tokens: dict[str, str] = {}
        orgs: dict[str, dict[str, Any]] = {}
        plan: list[tuple[str, str, str | None]] = [
            ("Suzhou Tax Bureau", "data_provider", None),
            ("State Grid Suzhou", "data_provider", None),
            ("Bank A", "bank", None),
            ("Bank B", "bank", None),
            ("Bank C", "bank", None),
            ("PBoC Suzhou audit office", "auditor", None),
        ]
        plan += [(f"Enterprise {i + 1}", "subject", code) for i, code in enumerate(demo_usccs(5))]
        for name, role, uscc in plan:
            org = admin.create_org(name, role, uscc)
            orgs[name] = org
            tokens[name] = admin.issue_token(org["id"], label="demo")["token"]
        table = Table("organisation", "role", "id", "USCC")
        for name, org in orgs.items():
            table.add_row(name, org["role"], org["id"], org["uscc"] or "")
        console.print(table)
        checks.check("11 organisations onboarded, each with a token", len(orgs) == 11)

        bank_a = PPSClient(url, tokens["Bank A"])
        bank_c = PPSClient(url, tokens["Bank C"])
        auditor = PPSClient(url, tokens["PBoC Suzhou audit office"])
        enterprise = PPSClient(url, tokens["Enterprise 1"])

        console.rule("[bold]3. Roles and tenants are enforced; bad input changes nothing")
        checks.check("Bank A knows who it is", bank_a.me()["org"]["name"] == "Bank A")
        checks.refused(
            "Bank A may not onboard organisations",
            errors.RoleNotAllowed,
            lambda: bank_a.create_org("X", "bank"),
        )
        checks.refused(
            "Bank A cannot see Bank B", errors.NotFound, lambda: bank_a.get_org(orgs["Bank B"]["id"])
        )
        checks.refused("Bank A cannot read the whole ledger", errors.RoleNotAllowed, lambda: bank_a.entries())
        size_before = auditor.checkpoint()["tree_size"]
        checks.refused(
            "an enterprise with a wrong USCC check character is refused",
            errors.InvalidUSCC,
            lambda: admin.create_org("Bad enterprise", "subject", demo_usccs(1, seed=99)[0][:17] + "0"),
        )
        checks.check("the refused request left no trace", auditor.checkpoint()["tree_size"] == size_before)
        bank_c_token = bank_c.me()["token_id"]
        admin.revoke_token(bank_c_token)
        checks.refused("Bank C's revoked token stops working at once", errors.TokenRevoked, bank_c.me)

        console.rule("[bold]4. An enterprise checks who touched its records, with proofs")
        pinned = NoteVerifier.from_string(PPSClient(url).public_key()["verifier_key"])
        mine = enterprise.mine()
        docs = [PPSClient.verify_proven_entry(item, pinned) for item in mine["items"]]
        for doc in docs:
            console.print(
                f"  entry {doc['index']}: {doc['action']} by {doc['actor']['role']} at {doc['time']}"
            )
        checks.check(
            "Enterprise 1 sees its onboarding and token entries, each proven against the signed checkpoint",
            [d["action"] for d in docs] == ["org.create", "token.issue"],
        )

        console.rule("[bold]5. The auditor checks that history only grows")
        first = auditor.checkpoint()
        saved_note = first["note"]
        (data_dir / "auditor-checkpoint.note").write_text(saved_note)
        bank_b = PPSClient(url, tokens["Bank B"])
        bank_b.issue_token(orgs["Bank B"]["id"], label="rotation")
        second = auditor.checkpoint()
        auditor.verify_consistency(saved_note, second["note"], pinned)
        checks.check(
            f"checkpoint {second['tree_size']} is consistent with saved checkpoint {first['tree_size']}",
            second["tree_size"] > first["tree_size"],
        )
        token_entries = auditor.entries(action="token.*", limit=500)["items"]
        checks.check(
            "the auditor filters the ledger (token.*)",
            len(token_entries) == 14,
            f"{len(token_entries)} entries",
        )

    console.rule("[bold]6. Offline verification of the whole ledger")
    with rt.db.transaction(write=False) as session:
        report = verify_ledger(session, rt.ledger, against=saved_note)
    checks.check(
        "pps audit verify: every entry, node and checkpoint re-derived",
        report.consistent_with == first["tree_size"],
        f"{report.tree_size} entries, root {report.root_hash.hex()[:16]}…",
    )

    console.rule("[bold]7. Tampering is caught")
    tampered_dir = data_dir / "tampered"
    tampered_dir.mkdir(exist_ok=True)
    src_path = settings.resolved_database_url.removeprefix("sqlite:///")
    with sqlite3.connect(src_path) as src, sqlite3.connect(tampered_dir / "pps.db") as dst:
        src.backup(dst)
        # rewrite history: pretend Bank A was onboarded under another name
        (victim,) = dst.execute(
            "SELECT idx FROM ledger_entries WHERE action = 'org.create' AND CAST(entry AS TEXT) LIKE '%Bank A%'"
        ).fetchone()
        changed = dst.execute(
            "UPDATE ledger_entries SET entry = CAST(replace(CAST(entry AS TEXT), 'Bank A', 'Bank Z') AS BLOB) "
            "WHERE idx = ?",
            (victim,),
        ).rowcount
    console.print(f"  edited entry {victim} directly in a copy of the database ({changed} row)")
    rt_tampered = Runtime.build(
        Settings(data_dir=tampered_dir, key_dir=settings.resolved_key_dir, checkpoint_interval_seconds=0)
    )
    try:
        with rt_tampered.db.transaction(write=False) as session:
            verify_ledger(session, rt_tampered.ledger, against=saved_note)
        checks.check("an edited ledger row is detected", False, "verification passed on a tampered copy")
    except errors.LedgerIntegrityError as exc:
        checks.check(
            "an edited ledger row is detected with its index",
            exc.first_bad_index == victim,
            exc.message,
        )
    finally:
        rt_tampered.close()

    elapsed = time.perf_counter() - t0
    console.rule("[bold]Summary")
    summary = Table(show_header=False)
    summary.add_row("checks passed", f"{sum(ok for _, ok, _ in checks.rows)} / {len(checks.rows)}")
    summary.add_row("ledger entries", str(report.tree_size))
    summary.add_row("ledger root", report.root_hash.hex())
    summary.add_row("verifier key", rt.ledger.signer.verifier_key)
    summary.add_row("data directory", str(data_dir))
    summary.add_row("time", f"{elapsed:.1f} s")
    console.print(summary)
    rt.close()
    if not checks.ok:
        console.print("[bold red]DEMO FAILED[/]: see the ✗ lines above")
    return checks.ok
