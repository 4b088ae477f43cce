"""Aggregate queries: a bank asks for cohort statistics; the answer passes output controls before it leaves.

``POST /v1/aggregates`` answers synchronously (the data is read from an in-memory cache of the current
dataset versions). Small cohorts are suppressed, differencing is refused, every answer carries Laplace noise
and spends the bank's epsilon budget (``GET /v1/aggregates/budget``). A provider opts its dataset in to
platform-wide aggregates over its C2 fields with ``PATCH /v1/datasets/{id}/aggregates``. The format, the
noise and the accounting are in ``docs/protocols.md``; :mod:`pps.services.aggregates` says who learns what.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import Caller, RuntimeDep, allow
from api.middleware import current_request_id
from api.schemas import Request
from pps.errors import NotFound
from pps.infra.storage.tables import Role
from pps.services.aggregates import AggregateSpec

router = APIRouter(prefix="/v1", tags=["aggregates"])

Bank = Annotated[Caller, allow(Role.bank)]
Provider = Annotated[Caller, allow(Role.data_provider)]

Attribute = Literal["industry", "region", "size_class"]
MONTH = r"^\d{4}-(0[1-9]|1[0-2])$"


class MonthsIn(Request):
    from_: str = Field(alias="from", pattern=MONTH, description="first month, YYYY-MM (inclusive)")
    to: str = Field(pattern=MONTH, description="last month, YYYY-MM (inclusive)")


class BoundsIn(Request):
    lower: float = Field(allow_inf_nan=False)
    upper: float = Field(allow_inf_nan=False)


class AggregateQueryIn(Request):
    scope: Literal["consented", "platform"] = Field(
        description="consented: your consented enterprises only; platform: every enterprise, where providers "
        "opted in for C2 fields"
    )
    purpose: str = Field(max_length=64)
    statistic: Literal["count", "sum", "mean", "histogram"]
    dataset: str | None = Field(
        None, max_length=64, description="the measured dataset: a source name (tax, ...) or a dataset id"
    )
    field: str | None = Field(None, max_length=63, description="a numeric field of that dataset")
    months: MonthsIn | None = Field(None, description="month range of a monthly dataset (default: all)")
    cohort: dict[Attribute, list[str]] = Field(
        default_factory=dict, description="registry attribute -> allowed values, e.g. {'industry': ['C']}"
    )
    group_by: list[Attribute] = Field(default_factory=list, max_length=3)
    bounds: BoundsIn | None = Field(
        None, description="each enterprise's contribution is clamped to [lower, upper] (sum, mean, histogram)"
    )
    bins: int | None = Field(None, ge=2, le=100, description="equal-width bins over the bounds (histogram)")
    epsilon: float = Field(gt=0, allow_inf_nan=False, description="privacy loss this query spends")

    def spec(self) -> AggregateSpec:
        return AggregateSpec(
            statistic=self.statistic,
            scope=self.scope,
            purpose=self.purpose,
            epsilon=self.epsilon,
            dataset=self.dataset,
            field=self.field,
            months=(self.months.from_, self.months.to) if self.months else None,
            cohort={k: tuple(v) for k, v in self.cohort.items()},
            group_by=tuple(self.group_by),
            lower=self.bounds.lower if self.bounds else None,
            upper=self.bounds.upper if self.bounds else None,
            bins=self.bins,
        )


class CellOut(BaseModel):
    group: dict[str, str] = Field(description="the cell's attribute values; empty without group_by")
    count: int | None = None
    sum: float | None = None
    mean: float | None = None
    histogram: list[int] | None = None
    disputed_inputs: bool = Field(
        False, description="a member has an open objection on a field this query reads (never who)"
    )


class AggregateAnswerOut(BaseModel):
    query_id: str
    statistic: str
    scope: str
    purpose: str
    epsilon_spent: float = Field(description="0 when every cell was suppressed (nothing released)")
    budget_remaining: float
    min_cohort_size: int
    cells: list[CellOut] = Field(
        description="the released cells; cells with fewer than min_cohort_size enterprises (or none) are not shown"
    )
    noise_scale: dict[str, float] = Field(description="Laplace scale of each released quantity")
    bin_edges: list[float] | None = None


class BudgetOut(BaseModel):
    bank_org_id: str
    total_epsilon: float
    spent_epsilon: float
    remaining_epsilon: float
    max_epsilon_per_query: float
    min_cohort_size: int


class PlatformAggregatesIn(Request):
    platform_aggregates: bool = Field(
        description="allow platform-wide aggregate queries (all enterprises, no consent) over this dataset's "
        "C2 fields; C3 fields are never aggregated"
    )


class PlatformAggregatesOut(BaseModel):
    dataset_id: str
    platform_aggregates: bool


@router.post("/aggregates", summary="cohort statistics under output controls (answered at once)")
def query(body: AggregateQueryIn, caller: Bank, rt: RuntimeDep) -> AggregateAnswerOut:
    answer = rt.aggregates.answer(body.spec(), actor=caller.actor, request_id=current_request_id())
    out: dict[str, Any] = answer.as_json()
    return AggregateAnswerOut.model_validate(out)


@router.get("/aggregates/budget", summary="my privacy budget (epsilon): total, spent, remaining")
def budget(caller: Bank, rt: RuntimeDep) -> BudgetOut:
    with rt.db.transaction(write=False) as session:
        b = rt.aggregates.budget(session, caller.org_id)
    return BudgetOut(
        bank_org_id=b.bank_org_id,
        total_epsilon=b.total,
        spent_epsilon=b.spent,
        remaining_epsilon=b.remaining,
        max_epsilon_per_query=rt.aggregates.max_epsilon,
        min_cohort_size=rt.aggregates.min_cohort_size,
    )


@router.patch(
    "/datasets/{dataset_id}/aggregates",
    summary="allow or stop platform-wide aggregates over my dataset's C2 fields",
)
def set_platform_aggregates(
    dataset_id: str, body: PlatformAggregatesIn, caller: Provider, rt: RuntimeDep
) -> PlatformAggregatesOut:
    with rt.db.transaction() as session:
        ds = rt.datasets.get(session, dataset_id)
        if ds.provider_org_id != caller.org_id:
            raise NotFound(f"dataset {dataset_id} does not exist")
        rt.aggregates.set_platform_aggregates(
            session, ds, body.platform_aggregates, actor=caller.actor, request_id=current_request_id()
        )
        return PlatformAggregatesOut(dataset_id=ds.id, platform_aggregates=ds.platform_aggregates)
