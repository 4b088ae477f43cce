"""Aggregate queries: cohort statistics under output controls, and the bank's privacy budget."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pps_wire.schemas.common import Request, Response

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


class CellOut(Response):
    group: dict[str, str] = Field(description="the cell's attribute values; empty without group_by")
    count: int | None = None
    sum: float | None = None
    mean: float | None = None
    histogram: list[int] | None = None
    disputed_inputs: bool = Field(
        False, description="a member has an open objection on a field this query reads (never who)"
    )


class AggregateAnswerOut(Response):
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


class BudgetOut(Response):
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


class PlatformAggregatesOut(Response):
    dataset_id: str
    platform_aggregates: bool
