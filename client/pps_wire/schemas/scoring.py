"""Encrypted scoring: the feature catalogue and a bank's encrypted model scored over consented subjects."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from pps_wire.schemas.common import Request, Response
from pps_wire.schemas.enclave import HEX64, ProvisionedIn

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
    approved_model_digest: str | None = None
    """the digest of the plaintext model the enclave approved (what disclosure accounting counts)"""
    context_id: str | None = None
    feature_window: FeatureWindow | None = None
    disputed: list[Disputed] = []
    annotated: list[AnnotatedInput] = []
    statements: list[Statement] = []
    repaired: list[Repaired] = []


class ModelApprovalIn(Request):
    """A model provisioned to the enclave's ``model_approval`` job (its plaintext parameters and the public
    CKKS context, HPKE-encrypted to the enclave key of a quote the bank verified; output policy: release
    ``approval``, ``encrypted_model`` and ``sealed_model``, no recipient key)."""

    quote_hash: str = Field(pattern=HEX64, description="the quote the model was encrypted for")
    model: ProvisionedIn


class GradedScoringIn(Request):
    """Score consented subjects with an approved model inside the enclave, each at its consented granularity."""

    approval_id: str = Field(max_length=40, description="the model approval to run")
    purpose: str = Field(max_length=64)
    subjects: list[Annotated[str, Field(max_length=18)]] | Literal["all_consented"]
    quote_hash: str = Field(pattern=HEX64, description="the quote the request was encrypted for")
    request: ProvisionedIn = Field(description='{"model_digest": ...} provisioned to job graded_score')
    recipient_key: str = Field(pattern=HEX64, description="hex X25519 public key the scores are encrypted to")


# --- explanations of automated decisions (PIPL Art. 24) --------------------------------------------------------


class AutomatedDecisionOut(Response):
    """``GET /v1/me/decisions``: one approved model whose output about you reached a bank."""

    bank_org_id: str
    bank: str
    model_digest: str
    approval_id: str | None
    granularity: str = Field(description="what the bank got: decision, grade or score")
    first_at: datetime
    last_at: datetime
    releases: int
    purposes: list[str] = Field(description="what the results were used for (the purposes of the releases)")
    explainable: bool = Field(description="the enclave holds the approved model, so it can be explained")


class ExplainIn(Request):
    bank_org_id: str = Field(max_length=40)
    model_digest: str = Field(pattern=HEX64)


class Driver(Response):
    feature: str
    description: str
    direction: Literal["raises", "lowers"] = Field(description="raises or lowers your estimated risk")
    share: float = Field(description="its share of what moved your score from the average, rounded to 10 %")


class ExplanationOut(Response):
    """``POST /v1/me/decisions/explain``: why an approved model scored you as it did, computed in the enclave."""

    bank_org_id: str
    bank: str
    approval_id: str
    model_digest: str
    purposes: list[str]
    features: list[str] = Field(description="every feature the model reads")
    population: str = Field(description="whom your features were compared with: enterprise or household")
    drivers: list[Driver]
    result: dict[str, Any] = Field(
        description="the result at the granularity the bank was given, recomputed on your current data"
    )
    granularity: str
    signature: str = Field(description="the enclave's Ed25519 signature over the explanation")
    signing_key: str
    explained_at: datetime
