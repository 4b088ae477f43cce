"""Aggregate queries through the service: correct within the noise, and every output control refusing what
it must — small cohorts, differencing, the budget (also under concurrency), C3, the platform opt-in."""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select, update

from pps.errors import BudgetExhausted, Conflict, InvalidInput, PPSError, Refused
from pps.infra.storage.tables import Consent, Dataset, PrivacyBudget, ReleasedCohort
from pps.ledger.store import EntryFilter
from pps.runtime import Runtime
from pps.services.aggregates import AggregateSpec
from tests.pps.services.aggregates.conftest import (
    OPERATOR,
    World,
    consent,
    contributions,
    registry_of,
    upload,
)

pytestmark = pytest.mark.db
PURPOSE = "risk_statistics"


def spec(statistic: str = "count", scope: str = "platform", epsilon: float = 1.0, **kw: Any) -> AggregateSpec:
    return AggregateSpec(statistic=statistic, scope=scope, purpose=PURPOSE, epsilon=epsilon, **kw)


def set_budget(rt: Runtime, world: World, total: float, bank: Any = None) -> None:
    with rt.db.transaction() as s:
        rt.aggregates.set_budget(s, (bank or world.bank).id, total, actor=OPERATOR)


def opt_in(rt: Runtime, world: World, name: str = "tax", enabled: bool = True) -> None:
    with rt.db.transaction() as s:
        ds = s.get(Dataset, world.datasets[name])
        assert ds is not None
        rt.aggregates.set_platform_aggregates(s, ds, enabled, actor=world.actor(world.providers[name]))


def spent(rt: Runtime, world: World) -> float:
    with rt.db.transaction(write=False) as s:
        return rt.aggregates.budget(s, world.bank.id).spent


def entries(rt: Runtime, action: str | None = None) -> list[dict[str, Any]]:
    with rt.db.transaction(write=False) as s:
        found = rt.ledger.entries(s, EntryFilter(action=action), limit=10_000)
    return [json.loads(e.entry) for e in found]


def ledger_actions(rt: Runtime, prefix: str = "aggregate.") -> list[str]:
    return [e["action"] for e in entries(rt) if e["action"].startswith(prefix)]


def test_platform_counts_by_cohort_match_the_plaintext_and_small_cells_are_suppressed(
    runtime: Runtime, world: World
) -> None:
    set_budget(runtime, world, 10)
    reg = registry_of(world.data)
    exact = Counter(r["industry"] for r in reg.values())
    answer = runtime.aggregates.answer(spec(group_by=("industry",)), actor=world.actor())
    shown = {c.group["industry"]: c.count for c in answer.cells}
    assert set(shown) == {i for i, n in exact.items() if n >= 10}  # small cells are not shown at all
    assert any(0 < n < 10 for n in exact.values()), "the data should have a small cell to suppress"
    for industry, noisy in shown.items():
        assert abs(noisy - exact[industry]) <= 15  # discrete Laplace, scale 1: P(|noise| > 15) < 1e-6
    assert answer.epsilon_spent == 1.0 and answer.noise_scale["count"] == pytest.approx(1.0)
    assert answer.budget_remaining == pytest.approx(9.0)


def test_platform_sums_of_c2_fields_need_the_providers_opt_in(runtime: Runtime, world: World) -> None:
    set_budget(runtime, world, 10)
    query = spec("sum", dataset="tax", field="taxable_sales", lower=0.0, upper=200_000.0)
    with pytest.raises(Refused) as refused:
        runtime.aggregates.answer(query, actor=world.actor())
    assert refused.value.details["control"] == "platform_opt_in" and "opt in" in refused.value.message
    assert spent(runtime, world) == 0 and ledger_actions(runtime)[-1] == "aggregate.refused"
    opt_in(runtime, world)
    answer = runtime.aggregates.answer(query, actor=world.actor())
    exact = sum(min(max(v, 0.0), 200_000.0) for v in contributions(world.data).values())
    assert abs(answer.cells[0].sum - exact) < 15 * 200_000  # Laplace, scale 2e5
    assert ledger_actions(runtime)[-1] == "aggregate.release"
    opt_in(runtime, world, enabled=False)  # the provider can withdraw it again
    with pytest.raises(Refused):
        runtime.aggregates.answer(query, actor=world.actor())


