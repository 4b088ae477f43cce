"""Aggregate queries: cohort statistics under output controls (minimum cohort, noise, a privacy budget)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pps_client._client import dumps
from pps_client._resources._base import Resource
from pps_wire.schemas import AggregateAnswerOut, AggregateQueryIn, BudgetOut

Statistic = Literal["count", "sum", "mean", "histogram"]


class Aggregates(Resource):
    def query(
        self,
        statistic: Statistic,
        *,
        purpose: str,
        epsilon: float,
        scope: Literal["consented", "platform"] = "consented",
        dataset: str | None = None,
        field: str | None = None,
        months: tuple[str, str] | None = None,
        cohort: Mapping[str, Iterable[str]] | None = None,
        group_by: Iterable[str] | None = None,
        bounds: tuple[float, float] | None = None,
        bins: int | None = None,
    ) -> AggregateAnswerOut:
        """Cohort statistics (``docs/protocols.md``): count, sum, mean or histogram of ``field`` of ``dataset``
        (a source name such as ``tax``, or a dataset id) over ``months`` (``("2024-01", "2024-12")``), for the
        cohort (``{"industry": ["C"]}``), per ``group_by`` cell. ``bounds`` clamp each enterprise's contribution
        (sum, mean, histogram). Cells below the minimum cohort size are left out; refusals raise
        :class:`~pps_client.Refused` / :class:`~pps_client.BudgetExhausted`."""
        doc: dict[str, Any] = {
            "statistic": statistic,
            "scope": scope,
            "purpose": purpose,
            "epsilon": epsilon,
            "dataset": dataset,
            "field": field,
            "cohort": {k: list(v) for k, v in (cohort or {}).items()},
            "group_by": list(group_by or []),
            "bins": bins,
        }
        if months is not None:
            doc["months"] = {"from": months[0], "to": months[1]}
        if bounds is not None:
            doc["bounds"] = {"lower": bounds[0], "upper": bounds[1]}
        body = AggregateQueryIn.model_validate(doc)
        return self._client._call("POST", "/v1/aggregates", AggregateAnswerOut, json_body=dumps(body))

    def budget(self) -> BudgetOut:
        """This bank's privacy budget: total, spent and remaining epsilon."""
        return self._client._call("GET", "/v1/aggregates/budget", BudgetOut)
