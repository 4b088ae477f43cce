"""Credit repair end to end over the API and the SDK: a penalty lowers a score; the enterprise applies; tax
data corroborates; the authority approves; the same bank re-scores and the record no longer counts; the bank
gets a repair notice; an aggregate stops counting it. A denial with reasons, objected to; expiry at the
maximum period; an unverifiable dispute annotated in a scoring header; a statement shown to a bank."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import numpy as np
import pytest
from pydantic import ValidationError

from pps.data import dp
from pps.governance.repair import commitment_text
from pps.infra.settings import Settings
from pps.runtime import Runtime
from pps_client import Client, Conflict, InvalidRequest, NotFound, PermissionDenied, ScoringResult
from protocols.he_scoring import BankScoringKey
from tests.pps.governance.objections.files import pdf, png
from tests.pps.governance.repair.conftest import PURPOSE, TODAY, World, snapshot

pytestmark = [pytest.mark.db, pytest.mark.slow]

MODEL = {"dishonesty_records": 1.5, "log_sales_mean_last6": 0.05}


@pytest.fixture(scope="module")
def key() -> BankScoringKey:
    return BankScoringKey.create()


@pytest.fixture
def exact_aggregates(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No noise: the test is about which records an aggregate counts, not about the noise."""
    monkeypatch.setattr(dp, "total", lambda v, lo, hi, eps: dp.Noisy(float(np.clip(v, lo, hi).sum()), 0.0))
    return


def score(bank: Client, key: BankScoringKey, subjects: list[str]) -> tuple[str, ScoringResult]:
    model = key.encrypt_model(MODEL, -2.0)
    job = bank.scoring.submit(key, model, purpose=PURPOSE, subjects=subjects)
    bank.jobs.wait(job.id)
    return job.id, bank.scoring.result(job.id, key, model)


def feature(rt: Runtime, uscc: str, name: str = "dishonesty_records") -> float:
    with rt.db.transaction(write=False) as s:
        table = rt.features.table(s)
    return float(table.values[name][table.position[uscc]])


def penalty_sum(bank: Client, world: World) -> float:
    answer = bank.aggregates.query(
        "sum",
        purpose=PURPOSE,
        epsilon=1.0,
        scope="platform",
        dataset="penalties",
        field="max_publicity_months",
        bounds=(0, 100),
    )
    return float(answer.cells[0].sum)


