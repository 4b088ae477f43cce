"""Aggregate queries end to end: over HTTP with the SDK, the provider's opt-in route, budgets, the CLI."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from pps.cli import app as cli
from pps.infra.settings import Settings
from pps.infra.storage.tables import Role
from pps.runtime import Runtime
from pps_client import BudgetExhausted, Client, NotFound, PermissionDenied, Refused
from tests.conftest import OrgFactory
from tests.pps.services.aggregates.conftest import World, consent, contributions, registry_of

pytestmark = pytest.mark.slow
PURPOSE = "risk_statistics"


def test_a_bank_queries_over_http_with_the_sdk(
    world: World, base_url: str, runtime: Runtime, make_org: OrgFactory
) -> None:
    bank = Client(base_url, world.bank.token)
    tax = Client(base_url, world.providers["tax"].token)
    assert (
        bank.aggregates.budget().remaining_epsilon == 1.0 and bank.aggregates.budget().min_cohort_size == 10
    )

    query: dict[str, Any] = {
        "purpose": PURPOSE,
        "scope": "platform",
        "dataset": "tax",
        "field": "taxable_sales",
        "months": ("2024-01", "2024-06"),
        "group_by": ["size_class"],
        "bounds": (0.0, 300_000.0),
        "epsilon": 0.5,
    }
    with pytest.raises(Refused, match="opt-in"):
        bank.aggregates.query("sum", **query)
    with pytest.raises(NotFound):  # another provider's dataset
        Client(base_url, world.providers["registry"].token).datasets.set_platform_aggregates(
            world.datasets["tax"], True
        )
    assert tax.datasets.set_platform_aggregates(world.datasets["tax"], True).platform_aggregates is True
    answer = bank.aggregates.query("sum", **query)
    reg = registry_of(world.data)
    per = contributions(world.data, months=("2024-01", "2024-06"))
    for cell in answer.cells:
        exact = sum(
            min(v, 300_000.0) for u, v in per.items() if reg[u]["size_class"] == cell.group["size_class"]
        )
        assert cell.sum is not None and abs(cell.sum - exact) < 20 * 600_000  # Laplace, scale 6e5
    assert answer.epsilon_spent == 0.5 and answer.noise_scale["sum"] == pytest.approx(600_000.0)
    assert bank.aggregates.budget().remaining_epsilon == pytest.approx(0.5)

    # consented scope: an enterprise that joined sees, redacted to itself, that it was in the cohort
    with_data = sorted(per)
    member = make_org(Role.subject, "Enterprise 0", uscc=with_data[0])
    consent(runtime, world, with_data[:25])
    counted = bank.aggregates.query(
        "count", purpose=PURPOSE, dataset="tax", field="taxable_sales", epsilon=0.2
    )
    assert abs((counted.cells[0].count or 0) - 25) <= 100  # scale 5: P(|noise| > 100) < 1e-8
    mine = [i.entry for i in Client(base_url, member.token).ledger.mine().items]
    released = [e for e in mine if e["action"] == "policy.release"]
    assert released and released[-1]["released"] == [{"to": world.bank.id, "what": "aggregate:count"}]
    assert released[-1]["subjects"] == [member.uscc]  # the others in the cohort are not shown to it

    with pytest.raises(BudgetExhausted):
        bank.aggregates.query("count", purpose=PURPOSE, dataset="tax", field="taxable_sales", epsilon=0.5)
    assert bank.aggregates.budget().remaining_epsilon == pytest.approx(0.3)


def test_http_refusals_and_bad_input(
    world: World, base_url: str, make_org: OrgFactory, http: Callable[..., httpx.Client]
) -> None:
    bank = Client(base_url, world.bank.token)
    for body in (
        {"statistic": "count", "scope": "platform", "purpose": PURPOSE, "epsilon": 0},
        {"statistic": "count", "scope": "platform", "purpose": PURPOSE, "epsilon": 0.1, "extra": 1},
        {
            "statistic": "sum",
            "scope": "platform",
            "purpose": PURPOSE,
            "epsilon": 0.1,
            "dataset": "tax",
            "field": "taxable_sales",
        },
        {
            "statistic": "count",
            "scope": "platform",
            "purpose": PURPOSE,
            "epsilon": 0.1,
            "dataset": "tax",
            "field": "taxable_sales",
            "months": {"from": "2024-1", "to": "2024-02"},
        },
        {
            "statistic": "count",
            "scope": "platform",
            "purpose": PURPOSE,
            "epsilon": 0.1,
            "cohort": {"colour": ["red"]},
        },
    ):
        response = http(world.bank.token).post("/v1/aggregates", json=body)
        assert response.status_code == 422, response.text
    assert bank.aggregates.budget().spent_epsilon == 0
    subject = Client(base_url, make_org(Role.subject).token)
    with pytest.raises(PermissionDenied, match="role"):
        subject.aggregates.query("count", purpose=PURPOSE, cohort={"industry": ["C"]}, epsilon=0.1)
    with pytest.raises(PermissionDenied, match="role"):
        bank.datasets.set_platform_aggregates(world.datasets["tax"], True)
    counts = Counter(r["industry"] for r in registry_of(world.data).values())
    big = counts.most_common(1)[0][0]
    small = next(i for i, n in counts.items() if 0 < n < 10)
    first = bank.aggregates.query(
        "count", purpose=PURPOSE, scope="platform", cohort={"industry": [big]}, epsilon=0.1
    )
    assert len(first.cells) == 1
    with pytest.raises(Refused) as refused:
        bank.aggregates.query(
            "count", purpose=PURPOSE, scope="platform", cohort={"industry": [big, small]}, epsilon=0.1
        )
    assert refused.value.details["control"] == "differencing"
    assert refused.value.status == 403 and refused.value.code == "refused"


def test_the_operator_sets_a_budget_with_the_cli(
    world: World, settings: Settings, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PPS_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("PPS_DATA_DIR", str(settings.data_dir))
    runner = CliRunner()
    result = runner.invoke(cli, ["admin", "budget", "set", world.bank.id, "3.5"])
    assert result.exit_code == 0, result.output
    assert "total epsilon 3.5" in result.output
    result = runner.invoke(cli, ["admin", "budget", "show", world.bank.id])
    assert result.exit_code == 0 and "remaining 3.5" in result.output
    result = runner.invoke(cli, ["admin", "budget", "set", world.providers["tax"].id, "1"])
    assert result.exit_code == 1 and "not a bank" in result.output
    with runtime.db.transaction(write=False) as s:
        assert runtime.aggregates.budget(s, world.bank.id).total == 3.5
