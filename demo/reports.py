"""Demo step 9d (issue 23): Bank A asks for the standard credit report of an enterprise that consented to it and of
one that did not, side by side. Public information (registration, penalties still in use, court cases) is in both,
without consent; the masked tax and utility histories only in the consenting one's; the penalty repaired in step 7b
is in neither; both documents are signed with the ledger key and each query is in the enterprise's history."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from demo.repair import DemoRecords
from pps.infra.storage.tables import utcnow
from pps_client import Client, note_verifier, verify_entry


def _count(doc: dict[str, Any], section: str) -> int:
    return len(doc["sections"].get(section, []))


def report_step(
    console: Console,
    check: Callable[..., None],
    *,
    bank_a: Client,
    bank_a_id: str,
    clients: dict[str, Client],
    names: dict[str, str],
    datasets: dict[str, str],
    records: DemoRecords,
    out_dir: Path,
) -> None:
    yes, no = records.holder, records.other
    clients[yes].consents.grant(
        bank_a_id,
        purpose="loan_underwriting",
        scope={
            datasets["tax"]: ["taxable_sales", "tax_paid"],
            datasets["utilities"]: ["arrears", "electricity_kwh"],
        },
        operations=["report"],
        valid_until=utcnow() + timedelta(days=30),
    )
    console.print(f"  {names[yes]} lets Bank A read its report's masked histories; {names[no]} does not")
    got = {u: bank_a.reports.report(u, "loan_underwriting") for u in (yes, no)}
    docs = {u: g.document for u, g in got.items()}
    side = Table("", names[yes] + " (consented)", names[no] + " (no consent)")
    reg = {u: docs[u]["sections"].get("registration", {}) for u in docs}
    side.add_row(
        "registration (public)",
        *(", ".join(f"{k}={v['value']}" for k, v in list(reg[u].items())[:3]) for u in (yes, no)),
    )
    for section in ("penalties", "abnormal_operation", "serious_dishonesty", "court_cases"):
        side.add_row(f"{section} (public)", *(str(_count(docs[u], section)) for u in (yes, no)))
    for source in ("tax", "utilities"):
        side.add_row(
            f"{source}, 12 months",
            *(
                f"{len(docs[u]['sections'].get('consented', {}).get(source, {}).get('rows', []))} months, masked"
                if source in docs[u]["sections"].get("consented", {})
                else "withheld"
                for u in (yes, no)
            ),
        )
    side.add_row(
        "withheld (reasons)",
        *(", ".join(sorted({w["reason"] for w in docs[u]["withheld"]})) for u in (yes, no)),
    )
    console.print(side)
    tax_yes = docs[yes]["sections"].get("consented", {}).get("tax", {}).get("rows", [])
    check(
        "the consenting enterprise's tax history reaches Bank A only as monthly ranges (masked)",
        bool(tax_yes)
        and all(
            r["taxable_sales"]["mode"] == "masked" and set(r["taxable_sales"]["value"]) == {"from", "to"}
            for r in tax_yes
        ),
    )
    check(
        "the other's report has its public records only: registration and its unpaid penalty, no history",
        "consented" not in docs[no]["sections"]
        and bool(reg[no])
        and any(p["record_id"]["value"] == records.unpaid for p in docs[no]["sections"].get("penalties", []))
        and {w["source"] for w in docs[no]["withheld"]} >= {"tax", "utilities"},
    )
    check(
        "the penalty repaired in step 7b is in neither report",
        all(records.repairable not in str(d) for d in docs.values()),
    )
    check(
        "both reports carry the ledger key's signature and verify",
        all(bank_a.reports.verify(g.note) == g.document for g in got.values()),
    )
    pinned = note_verifier(Client(bank_a.base_url).ledger.public_key().verifier_key)
    seen = []
    for u, g in got.items():
        assert g.ledger_index is not None
        page = clients[u].ledger.mine(after=g.ledger_index - 1, limit=1).items
        seen += [verify_entry(item, pinned).entry.action for item in page]
    check(
        "each query is in the enterprise's own access history with proof, even without consent (public records)",
        seen == ["disclosure.report", "disclosure.report"],
    )
    for u, g in got.items():
        (out_dir / f"credit-report-{names[u].replace(' ', '-').lower()}.html").write_text(
            bank_a.reports.html(g.id), encoding="utf-8"
        )
    console.print(f"  printable views written to {out_dir}/credit-report-*.html")