def test_repair_approved_excludes_the_record_everywhere_and_tells_the_bank(
    world: World, runtime: Runtime, base_url: str, key: BankScoringKey, exact_aggregates: None
) -> None:
    a = Client(base_url, world.a.token)
    authority = Client(base_url, world.providers["penalties"].token)
    bank = Client(base_url, world.bank.token)
    r1, r4 = world.records["R1"], world.records["R4"]
    batch = [world.a.uscc, world.b.uscc]
    assert world.a.uscc and world.b.uscc

    # the penalty counts: two records in use for A
    assert feature(runtime, world.a.uscc) == 2
    before_id, before = score(bank, key, batch)
    assert before.subjects == batch
    p_before = before.as_dict()[world.a.uscc]
    assert penalty_sum(bank, world) == 12 + 12 + 12 + 3

    # A sees its records, their periods, and for which it may apply
    mine = {r.record_id: r for r in a.repairs.records()}
    assert set(mine) == {r1.record_id, r4.record_id}
    assert mine[r1.record_id].can_apply and mine[r1.record_id].status == "in_use"
    assert not mine[r4.record_id].can_apply and "apply from" in (mine[r4.record_id].why_not or "")
    assert mine[r1.record_id].commitment == commitment_text(world.a.uscc, r1.record_id)

    app = a.repairs.apply(
        r1.record_id, mine[r1.record_id].commitment, proofs=[("fine_receipt", "application/pdf", pdf())]
    )
    assert app.state == "pending" and app.fee == 0 and not app.overdue
    checks = {c.name: c for c in app.checks}
    assert {n: c.result for n, c in checks.items()} == {
        "minimum_period_served": "pass",
        "fine_paid": "pass",
        "tax_arrears_cleared": "pass",
        "no_new_record_of_same_kind": "pass",
        "commitment_signed": "pass",
    }
    # each check names its source: the tax check reads the tax dataset's arrears
    assert checks["tax_arrears_cleared"].source["dataset"] == world.datasets["tax"]
    assert checks["fine_paid"].source["dataset"] == world.datasets["penalties"]
    assert app.due_at > app.created_at
    assert [p.kind for p in app.proofs] == ["fine_receipt"]

    # the authority's queue has it, with its checks; the proof opens for the authority
    queue = authority.repairs.list()
    assert [q.id for q in queue] == [app.id]
    assert authority._request("GET", f"/v1/repairs/{app.id}/proofs/0").content == pdf()
    # another provider does not see it
    assert Client(base_url, world.providers["tax"].token).repairs.list() == []

    done = authority.repairs.approve(app.id, note="义务已履行，承诺已签署")
    assert done.state == "approved" and done.decided_at is not None

    # the bank that was released a score built on the record is told: which result, whose, which record
    notices = bank.repairs.notices()
    assert [(n.result.id, n.subject_uscc, n.record_id) for n in notices] == [
        (before_id, world.a.uscc, r1.record_id)
    ]

    # the same bank re-scores: the record no longer counts, the feature changed, the result says so
    assert feature(runtime, world.a.uscc) == 1
    _after_id, after = score(bank, key, batch)
    assert after.as_dict()[world.a.uscc] < p_before
    assert abs(after.as_dict()[world.b.uscc] - before.as_dict()[world.b.uscc]) < 1e-3
    assert [(r.subject, r.record) for r in after.header.repaired] == [(world.a.uscc, r1.record_id)]
    # an aggregate no longer counts it either
    assert penalty_sum(bank, world) == 12 + 12 + 3

    # a second application for the repaired record changes nothing
    state = snapshot(runtime)
    with pytest.raises(Conflict, match="no longer used"):
        a.repairs.apply(r1.record_id, mine[r1.record_id].commitment)
    assert snapshot(runtime) == state

    # every step is in A's own history
    actions = [e.entry["action"] for e in a.ledger.mine(limit=500).items]
    for action in ("repair.apply", "repair.proof", "repair.approve", "repair.notice"):
        assert action in actions, action


def test_bad_applications_are_refused_and_change_nothing(
    world: World, runtime: Runtime, base_url: str
) -> None:
    a = Client(base_url, world.a.token)
    r1, r2, r4 = world.records["R1"], world.records["R2"], world.records["R4"]
    assert world.a.uscc
    ok = commitment_text(world.a.uscc, r1.record_id)
    state = snapshot(runtime)
    # another enterprise's record: as if it did not exist
    with pytest.raises(NotFound, match="no dishonesty record"):
        a.repairs.apply(r2.record_id, commitment_text(world.a.uscc, r2.record_id))
    # not yet past its minimum period: the answer names the first day
    with pytest.raises(InvalidRequest, match="apply from"):
        a.repairs.apply(r4.record_id, commitment_text(world.a.uscc, r4.record_id))
    # a forged proof type, and a proof whose bytes are not what it claims to be
    with pytest.raises(InvalidRequest, match="kind 'court_verdict'"):
        a.repairs.apply(r1.record_id, ok, proofs=[("court_verdict", "application/pdf", pdf())])
    with pytest.raises(InvalidRequest):
        a.repairs.apply(r1.record_id, ok, proofs=[("fine_receipt", "application/pdf", png())])
    # a commitment not as worded
    with pytest.raises(InvalidRequest, match="commitment"):
        a.repairs.apply(r1.record_id, "我承诺")
    assert snapshot(runtime) == state
    # a double application
    first = a.repairs.apply(r1.record_id, ok)
    state = snapshot(runtime)
    with pytest.raises(Conflict, match=first.id):
        a.repairs.apply(r1.record_id, ok)
    assert snapshot(runtime) == state
    # a bank cannot apply, a subject cannot decide
    with pytest.raises(PermissionDenied):
        Client(base_url, world.bank.token).repairs.apply(r1.record_id, ok)
    with pytest.raises(PermissionDenied):
        a.repairs.approve(first.id)
    assert snapshot(runtime) == state


