"""The credit-repair step of ``make demo`` (信用修复; :mod:`pps.governance.repair`).

The public credit centre uploads dishonesty records (the synthetic share plus two records written for the
demo, dated from today): one enterprise's tax penalty whose fine is paid and whose tax arrears the tax data
shows cleared, and another's environmental penalty whose fine is unpaid. A penalty raises Bank A's score; the
first enterprise applies with a signed commitment; the platform corroborates from the tax data; the centre
approves; Bank A gets a repair notice and its new score no longer counts the record. The second application is
denied with reasons; that enterprise's statement on the record reaches Bank A with its next score; a tax value
the bureau cannot verify is annotated in the score header.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console
from rich.table import Table as RichTable

from models.features import FEATURE_RESOLUTION, enterprise_features
from models.synth import PlatformData, Table
from pps.infra.storage.tables import utcnow
from pps_client import Client, Conflict
from protocols.he_scoring import BankScoringKey


def months_back(day: dt.date, months: int) -> str:
    """The month ``YYYY-MM`` that is ``months`` before ``day``'s month."""
    m = day.year * 12 + day.month - 1 - months
    return f"{m // 12:04d}-{m % 12 + 1:02d}"


@dataclasses.dataclass(frozen=True)
class DemoRecords:
    holder: str
    """whose fine is paid and tax arrears cleared"""
    other: str
    """whose fine is unpaid"""
    repairable: str
    unpaid: str


def add_demo_records(data: PlatformData, candidates: list[str]) -> tuple[PlatformData, DemoRecords]:
    """Two records written for the demo, dated from today, and the holder's tax arrears (cleared) in the tax
    data; ``candidates``: enterprises that consented to Bank A (the holder must have filed tax last month)."""
    today = utcnow().date()
    tax = data.tax.columns
    last = months_back(today, 1)
    filed_last = {u for u, m in zip(tax["uscc"].tolist(), tax["month"].tolist(), strict=True) if m == last}
    holder = next((c for c in candidates if c in filed_last), candidates[0])
    other = next(c for c in candidates if c != holder)
    decided = today - timedelta(days=150)
    repairable, unpaid = f"苏税罚〔{decided.year}〕9001号", f"苏环罚〔{decided.year}〕9002号"
    pen = data.penalties
    assert pen is not None
    rows: dict[str, list[Any]] = {k: list(v.tolist()) for k, v in pen.columns.items()}
    for uscc, rid, authority, fine, paid, arrears in (
        (holder, repairable, "tax", 5000.0, decided + timedelta(days=10), 2000.0),
        (other, unpaid, "environment", 8000.0, None, None),
    ):
        for k, v in {
            "uscc": uscc,
            "record_id": rid,
            "kind": "administrative_penalty",
            "authority": authority,
            "decided_on": decided,
            "conduct_ended_on": decided - timedelta(days=20),
            "grade": "general",
            "min_publicity_months": 3,
            "max_publicity_months": 12,
            "fine_amount": fine,
            "fine_paid_on": paid,
            "tax_arrears": arrears,
        }.items():
            rows[k].append(v)
    dates = ("decided_on", "conduct_ended_on", "fine_paid_on")
    columns = {
        k: np.array([x if x is not None else "NaT" for x in v], dtype="datetime64[D]")
        if k in dates
        else np.array([np.nan if x is None else x for x in v])
        if k in ("fine_amount", "tax_arrears")
        else np.array(v, dtype=np.int64)
        if k.endswith("_months")
        else np.array(v, dtype=object)
        for k, v in rows.items()
    }
    penalties = Table("penalties", pen.provider, pen.schema, columns)
    start, end = decided.isoformat()[:7], months_back(decided, -2)
    owed = np.asarray(tax["arrears"], dtype=np.float64).copy()
    for i, (u, m) in enumerate(zip(tax["uscc"].tolist(), tax["month"].tolist(), strict=True)):
        if u == holder and start <= m < end:
            owed[i] += 2000.0
    new_tax = dataclasses.replace(data.tax, columns={**tax, "arrears": owed})
    return dataclasses.replace(data, penalties=penalties, tax=new_tax), DemoRecords(
        holder, other, repairable, unpaid
    )


