"""What the SDK computes here from the service's answers: decrypted scores, verified entries and receipts,
attested contexts, training results. (The service's own answers are the models of :mod:`pps_wire.schemas`.)"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pps_wire.checkpoint import Checkpoint
from pps_wire.schemas import (
    Disputed,
    JobPublic,
    LedgerEntry,
    ModelOut,
    NotScored,
    QuoteOut,
    ScopeItem,
    ScoreResultHeader,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from protocols.vertical_lr import GuestModel

    F64 = npt.NDArray[np.float64]
else:
    F64 = Any
    GuestModel = Any

ProgressCallback = Callable[[JobPublic], None]
"""Called with the job each time it is polled (``job.progress.done`` of ``job.progress.total``)."""


@dataclass(frozen=True)
class ScoringResult:
    """A decrypted scoring result: one score per scored subject, and who was not scored and why."""

    job_id: str
    subjects: list[str]
    raw: F64 | None
    """logits (logistic) or points (scorecard), in the order of ``subjects``; None if nobody was scored"""
    probabilities: F64 | None
    """sigmoid(raw) for a logistic model, else None"""
    not_scored: list[NotScored]
    header: ScoreResultHeader

    @property
    def disputed(self) -> list[Disputed]:
        """Scored subjects with open objections on inputs the model read (the values are as the provider holds
        them; the subject disputes them)."""
        return list(self.header.disputed)

    def as_dict(self) -> dict[str, float]:
        """subject -> probability (logistic) or points (scorecard)."""
        values = self.probabilities if self.probabilities is not None else self.raw
        if values is None:
            return {}
        return {s: float(v) for s, v in zip(self.subjects, values, strict=True)}


@dataclass(frozen=True)
class VerifiedEntry:
    """A ledger entry checked end to end: its checkpoint's signature, its leaf hash, its inclusion proof."""

    index: int
    entry: LedgerEntry
    checkpoint: Checkpoint
    redacted: bool
    """True for a view without the entry's bytes: only its presence in the signed log was checked"""
    document: dict[str, Any] = field(repr=False)
    """the entry as the bytes that were hashed say it (or the redacted view)"""


@dataclass(frozen=True)
class ConsentReceipt:
    """A verified consent receipt: what the subject granted the bank (``docs/protocols.md``)."""

    consent_id: str
    issuer: str
    subject: str
    bank_id: str
    bank_name: str | None
    purpose: str
    scope: list[ScopeItem]
    operations: list[str]
    valid_from: datetime
    valid_until: datetime
    max_uses: int | None
    granted_at: datetime
    document: dict[str, Any] = field(repr=False)
    """the signed JSON, as verified"""


@dataclass(frozen=True)
class EnclaveQuote:
    """A quote fetched for ``nonce`` (not yet verified: see :func:`pps_client.verify_quote`)."""

    quote: bytes
    nonce: bytes
    info: QuoteOut


@dataclass(frozen=True)
class SealedContext:
    """The enclave's public HE contexts for sealed datasets, checked against a quote that binds them."""

    context_id: str
    public_context: bytes
    bfv_context_id: str | None
    bfv_public_context: bytes | None
    """None for a context made before exact integer columns"""
    params: dict[str, object]
    quote: bytes
    report_nonce: bytes
    """the nonce the verified quote answers (a bank provisions its score request to that quote)"""


@dataclass(frozen=True)
class SealedScores:
    """Scores over a sealed dataset, opened here (they carry the enclave's small noise)."""

    query_id: str
    scores: dict[str, float]
    not_used: dict[str, int]


@dataclass(frozen=True)
class GBDTResult:
    """An enclave GBDT job's outputs, checked to come from the enclave and decrypted here."""

    job: JobPublic
    outputs: dict[str, Any]
    """``metrics`` in the clear; ``scores`` and ``model`` decrypted with the key made for this job"""
    measurement: str


@dataclass(frozen=True)
class Alignment:
    """How many rows a vertical training used: the bank's customers, those PSI aligned, those the platform used."""

    customers: int
    aligned: int
    used: int


@dataclass(frozen=True)
class VerticalTrainingResult:
    """What the bank has after a vertical training: its own half, the registered model, and what happened."""

    model: ModelOut
    """the registry's description (``model.id`` names the model for scoring and evaluation)"""
    guest_model: GuestModel
    subjects: list[str]
    """the rows used, in the order of ``guest_model``'s training"""
    excluded: dict[str, int]
    losses: list[float]
    epochs: int
    stopped_early: bool
    alignment: Alignment
    seconds: float
    converged: bool = False
    """the loss stopped improving before the epoch limit; False: the model hit its limit and may be
    under-fitted (train for more epochs)"""