def test_denied_with_reasons_objected_and_denied_again(world: World, runtime: Runtime, base_url: str) -> None:
    b = Client(base_url, world.b.token)
    authority = Client(base_url, world.providers["penalties"].token)
    r2 = world.records["R2"]
    assert world.b.uscc
    app = b.repairs.apply(r2.record_id, commitment_text(world.b.uscc, r2.record_id))
    assert {c.name: c.result for c in app.checks}["fine_paid"] == "fail"
    # the platform's data does not corroborate: approval is refused, naming the failed check
    with pytest.raises(Conflict, match="fine_paid"):
        authority.repairs.approve(app.id)
    with pytest.raises(InvalidRequest, match="reasons"):
        authority.repairs.deny(app.id, ["   "])  # a denial names its reasons
    denied = authority.repairs.deny(app.id, ["罚款尚未缴纳（发证机关无缴款记录）"])
    assert denied.state == "denied" and denied.reasons == ["罚款尚未缴纳（发证机关无缴款记录）"]
    again = b.repairs.object(app.id, "已于上月缴纳，附缴款书")
    assert again.state == "reconsidering" and again.objection == "已于上月缴纳，附缴款书"
    final = authority.repairs.deny(app.id, ["缴款书与罚款决定书编号不符"])
    assert final.state == "denied"
    with pytest.raises(Conflict, match="final"):
        b.repairs.object(app.id, "再次申诉")
    # the record still counts
    assert feature(runtime, world.b.uscc) == 1


def test_the_maximum_period_ends_use_by_itself(world: World, runtime: Runtime, base_url: str) -> None:
    r3 = world.records["R3"]
    assert world.c.uscc
    assert feature(runtime, world.c.uscc) == 1
    later = dt.datetime.combine(TODAY + dt.timedelta(days=100), dt.time(), dt.UTC)
    runtime.features.clock = lambda: later
    assert feature(runtime, world.c.uscc) == 0  # no sweep needed: the period is read at each use
    with runtime.db.transaction() as s:
        counts = runtime.repairs.records.sweep(s, actor=runtime_actor(), now=later)
    assert counts == {"expired": 1}
    with runtime.db.transaction() as s:
        assert runtime.repairs.records.sweep(s, actor=runtime_actor(), now=later) == {}  # idempotent
    mine = Client(base_url, world.c.token).repairs.records()
    assert [(r.record_id, r.status) for r in mine] == [(r3.record_id, "expired")]
    actions = [e.entry["action"] for e in Client(base_url, world.c.token).ledger.mine(limit=500).items]
    assert "record.expire" in actions


def runtime_actor():  # type: ignore[no-untyped-def]
    from pps.ledger.entry import Actor

    return Actor(None, "operator", "cli")