def test_means_and_histograms_over_a_month_range_match_the_plaintext(runtime: Runtime, world: World) -> None:
    set_budget(runtime, world, 10)
    opt_in(runtime, world)
    months, upper = ("2024-03", "2024-05"), 500_000.0
    reg = registry_of(world.data)
    per = {u: min(max(v, 0.0), upper) for u, v in contributions(world.data, months=months).items()}
    micro = [v for u, v in per.items() if reg[u]["size_class"] == "micro"]
    mean = runtime.aggregates.answer(
        spec(
            "mean",
            dataset="tax",
            field="taxable_sales",
            months=months,
            lower=0.0,
            upper=upper,
            cohort={"size_class": ["micro"]},
        ),
        actor=world.actor(),
    )
    (cell,) = mean.cells
    assert abs(cell.count - len(micro)) <= 30  # scale 2
    assert abs(cell.sum - sum(micro)) <= 30 * upper  # scale 2 * upper
    assert abs(cell.mean - float(np.mean(micro))) < 0.25 * upper
    hist = runtime.aggregates.answer(
        spec(
            "histogram",
            dataset="tax",
            field="taxable_sales",
            months=months,
            lower=0.0,
            upper=upper,
            bins=4,
            cohort={"size_class": ["micro"]},
        ),
        actor=world.actor(),
    )
    exact = np.histogram(micro, bins=4, range=(0.0, upper))[0]
    assert hist.bin_edges == [0.0, 125_000.0, 250_000.0, 375_000.0, 500_000.0]
    assert np.all(np.abs(np.array(hist.cells[0].histogram) - exact) <= 15)


def test_consented_scope_counts_exactly_the_consented_and_spends_their_uses(
    runtime: Runtime, world: World
) -> None:
    set_budget(runtime, world, 10)
    with_data = sorted(contributions(world.data))
    full = consent(runtime, world, with_data[:40])
    # consented, but not to the registry fields the cohort reads: not in the cohort
    consent(runtime, world, with_data[40:60], fields={"tax": ["taxable_sales"]})
    consent(runtime, world, with_data[60:80], bank=world.other_bank)  # another bank's consents
    answer = runtime.aggregates.answer(
        spec(scope="consented", dataset="tax", field="taxable_sales", group_by=("size_class",)),
        actor=world.actor(),
    )
    reg = registry_of(world.data)
    exact = Counter(reg[u]["size_class"] for u in with_data[:40])
    for cell in answer.cells:
        assert exact[cell.group["size_class"]] >= 10
        assert abs(cell.count - exact[cell.group["size_class"]]) <= 15
    released = {u for u in with_data[:40] if exact[reg[u]["size_class"]] >= 10}
    with runtime.db.transaction(write=False) as s:
        uses = dict(
            s.execute(select(Consent.subject_uscc, Consent.uses).where(Consent.id.in_(full.values()))).all()
        )
    assert {u for u, n in uses.items() if n == 1} == released  # suppressed cells spent nothing
    releases = entries(runtime, "policy.release")
    assert {u for e in releases for u in e["subjects"]} == released
    assert all(e["released"] == [{"to": world.bank.id, "what": "aggregate:count"}] for e in releases)
    (entry,) = entries(runtime, "aggregate.release")
    assert entry["subjects"] == [] and entry["detail"]["epsilon_micro"] == 1_000_000
    assert entry["detail"]["spec"]["epsilon"] == "1.0" and entry["purpose"] == PURPOSE


def test_a_cohort_below_the_minimum_is_suppressed_and_costs_nothing(runtime: Runtime, world: World) -> None:
    consent(runtime, world, sorted(contributions(world.data))[:9])
    answer = runtime.aggregates.answer(
        spec(scope="consented", dataset="tax", field="taxable_sales", epsilon=0.5), actor=world.actor()
    )
    assert answer.cells == [] and answer.epsilon_spent == 0 and spent(runtime, world) == 0
    with runtime.db.transaction(write=False) as s:
        assert s.execute(select(func.count()).select_from(ReleasedCohort)).scalar_one() == 0
        assert s.execute(select(func.sum(Consent.uses))).scalar_one() == 0


def test_differencing_a_cohort_minus_one_enterprise_is_refused(runtime: Runtime, world: World) -> None:
    set_budget(runtime, world, 10)
    subjects = sorted(contributions(world.data))[:30]
    ids = consent(runtime, world, subjects)
    query = spec(scope="consented", dataset="tax", field="taxable_sales", epsilon=0.1)
    runtime.aggregates.answer(query, actor=world.actor())
    runtime.aggregates.answer(query, actor=world.actor())  # the same cohort again: allowed (it costs epsilon)
    with runtime.db.transaction() as s:
        runtime.consents.revoke(s, s.get(Consent, ids[subjects[0]]), actor=OPERATOR)  # type: ignore[arg-type]
    before = spent(runtime, world)
    with pytest.raises(Refused) as refused:
        runtime.aggregates.answer(query, actor=world.actor())  # A minus one enterprise
    assert refused.value.details["control"] == "differencing" and "fewer than 10" in refused.value.message
    assert spent(runtime, world) == before
    assert ledger_actions(runtime)[-1] == "aggregate.refused"
    # another bank has no history: the same cohort is fine for it; and a cohort 10 smaller is fine again
    consent(runtime, world, subjects[1:], bank=world.other_bank)
    runtime.aggregates.answer(query, actor=world.actor(world.other_bank))
    for u in subjects[1:10]:
        with runtime.db.transaction() as s:
            runtime.consents.revoke(s, s.get(Consent, ids[u]), actor=OPERATOR)  # type: ignore[arg-type]
    assert len(runtime.aggregates.answer(query, actor=world.actor()).cells) == 1  # 20 left: differs by 10


