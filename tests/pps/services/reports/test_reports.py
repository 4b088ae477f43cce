"""Issue 23's done-when, at the service: public fields without consent and logged; masked fields only under
consent and only masked; compute_only and never fields never leave; a revoked consent stops the next report; a
repaired penalty leaves the report; documents are signed and expire."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from pps.errors import Gone, InvalidInput
from pps.governance.repair import Proof, commitment_text
from pps.infra.storage.tables import Consent, Organization, utcnow
from pps.ledger.entry import Actor
from pps.services.reports import CreditReports, Issued
from pps_wire.errors import ProofVerificationError
from pps_wire.report import DocumentExpired, verify_document
from tests.pps.governance.objections.files import pdf
from tests.pps.services.reports.conftest import PURPOSE, World, grant

BANK = Actor(None, "bank", "api")


def report(w: World, uscc: str) -> Issued:
    with w.rt.db.transaction() as s:
        return w.rt.reports.report(s, subject_uscc=uscc, bank_org_id=w.bank.id, purpose=PURPOSE, actor=BANK)


def values(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every leaf value object ({value, mode, source}) in a document."""
    out: list[dict[str, Any]] = []

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            if "mode" in x and "source" in x:
                out.append(x)
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(doc)
    return out


def entry_of(w: World, issued: Issued) -> dict[str, Any]:
    with w.rt.db.transaction(write=False) as s:
        assert issued.ledger_index is not None
        return dict(json.loads(w.rt.ledger.entry(s, issued.ledger_index).entry))


def test_public_fields_without_consent_and_logged(world: World) -> None:
    issued = report(world, world.no.uscc or "")
    doc = issued.document
    reg = doc["sections"]["registration"]
    assert reg["industry"]["mode"] == "public" and reg["industry"]["value"]
    assert "published_in" in doc["sources"]["registry"]
    penalties = doc["sections"]["penalties"]
    assert [p["record_id"]["value"] for p in penalties] == [world.records["R2"].record_id]
    assert penalties[0]["fine_amount"] == {"value": 8000.0, "mode": "public", "source": "penalties"}
    assert "fine_paid_on" not in penalties[0]  # masked: no consent, not shown
    assert "consented" not in doc["sections"]
    assert {v["mode"] for v in values(doc)} == {"public"}
    reasons = {(w["source"], w["field"]): w["reason"] for w in doc["withheld"]}
    assert reasons[("tax", "taxable_sales")] == "no_grant"
    assert reasons[("court", "case_id")] == "never_disclosed"
    # logged: an entry in the subject's access history, naming the modes used and what was withheld
    entry = entry_of(world, issued)
    assert entry["action"] == "disclosure.report" and entry["subjects"] == [world.no.uscc]
    assert set(entry["detail"]["modes"].values()) == {"public"}
    assert entry["detail"]["withheld"][f"{world.datasets['tax']}.taxable_sales"] == "no_grant"


def test_masked_only_under_consent_and_only_masked(world: World) -> None:
    doc = report(world, world.yes.uscc or "").document
    tax = doc["sections"]["consented"]["tax"]["rows"]
    assert 1 <= len(tax) <= 12
    raw = {
        m: v
        for u, m, v in zip(
            world.data.tax.columns["uscc"].tolist(),
            world.data.tax.columns["month"].tolist(),
            world.data.tax.columns["taxable_sales"].tolist(),
            strict=True,
        )
        if u == world.yes.uscc
    }
    for row in tax:
        cell = row["taxable_sales"]
        assert cell["mode"] == "masked"
        lo, hi = cell["value"]["from"], cell["value"]["to"]
        assert lo <= raw[row["month"]] < hi or lo == hi == raw[row["month"]] == 0
        assert hi <= max(2.5 * lo, 1)  # a range, not the value
    si = doc["sections"]["consented"]["social_insurance"]
    assert si["summaries"]["contributions"]["mode"] == "aggregate_only"  # only a summary
    assert all("contributions" not in r for r in si.get("rows", []))
    # compute_only (water) never leaves, though the consent names it
    text = json.dumps(doc)
    assert "water_m3" not in json.dumps(doc["sections"])
    reasons = {(w["source"], w["field"]): w["reason"] for w in doc["withheld"]}
    assert reasons[("utilities", "water_m3")] == "compute_only"
    assert "case_id" in text and reasons[("court", "case_id")] == "never_disclosed"
    # no raw amount appears anywhere: every numeric leaf is public or a range
    for v in values(doc):
        if v["mode"] == "masked" and isinstance(v["value"], dict):
            assert set(v["value"]) == {"from", "to"}


def test_compute_only_never_leaves_through_a_query(world: World) -> None:
    ds = world.datasets
    with world.rt.db.transaction() as s:
        issued = world.rt.reports.query(
            s,
            bank_org_id=world.bank.id,
            subjects=[world.yes.uscc or "", world.no.uscc or ""],
            fields={ds["utilities"]: ["water_m3", "arrears"], ds["tax"]: ["taxable_sales"]},
            purpose=PURPOSE,
            months=12,
            actor=BANK,
        )
    yes, no = (i.document for i in issued)
    assert "water_m3" not in json.dumps(yes["results"]) and "water_m3" not in json.dumps(no["results"])
    assert {w["field"]: w["reason"] for w in yes["withheld"]} == {"water_m3": "compute_only"}
    assert yes["allowed"] and len(yes["results"][ds["tax"]]["rows"]) <= 12
    assert not no["allowed"] and no["results"] == {}
    assert {w["reason"] for w in no["withheld"]} == {"compute_only", "no_grant"}