def test_unverifiable_dispute_and_statement_travel_to_the_bank(
    world: World, runtime: Runtime, base_url: str, key: BankScoringKey
) -> None:
    d = Client(base_url, world.d.token)
    a = Client(base_url, world.a.token)
    tax_provider = Client(base_url, world.providers["tax"].token)
    bank = Client(base_url, world.bank.token)
    tax = world.datasets["tax"]
    own = next(x for x in d.datasets.my_records() if x.dataset_id == tax)
    month = next(r["month"] for r in own.rows if r["taxable_sales"] is not None)
    filed = d.objections.file(tax, ["taxable_sales"], "the sales figure is not ours", record_key=month)
    marked = tax_provider.objections.unverifiable(filed.id, "the filing cannot be matched to an invoice")
    assert marked.state == "unverifiable" and marked.resolution_note
    with pytest.raises(Conflict):
        tax_provider.objections.reject(filed.id, "too late")
    # a statement on a negative record of A's (its recent abnormal-operation listing)
    r4 = world.records["R4"]
    said = a.repairs.add_statement(world.datasets["penalties"], r4.record_id, "年报已补报，经营地址已更正。")
    with pytest.raises(InvalidRequest, match="negative"):
        a.repairs.add_statement(world.datasets["registry"], "x", "not negative")
    _job, result = score(bank, key, [world.a.uscc or "", world.d.uscc or ""])
    assert [(x.subject, x.dataset, x.fields, x.annotation) for x in result.header.annotated] == [
        (world.d.uscc, tax, ["taxable_sales"], "unverifiable")
    ]
    assert result.disputed == []  # answered: no longer open
    assert [(x.subject, x.record, x.text) for x in result.header.statements] == [
        (world.a.uscc, r4.record_id, said.text)
    ]


def test_the_response_deadline_is_at_most_20_days(tmp_path: object) -> None:
    with pytest.raises(ValidationError, match="20"):
        Settings(objection_response_days=21, secret_key="x" * 40, environment="test")
    assert (
        Settings(objection_response_days=20, secret_key="x" * 40, environment="test").objection_response_days
        == 20
    )


def test_a_repair_between_admission_and_release_holds_the_subject_back(
    world: World, runtime: Runtime
) -> None:
    """Decided again at release, like consent: a computation admitted while the record counted does not
    release that subject's result after the repair; the others leave."""
    from pps.data.features import admit_on_features
    from pps.errors import Conflict as ServerConflict
    from pps.governance.policy import DenyReason, Request
    from pps.governance.release import Gate
    from pps.governance.repair import Proof
    from pps.infra.storage.tables import Organization
    from pps.ledger.entry import Actor, ObjectRef

    service = Actor(None, "service", "job")
    a, b = world.a.uscc or "", world.b.uscc or ""
    names = ["dishonesty_records"]
    with runtime.db.transaction(write=False) as s:
        fields = runtime.features.fields_for(s, names)
    admission = admit_on_features(
        runtime.db,
        runtime.features,
        runtime.policy,
        bank=world.bank.id,
        purpose=PURPOSE,
        operation="score",
        names=names,
        submitted_fields=fields,
        subjects=[a, b],
        job=ObjectRef("job", "job_admitted"),
        actor=service,
    )
    assert admission.records is not None and a in admission.records
    r1 = world.records["R1"]
    with runtime.db.transaction() as s:
        org = s.get(Organization, world.a.id)
        assert org is not None
        app = runtime.repairs.apply(
            s,
            subject=org,
            record_id=r1.record_id,
            commitment=commitment_text(a, r1.record_id),
            proofs=[Proof("fine_receipt", "application/pdf", pdf())],
            actor=Actor(world.a.id, "subject", "api"),
        )
        runtime.repairs.approve(s, app, actor=Actor(world.providers["penalties"].id, "data_provider", "api"))
    gate = Gate(
        runtime.policy,
        Request(world.bank.id, (a, b), admission.fields, "score", PURPOSE),
        job=ObjectRef("job", "job_admitted"),
        actor=service,
        records=admission.records,
    )
    with runtime.db.transaction() as s:
        released = gate.release_some(s, what="score:logistic")
    assert released.kept == (b,)
    assert [(d.subject, d.reason) for d in released.lost] == [(a, DenyReason.record_excluded)]
    assert r1.record_id in released.lost[0].detail
    with pytest.raises(ServerConflict, match="1 subject"), runtime.db.transaction() as s:
        gate.release_all(s, what="model", refusal="changed; nothing was released")