def test_differencing_by_filters_and_across_measures(runtime: Runtime, world: World) -> None:
    """Industry {big} and then {big, small} (small: 1-9 enterprises) differ by the small one: refused."""
    set_budget(runtime, world, 10)
    counts = Counter(r["industry"] for r in registry_of(world.data).values())
    big = counts.most_common(1)[0][0]
    small = next(i for i, n in counts.items() if 0 < n < 10)
    runtime.aggregates.answer(spec(cohort={"industry": [big]}, epsilon=0.1), actor=world.actor())
    with pytest.raises(Refused, match="differencing"):
        runtime.aggregates.answer(spec(cohort={"industry": [big, small]}, epsilon=0.1), actor=world.actor())


def test_the_budget_is_spent_exactly_and_then_refuses(runtime: Runtime, world: World) -> None:
    set_budget(runtime, world, 0.5)
    query = spec(group_by=("size_class",), epsilon=0.2)
    runtime.aggregates.answer(query, actor=world.actor())
    runtime.aggregates.answer(query, actor=world.actor())
    with pytest.raises(BudgetExhausted) as refused:
        runtime.aggregates.answer(query, actor=world.actor())
    assert refused.value.details["control"] == "budget" and "pps admin budget set" in refused.value.message
    assert spent(runtime, world) == pytest.approx(0.4)
    runtime.aggregates.answer(spec(group_by=("size_class",), epsilon=0.1), actor=world.actor())
    assert spent(runtime, world) == pytest.approx(0.5)
    with runtime.db.transaction() as s, pytest.raises(InvalidInput, match="already spent"):
        runtime.aggregates.set_budget(s, world.bank.id, 0.3, actor=OPERATOR)
    set_budget(runtime, world, 0.7)
    runtime.aggregates.answer(query, actor=world.actor())
    actions = ledger_actions(runtime)
    assert actions.count("aggregate.refused") == 1 and actions.count("aggregate.budget.set") == 2


@pytest.mark.slow
def test_concurrent_queries_never_overspend_the_budget(runtime: Runtime, world: World) -> None:
    set_budget(runtime, world, 1.0)
    query = spec(group_by=("size_class",), epsilon=0.25)
    runtime.aggregates.answer(query, actor=world.actor())  # warm the cache so the threads race on the budget
    outcomes: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(12)

    def run() -> None:
        start.wait()
        try:
            runtime.aggregates.answer(query, actor=world.actor())
            result = "answered"
        except BudgetExhausted:
            result = "exhausted"
        except PPSError as exc:  # pragma: no cover - shown in the assertion
            result = f"{exc.code}: {exc.message}"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=run) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(outcomes) == {"answered": 3, "exhausted": 9}, outcomes
    with runtime.db.transaction(write=False) as s:
        row = s.execute(select(PrivacyBudget.total_micro, PrivacyBudget.spent_micro)).one()
    assert tuple(row) == (1_000_000, 1_000_000)
    assert ledger_actions(runtime).count("aggregate.release") == 4


@pytest.mark.slow
def test_concurrent_differencing_queries_cannot_both_be_answered(runtime: Runtime, world: World) -> None:
    set_budget(runtime, world, 10)
    counts = Counter(r["industry"] for r in registry_of(world.data).values())
    big = counts.most_common(1)[0][0]
    small = next(i for i, n in counts.items() if 0 < n < 10)
    queries = [
        spec(cohort={"industry": [big]}, epsilon=0.1),
        spec(cohort={"industry": [big, small]}, epsilon=0.1),
    ]
    runtime.aggregates.answer(spec(cohort={"industry": ["Z"]}, epsilon=0.1), actor=world.actor())  # warm
    outcomes: list[str] = []
    start = threading.Barrier(2)

    def run(q: AggregateSpec) -> None:
        start.wait()
        try:
            runtime.aggregates.answer(q, actor=world.actor())
            outcomes.append("answered")
        except Refused as exc:
            outcomes.append(exc.details["control"])

    threads = [threading.Thread(target=run, args=(q,)) for q in queries]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["answered", "differencing"]