def test_a_consent_narrows_never_widens(world: World) -> None:
    ds = world.datasets
    with pytest.raises(InvalidInput, match="never widen"):
        grant(world.rt, world.bank.id, world.no.uscc or "", {**ds}, modes={"taxable_sales": "public"})
    grant(world.rt, world.bank.id, world.no.uscc or "", ds, modes={"taxable_sales": "aggregate_only"})
    doc = report(world, world.no.uscc or "").document
    tax = doc["sections"]["consented"]["tax"]
    assert tax["summaries"]["taxable_sales"]["mode"] == "aggregate_only"
    assert all("taxable_sales" not in r for r in tax["rows"]) and all("tax_paid" in r for r in tax["rows"])
    state = (
        world.rt.check_state()
    )  # the narrowing is in the consent's ledger entries: replay agrees with the row
    assert state.ok, state.summary()


def test_a_revoked_consent_stops_the_next_report(world: World) -> None:
    assert "consented" in report(world, world.yes.uscc or "").document["sections"]
    with world.rt.db.transaction() as s:
        org = s.get(Organization, world.yes.id)
        assert org is not None
        consent = s.get(Consent, world.consent_id)
        assert consent is not None
        world.rt.consents.revoke(s, consent, actor=Actor(world.yes.id, "subject", "api"))
    doc = report(world, world.yes.uscc or "").document
    assert "consented" not in doc["sections"]
    assert {w["reason"] for w in doc["withheld"] if w["source"] == "tax"} == {"revoked"}
    assert doc["sections"]["registration"]["region"]["mode"] == "public"  # the public part stays


def test_a_repaired_penalty_leaves_the_report(world: World) -> None:
    r1, r4 = world.records["R1"], world.records["R4"]
    before = report(world, world.yes.uscc or "").document["sections"]
    assert [p["record_id"]["value"] for p in before["penalties"]] == [r1.record_id]
    assert [p["record_id"]["value"] for p in before["abnormal_operation"]] == [r4.record_id]
    with world.rt.db.transaction() as s:
        org = s.get(Organization, world.yes.id)
        assert org is not None
        app = world.rt.repairs.apply(
            s,
            subject=org,
            record_id=r1.record_id,
            commitment=commitment_text(world.yes.uscc or "", r1.record_id),
            proofs=[Proof("fine_receipt", "application/pdf", pdf())],
            actor=Actor(world.yes.id, "subject", "api"),
        )
    pending = report(world, world.yes.uscc or "").document["sections"]["penalties"]
    assert pending[0]["repair"] == "pending"
    with world.rt.db.transaction() as s:
        world.rt.repairs.approve(
            s,
            world.rt.repairs.get(s, app.id),
            actor=Actor(world.providers["penalties"].id, "data_provider", "api"),
        )
    after = report(world, world.yes.uscc or "").document
    assert after["sections"]["penalties"] == []
    assert r1.record_id not in json.dumps(after)
    assert [p["record_id"]["value"] for p in after["sections"]["abnormal_operation"]] == [r4.record_id]


def test_signed_expiring_and_the_subject_reads_its_own(world: World) -> None:
    issued = report(world, world.yes.uscc or "")
    key = world.rt.ledger.signer.verifier_key
    assert verify_document(issued.note, key) == issued.document
    with pytest.raises(ProofVerificationError):
        verify_document(issued.note.replace("public", "masked", 1), key)
    later = utcnow() + timedelta(days=2)
    with pytest.raises(DocumentExpired):
        verify_document(issued.note, key, now=later)
    reports: CreditReports = world.rt.reports
    with world.rt.db.transaction() as s:
        assert reports.get(s, issued.row.id, bank_org_id=world.bank.id, uscc=None).body == issued.note
        with pytest.raises(Gone):
            reports.get(s, issued.row.id, bank_org_id=world.bank.id, uscc=None, now=later)
        assert reports.sweep(s, now=later) == 1
    with world.rt.db.transaction() as s:
        own = reports.report(s, subject_uscc=world.yes.uscc or "", bank_org_id=None, purpose=None, actor=BANK)
    assert own.ledger_index is None
    tax = own.document["sections"]["consented"]["tax"]["rows"]
    assert all(isinstance(r["taxable_sales"]["value"], float) for r in tax if r["taxable_sales"]["value"])
    assert {v["mode"] for v in values(own.document["sections"]["consented"])} == {"own"}
    assert own.document["withheld"] == []  # its own report: every field, compute_only and never ones too


def test_reports_and_queries_spend_consent_uses(world: World) -> None:
    """Each report or query relying on a consent spends one use of it, as a computation does; the ledger's replay
    counts the same uses; once spent, the consented part is withheld (``uses_exhausted``) and the public stays."""
    grant(world.rt, world.bank.id, world.no.uscc or "", world.datasets, max_uses=2)
    assert "consented" in report(world, world.no.uscc or "").document["sections"]
    with world.rt.db.transaction() as s:
        world.rt.reports.query(
            s,
            bank_org_id=world.bank.id,
            subjects=[world.no.uscc or ""],
            fields={world.datasets["tax"]: ["taxable_sales"]},
            purpose=PURPOSE,
            actor=BANK,
        )
    third = report(world, world.no.uscc or "").document
    assert "consented" not in third["sections"] and third["sections"]["registration"]
    assert {w["reason"] for w in third["withheld"] if w["source"] == "tax"} == {"uses_exhausted"}
    state = world.rt.check_state()
    assert state.ok, state.summary()
