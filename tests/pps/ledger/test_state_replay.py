"""The ledger as the source of truth for governed state: consents (terms, state, uses), privacy budgets and
objections rebuilt from entries; direct SQL edits named row by row, and refused by the service (issue 21, 2)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from pps.errors import StateDivergent
from pps.governance.policy import DenyReason
from pps.infra.storage.tables import Consent, Role, utcnow
from pps.ledger.entry import OPERATOR, ObjectRef
from pps.ledger.replay import Divergence, Reconciler, StateReport
from pps.runtime import Runtime
from pps.services.aggregates import AggregateSpec
from tests.conftest import OrgFactory
from tests.pps.governance.consent.test_consent_policy import World as ConsentWorld
from tests.pps.services.aggregates.conftest import World as AggWorld
from tests.pps.services.aggregates.conftest import consent as agg_consent
from tests.pps.services.aggregates.conftest import synth, world  # noqa: F401  (fixtures)

pytestmark = pytest.mark.db


@pytest.fixture
def cworld(runtime: Runtime, make_org: OrgFactory) -> ConsentWorld:
    return ConsentWorld(runtime, make_org)


def sql(rt: Runtime, statement: str, **params: Any) -> None:
    """A direct edit of the database, as someone with database access (not through the service)."""
    with rt.db.engine.begin() as conn:
        conn.execute(text(statement), params)


def release(rt: Runtime, w: ConsentWorld, job: str = "job_1") -> list[Any]:
    with rt.db.transaction() as s:
        return rt.policy.release(
            s, w.request(), job=ObjectRef("job", job), what="score:decision", actor=OPERATOR
        )


def divergent(report: StateReport) -> set[tuple[str, str, str]]:
    return {(d.table, d.row_id, d.column) for d in report.divergences}


def test_untouched_state_reconciles_and_a_second_run_replays_only_new_entries(
    runtime: Runtime, cworld: ConsentWorld
) -> None:
    s = cworld.subjects
    limited = cworld.grant(s[0], max_uses=3)
    revoked = cworld.grant(s[1])
    cworld.grant(s[2])
    with runtime.db.transaction() as sess:
        runtime.consents.revoke(sess, sess.get(Consent, revoked.id), actor=OPERATOR)  # type: ignore[arg-type]
    release(runtime, cworld, "job_1")
    release(runtime, cworld, "job_2")
    first = runtime.check_state()
    assert first.ok, [d.describe() for d in first.divergences]
    assert first.rows_checked["consents"] == 3 and first.entries_replayed >= 6
    again = runtime.check_state()
    assert again.ok and again.entries_replayed == 0  # nothing new: the folded state is kept
    release(runtime, cworld, "job_3")
    third = runtime.check_state()
    assert third.ok and third.entries_replayed == 1  # one policy.release entry (6 subjects fit in one part)
    with runtime.db.transaction(write=False) as sess:
        assert sess.get(Consent, limited.id).uses == 3  # type: ignore[union-attr]


def test_a_raised_use_limit_is_named_and_the_consent_refused_until_restored(
    runtime: Runtime, cworld: ConsentWorld
) -> None:
    s = cworld.subjects
    limited = cworld.grant(s[0], max_uses=1)
    other = cworld.grant(s[1])
    release(runtime, cworld, "job_1")  # the one use is spent
    with runtime.db.transaction(write=False) as sess:
        assert runtime.policy.decide(sess, cworld.request())[0].reason is DenyReason.uses_exhausted
    sql(runtime, "UPDATE consents SET max_uses = 100 WHERE id = :id", id=limited.id)
    report = runtime.check_state()
    assert divergent(report) == {("consents", limited.id, "max_uses")}
    (d,) = report.divergences
    assert (d.ledger, d.row) == (1, 100)
    assert "max_uses is 100 in the table, 1 by the ledger" in d.describe()
    assert "consents" in runtime.state_status() and limited.id in runtime.state_status()
    with runtime.db.transaction(write=False) as sess:
        decisions = runtime.policy.decide(sess, cworld.request())
    assert decisions[0].reason is DenyReason.state_divergent and "ledger" in decisions[0].detail
    assert decisions[1].allowed and decisions[1].consent_id == other.id  # the others go on
    final = release(runtime, cworld, "job_2")
    assert not final[0].allowed
    with runtime.db.transaction(write=False) as sess:
        assert sess.get(Consent, limited.id).uses == 1  # type: ignore[union-attr]  # not spent
    sql(runtime, "UPDATE consents SET max_uses = 1 WHERE id = :id", id=limited.id)  # the operator restores it
    assert runtime.check_state().ok and runtime.state_status() == "ok"
    with runtime.db.transaction(write=False) as sess:
        assert runtime.policy.decide(sess, cworld.request())[0].reason is DenyReason.uses_exhausted


@pytest.mark.parametrize(
    ("edit", "column", "ledger", "row"),
    [
        ("UPDATE consents SET uses = 0 WHERE id = :id", "uses", 2, 0),
        (
            "UPDATE consents SET state = 'active', revoked_at = NULL WHERE id = :id",
            "state",
            "revoked",
            "active",
        ),
        (
            'UPDATE consents SET operations_json = \'["aggregate", "psi", "score"]\' WHERE id = :id',
            "operations_json",
            ["psi", "score"],
            ["aggregate", "psi", "score"],
        ),
        ("UPDATE consents SET bank_org_id = :other WHERE id = :id", "bank_org_id", "bank", "other"),
    ],
    ids=["uses-reset", "revocation-undone", "operation-added", "moved-to-another-bank"],
)
def test_each_edit_of_a_consent_row_is_named(
    runtime: Runtime, cworld: ConsentWorld, edit: str, column: str, ledger: Any, row: Any
) -> None:
    c = cworld.grant(cworld.subjects[0])
    release(runtime, cworld, "job_1")
    release(runtime, cworld, "job_2")
    if column == "state":
        with runtime.db.transaction() as sess:
            runtime.consents.revoke(sess, sess.get(Consent, c.id), actor=OPERATOR)  # type: ignore[arg-type]
    assert runtime.check_state().ok
    sql(runtime, edit, id=c.id, other=cworld.other_bank.id)
    report = runtime.check_state()
    names = {(d.column, str(d.ledger), str(d.row)) for d in report.divergences if d.row_id == c.id}
    ledger = cworld.bank.id if ledger == "bank" else ledger
    row = cworld.other_bank.id if row == "other" else row
    assert (column, str(ledger), str(row)) in names
    if column == "state":
        assert ("revoked_at", str(None), str(None)) not in names and any(n[0] == "revoked_at" for n in names)


def test_a_consent_row_no_entry_made_and_a_deleted_row_are_named(
    runtime: Runtime, cworld: ConsentWorld
) -> None:
    c = cworld.grant(cworld.subjects[0])
    now = utcnow()
    sql(
        runtime,
        "INSERT INTO consents (id, subject_uscc, bank_org_id, purpose, scope_json, operations_json, valid_from, "
        "valid_until, max_uses, uses, state, requested_by, created_at) SELECT 'cns_forged', subject_uscc, "
        "bank_org_id, purpose, scope_json, operations_json, valid_from, valid_until, NULL, 0, 'active', "
        "'subject', created_at FROM consents WHERE id = :id",
        id=c.id,
    )
    report = runtime.check_state()
    assert divergent(report) == {("consents", "cns_forged", "*")}
    assert "no ledger entry made it" in report.divergences[0].describe()
    with runtime.db.transaction(write=False) as sess:
        (d,) = runtime.policy.decide(
            sess,
            type(cworld.request())(**{**cworld.request().__dict__, "subjects": (cworld.subjects[0].uscc,)}),
        )
    assert d.allowed and d.consent_id == c.id  # the genuine consent still serves; the forged one never
    sql(
        runtime, "DELETE FROM consent_signatures WHERE consent_id = :id", id=c.id
    )  # the subject's signature too
    sql(runtime, "DELETE FROM consents WHERE id IN ('cns_forged', :id)", id=c.id)
    named = divergent(runtime.check_state())
    assert ("consents", c.id, "*") in named and {t for t, _, _ in named} == {"consents", "consent_signatures"}
    assert now < utcnow()


# --- budgets -----------------------------------------------------------------------------------------------


@pytest.fixture
def aworld(request: pytest.FixtureRequest) -> AggWorld:
    return request.getfixturevalue("world")  # the aggregates suite's platform (imported above)


def _query(rt: Runtime, w: AggWorld, epsilon: float = 0.25) -> Any:
    spec = AggregateSpec(
        statistic="count",
        scope="consented",
        purpose="risk_statistics",
        epsilon=epsilon,
        group_by=("industry",),
    )
    return rt.aggregates.answer(spec, actor=w.actor())


def test_a_reset_budget_is_named_and_the_bank_refused_until_restored(
    runtime: Runtime, aworld: AggWorld
) -> None:
    usccs = list(aworld.data.registry.columns["uscc"])[:200]
    agg_consent(runtime, aworld, [str(u) for u in usccs])
    with runtime.db.transaction() as s:
        runtime.aggregates.set_budget(s, aworld.bank.id, 2.0, actor=OPERATOR)
    _query(runtime, aworld)
    _query(runtime, aworld)
    assert runtime.check_state().ok
    sql(
        runtime,
        "UPDATE privacy_budgets SET spent_micro = 0, total_micro = 9000000 WHERE bank_org_id = :b",
        b=aworld.bank.id,
    )
    report = runtime.check_state()
    got = {(d.column, d.ledger, d.row) for d in report.divergences}
    assert got == {("total_micro", 2_000_000, 9_000_000), ("spent_micro", 500_000, 0)}
    with pytest.raises(StateDivergent, match="differs from what the ledger records") as refused:
        _query(runtime, aworld)
    assert refused.value.code == "state_divergent"
    with runtime.db.transaction(write=False) as s:
        assert runtime.aggregates.budget(s, aworld.bank.id).total == 9.0  # refused, nothing spent
    sql(
        runtime,
        "UPDATE privacy_budgets SET spent_micro = 500000, total_micro = 2000000 WHERE bank_org_id = :b",
        b=aworld.bank.id,
    )
    assert runtime.check_state().ok
    assert _query(runtime, aworld).epsilon_spent == 0.25


def test_a_budget_opened_by_a_first_query_is_recorded_and_a_deleted_row_named(
    runtime: Runtime, aworld: AggWorld
) -> None:
    agg_consent(runtime, aworld, [str(u) for u in list(aworld.data.registry.columns["uscc"])[:200]])
    _query(runtime, aworld, 0.5)
    report = runtime.check_state()
    assert report.ok and report.rows_checked["privacy_budgets"] == 1
    sql(runtime, "DELETE FROM privacy_budgets WHERE bank_org_id = :b", b=aworld.bank.id)  # a fresh default
    assert divergent(runtime.check_state()) == {("privacy_budgets", aworld.bank.id, "*")}
    with pytest.raises(StateDivergent):
        _query(runtime, aworld, 0.5)


# --- the reconciler on its own ---------------------------------------------------------------------------------


class _Counted:
    """A kind of governed state registered by someone else: how many times each bank was onboarded."""

    name = "test_orgs"
    table = "organizations"
    actions = frozenset({"org.create"})

    def fold(self, state: dict[str, Any], doc: dict[str, Any]) -> None:
        for o in doc["objects"]:
            state[o["id"]] = doc["detail"].get("role")

    def compare(self, session: Any, state: dict[str, Any]) -> Iterator[Divergence]:
        rows = dict(session.execute(text("SELECT id, role FROM organizations")).all())
        for org_id, role in sorted(rows.items()):
            if state.get(org_id) not in (None, role):
                yield Divergence(self.table, org_id, "role", state[org_id], role)


def test_a_new_kind_of_state_plugs_in_with_its_own_reducer(runtime: Runtime, make_org: OrgFactory) -> None:
    bank = make_org(Role.bank, "Bank")
    reconciler = Reconciler(runtime.ledger, [_Counted()])
    with runtime.db.transaction(write=False, snapshot=True) as s:
        assert reconciler.run(s).ok
    sql(runtime, "UPDATE organizations SET role = 'platform_admin' WHERE id = :id", id=bank.id)
    with runtime.db.transaction(write=False, snapshot=True) as s:
        report = reconciler.run(s)
    assert [(d.table, d.row_id, d.column) for d in report.divergences] == [("organizations", bank.id, "role")]


def test_consents_expiring_are_not_divergent(runtime: Runtime, cworld: ConsentWorld) -> None:
    """Expiry is not a state: a consent past its window reconciles as it is."""
    cworld.grant(cworld.subjects[0], valid_until=utcnow() + timedelta(seconds=1))
    assert runtime.check_state().ok
