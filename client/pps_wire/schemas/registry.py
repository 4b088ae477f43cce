"""The model registry: a model's description, held-out evaluations, a vertical model's contributions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field

from pps_wire.schemas.common import Request, Response


class EvaluationIn(Request):
    evaluation: dict[str, Any] = Field(
        description="models.metrics.Evaluation.to_dict() of a held-out evaluation the bank computed"
    )


class ContributionsIn(Request):
    purpose: str = Field(max_length=64)
    subjects: list[Annotated[str, Field(max_length=18)]] = Field(max_length=10_000)
    public_key: str = Field(
        max_length=4096, description="the bank's Paillier public key (its modulus), base64"
    )


# --- answers the API gives as plain objects (read by the client) ----------------------------------------------


class ModelMetrics(Response):
    auc: float
    ks: float
    n: int
    positives: int
    cutoff: float
    brier: float | None = None
    """calibration, when the scores were probabilities: Brier score, expected calibration error, and the mean
    predicted against the observed default rate"""
    ece: float | None = None
    mean_predicted: float | None = None
    observed_rate: float | None = None
    bank_alone_auc: float | None = None
    """the bank's own-features model on the same held-out rows (what joining must beat), if posted"""
    bank_alone_ece: float | None = None


class ModelOut(Response):
    """A registered model's description (``GET /v1/models/{id}``): never its parameters."""

    id: str
    name: str
    kind: str
    created_by: str
    owners: list[str]
    purpose: str | None
    features: list[str]
    training: dict[str, Any]
    """counts, rounds and the consent ids the training relied on (kind-specific; never records)"""
    metrics: ModelMetrics | None
    evaluated_by: str | None
    ledger: list[int]
    parts: list[str]
    """who holds each part: ``owner`` or ``platform`` (a vertical model's host half)"""
    state: str
    created_at: datetime


class ModelReportOut(Response):
    """``GET /v1/models/{id}/report``: the description and the held-out evaluation (curves and counts)."""

    model: ModelOut
    evaluation: dict[str, Any] | None


class ContributionsOut(Response):
    """``POST /v1/models/{id}/contributions``: the platform's half of the scores, encrypted under the bank's key."""

    subjects: list[str]
    not_scored: dict[str, int]
    """reason -> how many of the asked subjects were not scored"""
    contribution: str
