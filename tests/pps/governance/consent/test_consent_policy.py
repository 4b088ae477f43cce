"""Consent and the policy engine: every deny reason, receipts, revocation in flight, atomic use counting."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from pps.data.datasets.schema import DatasetSchema
from pps.errors import Conflict, InvalidInput, ProofVerificationError
from pps.governance.consent import Terms
from pps.governance.policy import DenyReason, Request
from pps.infra.storage.tables import Consent, Organization, Role, utcnow
from pps.ledger.entry import OPERATOR, Actor, ObjectRef
from pps.ledger.store import EntryFilter
from pps.runtime import Runtime
from pps_wire.receipt import verify_receipt
from tests.conftest import OrgFactory, OrgHandle
from tests.helpers import signed, signed_grant
from tests.pps.data.datasets.conftest import TAX_SCHEMA

pytestmark = pytest.mark.db


class World:
    def __init__(self, rt: Runtime, make_org: OrgFactory) -> None:
        self.rt = rt
        self.bank = make_org(Role.bank, "Bank A")
        self.other_bank = make_org(Role.bank, "Bank B")
        self.provider = make_org(Role.data_provider, "Tax bureau")
        self.subjects = [make_org(Role.subject) for _ in range(6)]
        with rt.db.transaction() as s:
            self.ds = rt.datasets.create(
                s,
                provider_org_id=self.provider.id,
                name="tax",
                description="",
                schema=DatasetSchema.model_validate(TAX_SCHEMA),
                actor=OPERATOR,
            ).id

    def org(self, handle: OrgHandle) -> Organization:
        with self.rt.db.transaction(write=False) as s:
            org = s.get(Organization, handle.id)
            assert org is not None
            return org

    def grant(self, subject: OrgHandle, **overrides: Any) -> Consent:
        now = utcnow()
        terms: dict[str, Any] = {
            "purpose": "loan_underwriting",
            "scope": [{"dataset_id": self.ds, "fields": ["tax_paid", "headcount", "*"]}],
            "operations": ["score", "psi"],
            "valid_from": None,
            "valid_until": now + timedelta(days=30),
            "max_uses": None,
        }
        bank = overrides.pop("bank_org_id", self.bank.id)
        terms.update(overrides)
        with self.rt.db.transaction() as s:
            return self.rt.consents.grant(
                s,
                subject=s.get(Organization, subject.id),  # type: ignore[arg-type]
                bank_org_id=bank,
                terms=Terms(**terms),
                signed=signed_grant(self.rt, s, str(subject.uscc), bank, Terms(**terms)),
                actor=Actor(subject.id, "subject"),
            )

    def request(self, fields: tuple[str, ...] = ("tax_paid",), operation: str = "score") -> Request:
        return Request(
            bank_org_id=self.bank.id,
            subjects=tuple(s.uscc for s in self.subjects if s.uscc),
            fields={self.ds: fields},
            operation=operation,
            purpose="loan_underwriting",
        )


@pytest.fixture
def world(runtime: Runtime, make_org: OrgFactory) -> World:
    return World(runtime, make_org)


def test_every_deny_reason(world: World, runtime: Runtime) -> None:
    s = world.subjects
    world.grant(s[0])  # allowed
    revoked = world.grant(s[1])
    with runtime.db.transaction() as sess:
        runtime.consents.revoke(sess, sess.get(Consent, revoked.id), actor=OPERATOR)  # type: ignore[arg-type]
    world.grant(s[2], valid_from=utcnow() + timedelta(days=1), valid_until=utcnow() + timedelta(days=2))
    world.grant(s[3], operations=["psi"])
    world.grant(s[4], scope=[{"dataset_id": world.ds, "fields": ["headcount"]}])
    # s[5]: nothing
    with runtime.db.transaction(write=False) as sess:
        decisions = runtime.policy.decide(sess, world.request())
    got = [(d.allowed, d.reason) for d in decisions]
    assert got == [
        (True, None),
        (False, DenyReason.revoked),
        (False, DenyReason.not_yet_valid),
        (False, DenyReason.operation_not_covered),
        (False, DenyReason.field_not_covered),
        (False, DenyReason.no_grant),
    ]
    assert decisions[0].consent_id
    with runtime.db.transaction(write=False) as sess:
        later = runtime.policy.decide(sess, world.request(), now=utcnow() + timedelta(days=31))
    assert later[0].reason is DenyReason.expired
    with runtime.db.transaction(write=False) as sess:
        c3 = runtime.policy.decide(sess, world.request(fields=("tax_paid", "note")))
    assert {d.reason for d in c3} == {DenyReason.class_c3}
    with runtime.db.transaction(write=False) as sess:
        other = runtime.policy.decide(
            sess, Request(**{**world.request().__dict__, "bank_org_id": world.other_bank.id})
        )
    assert {d.reason for d in other} == {DenyReason.no_grant}


def test_blanket_grant_covers_c1_only(world: World, runtime: Runtime) -> None:
    consent = world.grant(world.subjects[0], scope=[{"dataset_id": world.ds, "fields": ["*"]}])
    fields = {f for item in __import__("json").loads(consent.scope_json) for f in item["fields"]}
    assert fields == {"filed_on"}  # the only C1 field that is not a key; C2 needs naming
    with runtime.db.transaction(write=False) as sess:
        d = runtime.policy.decide(sess, world.request(fields=("tax_paid",)))[0]
    assert d.reason is DenyReason.field_not_covered


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"scope": [{"dataset_id": "ds_missing", "fields": ["tax_paid"]}]}, "does not exist"),
        ({"scope": [{"dataset_id": "__ds__", "fields": ["colour"]}]}, "no field"),
        ({"scope": [{"dataset_id": "__ds__", "fields": ["note"]}]}, "C3"),
        ({"purpose": "marketing"}, "unknown purpose"),
        ({"operations": ["sell"]}, "operations"),
        ({"valid_until": "__past__"}, "already ended"),
        ({"valid_from": "__future__", "valid_until": "__soon__"}, "ends before it starts"),
        ({"bank_org_id": "__provider__"}, "not a bank"),
        ({"max_uses": 0}, "positive"),
    ],
)
def test_bad_grants_are_refused_and_change_nothing(
    world: World, runtime: Runtime, overrides: dict[str, Any], message: str
) -> None:
    now = utcnow()
    fixed = {
        "__ds__": world.ds,
        "__past__": now - timedelta(days=1),
        "__future__": now + timedelta(days=10),
        "__soon__": now + timedelta(days=5),
        "__provider__": world.provider.id,
    }

    def sub(v: Any) -> Any:
        if isinstance(v, str):
            return fixed.get(v, v)
        if isinstance(v, list):
            return [sub(x) for x in v]
        if isinstance(v, dict):
            return {k: sub(x) for k, x in v.items()}
        return v

    with runtime.db.transaction(write=False) as sess:
        size = runtime.ledger.size(sess)
    with pytest.raises(InvalidInput, match=message):
        world.grant(world.subjects[0], **sub(overrides))
    with runtime.db.transaction(write=False) as sess:
        assert runtime.ledger.size(sess) == size
        assert sess.execute(select(Consent)).first() is None


def test_request_approve_deny_and_receipts(world: World, runtime: Runtime) -> None:
    subject = world.subjects[0]
    with runtime.db.transaction() as sess:
        bank = sess.get(Organization, world.bank.id)
        asked = runtime.consents.request(
            sess,
            bank=bank,  # type: ignore[arg-type]
            subject_uscc=subject.uscc,  # type: ignore[arg-type]
            terms=Terms(
                "post_loan_monitoring",
                [{"dataset_id": world.ds, "fields": ["tax_paid"]}],
                ["score"],
                utcnow() + timedelta(days=90),
                max_uses=12,
            ),
            actor=Actor(world.bank.id, "bank"),
        )
        asked2 = runtime.consents.request(
            sess,
            bank=bank,  # type: ignore[arg-type]
            subject_uscc=subject.uscc,  # type: ignore[arg-type]
            terms=Terms(
                "risk_statistics",
                [{"dataset_id": world.ds, "fields": ["headcount"]}],
                ["aggregate"],
                utcnow() + timedelta(days=90),
            ),
            actor=Actor(world.bank.id, "bank"),
        )
    assert asked.state.value == "requested" and asked.receipt is None
    with runtime.db.transaction(write=False) as sess:
        pending = runtime.policy.decide(
            sess,
            Request(
                world.bank.id, (subject.uscc,), {world.ds: ("tax_paid",)}, "score", "post_loan_monitoring"
            ),
        )  # type: ignore[arg-type]
    assert pending[0].reason is DenyReason.pending
    with runtime.db.transaction() as sess:
        approved = runtime.consents.approve(
            sess,
            sess.get(Consent, asked.id),
            signed=signed(runtime, sess, sess.get(Consent, asked.id)),
            actor=OPERATOR,
        )  # type: ignore[arg-type]
        denied = runtime.consents.deny(sess, sess.get(Consent, asked2.id), reason="not now", actor=OPERATOR)  # type: ignore[arg-type]
        with pytest.raises(Conflict):
            runtime.consents.approve(sess, denied, signed=signed(runtime, sess, denied), actor=OPERATOR)
    assert approved.receipt and denied.receipt is None
    doc = verify_receipt(approved.receipt, runtime.consents.receipt_verifier)
    assert doc["consent_id"] == asked.id and doc["subject"] == subject.uscc and doc["max_uses"] == 12
    assert doc["bank"]["name"] == "Bank A"
    with pytest.raises(ProofVerificationError):
        verify_receipt(
            approved.receipt.replace('"max_uses":12', '"max_uses":99'), runtime.consents.receipt_verifier
        )
    with runtime.db.transaction(write=False) as sess:
        actions = [
            e.entry.split(b'"action":"')[1].split(b'"')[0].decode()
            for e in runtime.ledger.entries(sess, EntryFilter(subject=subject.uscc))
        ]
    assert actions[-4:] == ["consent.request", "consent.request", "consent.grant", "consent.deny"]


def test_revocation_between_admission_and_release_stops_that_subject(world: World, runtime: Runtime) -> None:
    consents = [world.grant(s) for s in world.subjects[:3]]
    req = Request(
        world.bank.id,
        tuple(s.uscc for s in world.subjects[:3]),
        {world.ds: ("tax_paid",)},
        "score",
        "loan_underwriting",
    )  # type: ignore[arg-type]
    job = ObjectRef("job", "job_test")
    with runtime.db.transaction() as sess:
        admitted = runtime.policy.admit(sess, req, job=job, actor=Actor(world.bank.id, "bank"))
    assert all(d.allowed for d in admitted)
    with runtime.db.transaction() as sess:  # the subject withdraws while the job runs
        runtime.consents.revoke(sess, sess.get(Consent, consents[1].id), actor=OPERATOR)  # type: ignore[arg-type]
    with runtime.db.transaction() as sess:
        released = runtime.policy.release(
            sess, req, job=job, what="scores", actor=Actor(world.bank.id, "bank")
        )
    assert [d.allowed for d in released] == [True, False, True]
    assert released[1].reason is DenyReason.revoked
    with runtime.db.transaction(write=False) as sess:
        last = runtime.ledger.entry(sess, runtime.ledger.size(sess) - 1).entry
        uses = [sess.get(Consent, c.id).uses for c in consents]  # type: ignore[union-attr]
    assert b'"action":"policy.release"' in last and b'"revoked":1' in last and b'"allowed":2' in last
    assert consents[1].id.encode() not in last  # the revoked consent was not relied on
    assert uses == [1, 0, 1]


@pytest.mark.slow
def test_two_concurrent_jobs_cannot_both_spend_the_last_use(world: World, runtime: Runtime) -> None:
    consent = world.grant(world.subjects[0], max_uses=3)
    req = Request(
        world.bank.id, (world.subjects[0].uscc,), {world.ds: ("tax_paid",)}, "score", "loan_underwriting"
    )  # type: ignore[arg-type]
    results: list[bool] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def job(n: int) -> None:
        barrier.wait()
        with runtime.db.transaction() as sess:
            d = runtime.policy.release(
                sess, req, job=ObjectRef("job", f"j{n}"), what="score", actor=OPERATOR
            )[0]
        with lock:
            results.append(d.allowed)

    threads = [threading.Thread(target=job, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True] * 3
    with runtime.db.transaction(write=False) as sess:
        assert sess.get(Consent, consent.id).uses == 3  # type: ignore[union-attr]


def test_large_requests_are_recorded_in_parts(world: World, runtime: Runtime) -> None:
    from tests.helpers import uscc_for

    subjects = tuple(uscc_for(10_000 + i) for i in range(4_500))
    req = Request(world.bank.id, subjects, {world.ds: ("tax_paid",)}, "score", "loan_underwriting")
    with runtime.db.transaction() as sess:
        size = runtime.ledger.size(sess)
        decisions = runtime.policy.admit(sess, req, job=ObjectRef("job", "big"), actor=OPERATOR)
        assert runtime.ledger.size(sess) == size + 3
    assert len(decisions) == 4_500 and not any(d.allowed for d in decisions)


def test_in_force_decides_a_running_computations_consents_again_without_counting_its_own_use(
    world: World, runtime: Runtime
) -> None:
    """``PolicyEngine.in_force`` (vertical training, before every batch): a consent whose last use the computation
    itself spent still holds; a revoked, expired or quarantined (edited outside the service) one does not, nor
    one whose subject's signature is gone."""
    from sqlalchemy import text

    consents = [world.grant(s, max_uses=1) for s in world.subjects[:4]]
    req = Request(
        world.bank.id,
        tuple(s.uscc for s in world.subjects[:4] if s.uscc),
        {world.ds: ("tax_paid",)},
        "score",
        "loan_underwriting",
    )
    job, bank = ObjectRef("job", "job_in_force"), Actor(world.bank.id, "bank")
    with runtime.db.transaction() as sess:
        admitted = runtime.policy.admit(sess, req, job=job, actor=bank)
        released = runtime.policy.release(
            sess, req, job=job, what="first batch", actor=bank, admitted=admitted
        )
    assert all(d.allowed for d in released)  # each consent's only use is spent
    with runtime.db.transaction(write=False) as sess:
        assert {d.reason for d in runtime.policy.decide(sess, req)} == {DenyReason.uses_exhausted}
        assert [d.allowed for d in runtime.policy.in_force(sess, admitted)] == [True, True, True, True]
    with runtime.db.transaction() as sess:
        runtime.consents.revoke(sess, sess.get(Consent, consents[1].id), actor=OPERATOR)  # type: ignore[arg-type]
    with (
        runtime.db.engine.begin() as conn
    ):  # a use limit raised outside the service: quarantined at the check
        conn.execute(text("UPDATE consents SET max_uses = 100 WHERE id = :id"), {"id": consents[2].id})
        # and the subject's signature of another taken away: no longer consent its subject signed (issue 24)
        conn.execute(text("DELETE FROM consent_signatures WHERE consent_id = :id"), {"id": consents[3].id})
    assert not runtime.check_state().ok
    with runtime.db.transaction(write=False) as sess:
        held = runtime.policy.in_force(sess, admitted)
        later = runtime.policy.in_force(sess, admitted, now=utcnow() + timedelta(days=31))
    assert [(d.allowed, d.reason) for d in held] == [
        (True, None),
        (False, DenyReason.revoked),
        (False, DenyReason.state_divergent),
        (False, DenyReason.no_grant),
    ]
    assert "signed" in held[3].detail
    assert later[0].reason is DenyReason.expired
