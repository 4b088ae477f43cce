"""Horizontal federated training: a federation, its rounds, and a bank's secure-aggregation messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal

from pydantic import Field

from pps_wire.schemas.common import Request, Response

PURPOSE: Final = "joint_model_training"
"""The one purpose a horizontal federation is for."""


class FederationIn(Request):
    name: str = Field(min_length=1, max_length=200)
    participants: list[str] = Field(
        min_length=2, max_length=50, description="bank organisation ids, the initiating bank included"
    )
    kind: Literal["horizontal_lr", "horizontal_mlp"]
    feature_schema: list[str] = Field(
        min_length=1, max_length=1000, description="the shared feature names, in order"
    )
    rounds: int = Field(ge=1, le=200)
    threshold: int = Field(ge=2, description="banks needed to finish a round (a majority of participants)")
    local_epochs: int = Field(1, ge=1, le=100)
    clip_norm: float = Field(5.0, gt=0, le=1e6, allow_inf_nan=False, description="L2 clip of each update")
    learning_rate: float = Field(0.1, gt=0, le=1e6, allow_inf_nan=False)
    l2: float = Field(1e-4, ge=0, le=1e6, allow_inf_nan=False)
    batch_size: int = Field(64, ge=1, le=100_000)
    hidden: int = Field(16, ge=1, le=1024, description="hidden units (horizontal_mlp)")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the initial model and of local shuffling")
    phase_timeout_s: int = Field(600, ge=1, le=7 * 24 * 3600)
    standardise: bool = Field(
        True,
        description="round 0 computes the features' joint means and variances by secure aggregation; every bank "
        "then trains on standardised features (the registered model is folded back onto raw features)",
    )
    validation_fraction: float = Field(
        0.2,
        ge=0,
        le=0.5,
        allow_inf_nan=False,
        description="rows each bank holds out; their log-loss is summed securely every round (0: none)",
    )
    patience: int = Field(5, ge=1, le=200, description="rounds without improvement before early stopping")
    min_delta: float = Field(
        1e-4, ge=0, le=1, allow_inf_nan=False, description="relative improvement that counts"
    )
    aggregation: Literal["secagg", "enclave"] = Field(
        "secagg",
        description="secagg: pairwise masks, the safe-room learns only the sum; enclave: each bank provisions its "
        "update to the attested enclave, which refuses or clips it and releases only the sum (one bank's "
        "influence bounded)",
    )
    purpose: Literal["joint_model_training"] = PURPOSE


class AcceptIn(Request):
    purpose: str = Field(max_length=64, description="must be joint_model_training")


MAX_MESSAGE_B64 = 48 * 1024 * 1024


class MessageIn(Request):
    message: str = Field(max_length=MAX_MESSAGE_B64, description="a secure-aggregation frame, base64")


class AdvanceIn(Request):
    pass


class SealedIn(Request):
    quote_hash: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="the quote it was encrypted for (hex)")
    ciphertext: str = Field(max_length=MAX_MESSAGE_B64, description="HPKE enc || ciphertext, base64")


class EnclaveInputIn(Request):
    update: SealedIn = Field(description="{terms, update, weight, tail} provisioned to slot bank<position>")
    terms: SealedIn | None = Field(
        None, description="the initiating bank only: the round's terms and output policy, slot terms"
    )


class ParticipantOut(Response):
    bank_org_id: str
    position: int
    accepted: bool


class RoundOut(Response):
    round_no: int
    phase: str
    phase_deadline: datetime
    posted: bool | None = None
    survivors: list[str] | None = None
    total_weight: int | None = None
    abort_reason: str | None = None


class FederationOut(Response):
    id: str
    name: str
    kind: str
    initiator_org_id: str
    state: str
    feature_schema: list[str]
    n_params: int
    rounds: int
    threshold: int
    local_epochs: int
    config: dict[str, Any]
    """the training configuration every bank uses: clip_norm, learning_rate, l2, batch_size, hidden, seed,
    phase_timeout_s (:func:`pps_wire.federated.model_hyper`)"""
    participants: list[ParticipantOut]
    my_position: int
    current_round: int
    model_id: str | None
    abort_reason: str | None
    created_at: datetime
    round: RoundOut | None
    global_weights: list[float] | None = Field(
        description="the model the current round trains from (the result, once the round is done)"
    )
    inbox: str | None = Field(description="base64 frame this bank needs for the current phase, if any")
    standardisation: dict[str, Any] | None = Field(
        None,
        description="the joint feature statistics of round 0 (rows, mean, scale, constant): what every bank "
        "standardises with; null for a federation that does not standardise",
    )
    validation: list[dict[str, Any]] = Field(
        default_factory=list,
        description="per training round: the securely aggregated validation log-loss of the global model the "
        "round started from, the loss of predicting the base rate, the rows",
    )
    enclave_terms: dict[str, Any] | None = Field(
        None,
        description="enclave-mode federations: the terms this round's updates are provisioned with",
    )
    outcome: dict[str, Any] | None = Field(
        None,
        description="once done: rounds_run, stopped (early_stopping | round_limit), converged, best_round, reason",
    )


class FederationSummaryOut(Response):
    id: str
    name: str
    kind: str
    state: str
    initiator_org_id: str
    current_round: int
    rounds: int
    model_id: str | None
    created_at: datetime
