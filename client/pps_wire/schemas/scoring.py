"""Encrypted scoring: the feature catalogue and a bank's encrypted model scored over consented subjects."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from pps_wire.schemas.common import Request, Response

ALL_CONSENTED = "all_consented"
"""``subjects`` of a scoring or enclave job: every subject that consented to the bank."""


class PreprocessIn(Request):
    center: float = 0.0
    scale: float = Field(1.0, gt=0)
    clip: tuple[float, float] | None = None


class ScoringIn(Request):
    purpose: str = Field(max_length=64)
    subjects: list[Annotated[str, Field(max_length=18)]] | Literal["all_consented"] = Field(
        description="the USCCs to score, or 'all_consented' for every subject that consented to you"
    )
    context: str = Field(description="the public TenSEAL CKKS context, base64")
    model: str = Field(description="the encrypted model (a PPHE MODEL frame), base64")
    preprocess: dict[str, PreprocessIn] = Field(
        default_factory=dict,
        description="per feature: (clip(x, low, high) - center) / scale, applied before scoring",
    )


class FeatureOut(Response):
    """``GET /v1/features``: one platform feature a model may read."""

    name: str
    description: str
    kind: str
    unit: str | None
    resolution: float | None
    inputs: dict[str, list[str]]
    """dataset (source) -> the fields it reads"""
    datasets: dict[str, list[str]]
    """dataset id -> the non-key fields read (what a consent must cover)"""
    available: bool
    reason: str = ""


class NotScored(Response):
    """A subject a scoring job did not score, and why (a policy reason, or ``no_data``)."""

    subject: str
    reason: str
    detail: str = ""


class Disputed(Response):
    """A scored subject with open objections on inputs the model read."""

    subject: str
    dataset: str
    fields: list[str]


class AnnotatedInput(Response):
    """A scored subject with inputs whose objection could not be verified: the value is kept and annotated
    (征信业管理条例 Art. 25)."""

    subject: str
    dataset: str
    fields: list[str]
    annotation: str = "unverifiable"


class Statement(Response):
    """The subject's own statement on a negative record the model read (征信业管理条例 Art. 16)."""

    subject: str
    dataset: str
    record: str | None
    """the record's key where it is public (a dishonesty record's decision number), else None"""
    text: str


class Repaired(Response):
    """A dishonesty record this bank was told was repaired (a repair notice): it no longer counts."""

    subject: str
    record: str
    dataset: str


class FeatureWindow(Response):
    first_month: str
    months: int


class ScoreResultHeader(Response):
    """The header of a scoring job's result (:func:`pps_wire.frames.unpack_score_result`)."""

    subjects: list[str]
    """the subjects scored, in the order of the encrypted scores"""
    not_scored: list[NotScored]
    features: list[str] = []
    resolution: dict[str, float | None] = {}
    preprocess: dict[str, dict[str, object]] = {}
    model_digest: str | None = None
    context_id: str | None = None
    feature_window: FeatureWindow | None = None
    disputed: list[Disputed] = []
    annotated: list[AnnotatedInput] = []
    statements: list[Statement] = []
    repaired: list[Repaired] = []