def test_c3_fields_are_refused_in_every_scope(runtime: Runtime, world: World) -> None:
    schema = {
        "subject_key": "uscc",
        "columns": [
            {"name": "uscc", "type": "uscc", "sensitivity": "C1"},
            {"name": "secret_amount", "type": "float", "sensitivity": "C3"},
        ],
    }
    rows = "".join(f"{u},{i}.5\n" for i, u in enumerate(sorted(registry_of(world.data))[:50]))
    ds = upload(runtime, world.providers["tax"], "secrets", schema, ("uscc,secret_amount\n" + rows).encode())
    with runtime.db.transaction() as s:
        d = s.get(Dataset, ds)
        assert d is not None
        runtime.aggregates.set_platform_aggregates(s, d, True, actor=world.actor(world.providers["tax"]))
    for scope in ("platform", "consented"):
        with pytest.raises(Refused) as refused:
            runtime.aggregates.answer(
                spec("sum", scope=scope, dataset=ds, field="secret_amount", lower=0.0, upper=10.0),
                actor=world.actor(),
            )
        assert refused.value.details["control"] == "c3" and "never released" in refused.value.message
    assert spent(runtime, world) == 0


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"statistic": "median"}, "statistic"),
        ({"scope": "everyone"}, "scope"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"epsilon": -1.0}, "epsilon"),
        ({"epsilon": 5.0}, "at most"),
        ({"epsilon": float("nan")}, "epsilon"),
        ({"dataset": "nowhere", "field": "x"}, "does not exist"),
        ({"dataset": "tax", "field": "nope"}, "no field"),
        ({"dataset": "registry", "field": "industry"}, "not numeric"),
        ({"dataset": "tax", "field": "month"}, "key column"),
        ({"statistic": "sum", "dataset": "tax", "field": "taxable_sales"}, "bounds"),
        (
            {"statistic": "sum", "dataset": "tax", "field": "taxable_sales", "lower": 5.0, "upper": 1.0},
            "below",
        ),
        (
            {
                "statistic": "histogram",
                "dataset": "tax",
                "field": "taxable_sales",
                "lower": 0.0,
                "upper": 1.0,
            },
            "bins",
        ),
        ({"dataset": "tax", "field": "taxable_sales", "months": ("2024-05", "2024-01")}, "after"),
        ({"dataset": "tax", "field": "taxable_sales", "months": ("2024-13", "2024-14")}, "YYYY-MM"),
        (
            {"dataset": "registry", "field": "registered_capital", "months": ("2024-01", "2024-02")},
            "not monthly",
        ),
        ({"cohort": {"colour": ["red"]}}, "cohort attribute"),
        ({"cohort": {"industry": []}}, "values"),
        ({"group_by": ("industry", "industry")}, "group_by"),
        ({}, "a count needs"),
        ({"purpose": "marketing"}, "purpose"),
    ],
)
def test_bad_queries_are_clear_errors_that_change_nothing(
    runtime: Runtime, world: World, kw: dict[str, Any], message: str
) -> None:
    base: dict[str, Any] = {"statistic": "count", "scope": "platform", "purpose": PURPOSE, "epsilon": 0.5}
    with runtime.db.transaction(write=False) as s:
        size = runtime.ledger.size(s)
    with pytest.raises(InvalidInput, match=message):
        runtime.aggregates.answer(AggregateSpec(**{**base, **kw}), actor=world.actor())
    with runtime.db.transaction(write=False) as s:
        assert runtime.ledger.size(s) == size
        assert s.execute(select(func.count()).select_from(PrivacyBudget)).scalar_one() == 0


def test_a_consent_spent_elsewhere_before_release_releases_nothing(
    runtime: Runtime, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_budget(runtime, world, 10)
    subjects = sorted(contributions(world.data))[:20]
    ids = consent(runtime, world, subjects)
    original = runtime.aggregates._remember

    def remember_then_exhaust(s: Any, *args: Any) -> None:
        original(s, *args)  # inside the answering transaction, right before the policy engine's release
        s.execute(update(Consent).where(Consent.id == ids[subjects[0]]).values(max_uses=1, uses=1))

    monkeypatch.setattr(runtime.aggregates, "_remember", remember_then_exhaust)
    with pytest.raises(Conflict, match="changed while the query ran"):
        runtime.aggregates.answer(
            spec(scope="consented", dataset="tax", field="taxable_sales"), actor=world.actor()
        )
    assert spent(runtime, world) == 0
    with runtime.db.transaction(write=False) as s:
        assert s.execute(select(func.sum(Consent.uses))).scalar_one() == 0
        assert s.execute(select(func.count()).select_from(ReleasedCohort)).scalar_one() == 0
    # the budget row the operator's setting made is recorded with it (the ledger alone gives every budget)
    assert ledger_actions(runtime) == ["aggregate.budget.open", "aggregate.budget.set"]
