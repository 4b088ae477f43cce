"""Aggregate queries: a bank asks for cohort statistics; the answer passes output controls before it leaves.

``POST /v1/aggregates`` answers synchronously (the data is read from an in-memory cache of the current
dataset versions). Small cohorts are suppressed, differencing is refused, every answer carries Laplace noise
and spends the bank's epsilon budget (``GET /v1/aggregates/budget``). A provider opts its dataset in to
platform-wide aggregates over its C2 fields with ``PATCH /v1/datasets/{id}/aggregates``. The format, the
noise and the accounting are in ``docs/protocols.md``; :mod:`pps.services.aggregates` says who learns what.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter

from api.deps import Caller, RuntimeDep, allow
from api.middleware import current_request_id
from pps.errors import NotFound
from pps.infra.storage.tables import Role
from pps.services.aggregates import AggregateSpec
from pps_wire.schemas import (
    AggregateAnswerOut,
    AggregateQueryIn,
    BudgetOut,
    PlatformAggregatesIn,
    PlatformAggregatesOut,
)

router = APIRouter(prefix="/v1", tags=["aggregates"])

Bank = Annotated[Caller, allow(Role.bank)]
Provider = Annotated[Caller, allow(Role.data_provider)]


def aggregate_spec(body: AggregateQueryIn) -> AggregateSpec:
    return AggregateSpec(
        statistic=body.statistic,
        scope=body.scope,
        purpose=body.purpose,
        epsilon=body.epsilon,
        dataset=body.dataset,
        field=body.field,
        months=(body.months.from_, body.months.to) if body.months else None,
        cohort={k: tuple(v) for k, v in body.cohort.items()},
        group_by=tuple(body.group_by),
        lower=body.bounds.lower if body.bounds else None,
        upper=body.bounds.upper if body.bounds else None,
        bins=body.bins,
    )


@router.post("/aggregates", summary="cohort statistics under output controls (answered at once)")
def query(body: AggregateQueryIn, caller: Bank, rt: RuntimeDep) -> AggregateAnswerOut:
    answer = rt.aggregates.answer(aggregate_spec(body), actor=caller.actor, request_id=current_request_id())
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