def repair_step(
    console: Console,
    check: Any,
    *,
    admin: Client,
    url: str,
    data: PlatformData,
    records: DemoRecords,
    clients: dict[str, Client],
    bank_a: Client,
    bank_a_id: str,
    datasets: dict[str, str],
    names: dict[str, str],
    bureau: Client,
    synth_dir: Path,
    vendor_key: Ed25519PublicKey,
) -> dict[str, int]:
    """Run the step; returns how many data keys it made (datasets, objections, repairs) for the key rotation."""
    centre_org = admin.orgs.create("Qinghai Public Credit Centre", "data_provider")
    centre = Client(url, admin.tokens.issue(centre_org.id, label="demo").token, timeout=300.0)
    pen = data.penalties
    assert pen is not None
    ds = centre.datasets.create("penalties", pen.schema, description="dishonesty records (synthetic)")
    pen.write_csv(synth_dir)
    version = centre.datasets.upload(ds.id, (synth_dir / "penalties.csv").read_bytes(), fmt="csv")
    datasets["penalties"] = ds.id
    with_records = len(set(pen.columns["uscc"].tolist()))
    console.print(
        f"  The public credit centre uploads {version.rows:,} dishonesty records "
        f"({with_records / data.registry.n_rows:.1%} of enterprises)"
    )
    holder, other = clients[records.holder], clients[records.other]
    # Bank A's model for this step, approved in the enclave like any other (issue 17): the record count beside
    # four ordinary features (none of its other models' features, so that no combination of its approved
    # models isolates one), standardised with the platform's statistics
    weights = {
        "dishonesty_records": 0.9,
        "log_tax_mean_last6": -0.4,
        "log_electricity_mean_last6": -0.3,
        "electricity_trend": -0.3,
        "size_class_ordinal": -0.3,
    }
    _codes, values = enterprise_features(data)
    preprocess = {}
    for name in weights:
        if name == "dishonesty_records":
            continue  # a count: kept as it is, one record adds 0.9 to the logit
        step = FEATURE_RESOLUTION[name]
        v = np.nan_to_num(values[name])
        v = np.round(v / step) * step if step > 0 else v
        preprocess[name] = {"center": float(v.mean()), "scale": float(v.std() or 1.0)}
    catalogue = {f.name: f for f in bank_a.scoring.features()}
    scope: dict[str, list[str]] = {datasets["penalties"]: ["*"]}
    for name in weights:
        for dataset_id, fields in catalogue[name].datasets.items():
            scope.setdefault(dataset_id, [])
            if scope[dataset_id] != ["*"]:
                scope[dataset_id] = sorted(set(scope[dataset_id]) | set(fields))
    scope = {k: v for k, v in scope.items() if v}
    for enterprise in (holder, other):
        enterprise.consents.grant(
            bank_a_id,
            purpose="loan_underwriting",
            scope=scope,
            operations=["score"],
            valid_until=utcnow() + timedelta(days=90),
            granularity="score",  # the bank decrypts the probability itself
        )
    key = BankScoringKey.create()
    spec = {"kind": "logistic", "weights": weights, "bias": -1.5, "preprocess": preprocess}
    _approval, model = bank_a.scoring.approve(key, spec, vendor_key=vendor_key)
    assert model is not None
    pair = [records.holder, records.other]
    before = bank_a.scoring.score(key, model, purpose="loan_underwriting", subjects=pair).as_dict()
    check(
        f"a penalty counts: {names[records.holder]}'s probability of default is {before[records.holder]:.3f}",
        records.holder in before,
    )

    mine = {r.record_id: r for r in holder.repairs.records()}
    record = mine[records.repairable]
    app = holder.repairs.apply(record.record_id, record.commitment)
    table = RichTable("check", "result", "source", "detail")
    for c in app.checks:
        src = c.source.get("dataset", c.source.get("application", ""))
        table.add_row(c.name, c.result, f"{src} {','.join(c.source.get('fields', []))}", c.detail)
    console.print(table)
    results = {c.name: c.result for c in app.checks}
    check(
        "self-declaration corroborated by platform data: minimum period served, fine paid, tax arrears cleared "
        "in the tax data",
        results.get("minimum_period_served") == results.get("fine_paid") == "pass"
        and results.get("tax_arrears_cleared") == "pass",
        f"decision due {app.due_at.date().isoformat()}, fee {app.fee}",
    )
    try:
        holder.repairs.apply(record.record_id, record.commitment)
        check("a double application is refused", False, "was allowed")
    except Conflict as exc:
        check("a double application is refused", True, exc.message)
    queue = centre.repairs.list(state="pending")
    centre.repairs.approve(app.id, note="义务已履行")
    notices = bank_a.repairs.notices()
    check(
        "the centre approves; Bank A gets a repair notice for the score it was released",
        any(n.record_id == records.repairable and n.subject_uscc == records.holder for n in notices)
        and [q.id for q in queue] == [app.id],
    )
    after_result = bank_a.scoring.score(key, model, purpose="loan_underwriting", subjects=pair)
    after = after_result.as_dict()
    check(
        f"Bank A re-scores: the record no longer counts ({before[records.holder]:.3f} → "
        f"{after[records.holder]:.3f}) and the result says so",
        after[records.holder] < before[records.holder]
        and any(r.record == records.repairable for r in after_result.header.repaired),
    )

    denied_app = other.repairs.apply(
        records.unpaid, {r.record_id: r for r in other.repairs.records()}[records.unpaid].commitment
    )
    failed = [c.name for c in denied_app.checks if c.result == "fail"]
    denied = centre.repairs.deny(denied_app.id, ["罚款尚未缴纳：发证机关无缴款记录"])
    check(
        f"{names[records.other]}'s unpaid fine is not corroborated; the centre denies with its reasons",
        failed == ["fine_paid"]
        and denied.state == "denied"
        and denied.reasons == ["罚款尚未缴纳：发证机关无缴款记录"],
    )
    other.repairs.add_statement(datasets["penalties"], records.unpaid, "罚款已申请分期缴纳，首期已付。")
    tax_rows = next(d for d in other.datasets.my_records() if d.dataset == "tax")
    month = max(str(r["month"]) for r in tax_rows.rows)
    objection = other.objections.file(
        datasets["tax"],
        ["tax_paid"],
        "this month's tax paid includes a refund since cancelled",
        record_key=month,
    )
    bureau.objections.unverifiable(
        objection.id, "the cancelled refund cannot be matched in the bureau's system"
    )
    shown = bank_a.scoring.score(key, model, purpose="loan_underwriting", subjects=pair)
    check(
        "Bank A's next score shows the enterprise's statement and the unverifiable annotation, no value",
        any(s.subject == records.other and s.record == records.unpaid for s in shown.header.statements)
        and any(
            a.subject == records.other and a.annotation == "unverifiable" for a in shown.header.annotated
        ),
    )
    return {"datasets": 1, "objections": 1, "repairs": 2, "consents": 2}
