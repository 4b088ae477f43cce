"""Sealed datasets: the enclave's public contexts (with a binding quote), provider uploads of encrypted columns,
and banks' aggregates and encrypted scoring over them (:mod:`pps_wire.sealed` has the score request)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from pps_wire.schemas.common import Request, Response

HEX64 = r"^[0-9a-f]{64}$"
Name = Annotated[str, Field(max_length=63)]


class ContextOut(Response):
    context_id: str = Field(description="hex SHA-256 of public_context")
    public_context: str = Field(
        description="TenSEAL public CKKS context, base64: parameters and public key only"
    )
    bfv_context_id: str | None = Field(
        None,
        description="hex SHA-256 of bfv_public_context (None: a context made before exact integer columns)",
    )
    bfv_public_context: str | None = Field(
        None,
        description="TenSEAL public BFV context, base64, for columns declared integer: parameters and public key",
    )
    quote: str = Field(
        description="enclave quote, base64; its nonce is SHA-256('PPS-SEALED-CONTEXT-v2' 0x00 || context id || "
        "BFV context id || your nonce) (without a BFV pair: 'PPS-SEALED-CONTEXT-v1' 0x00 || context id || nonce)"
    )
    params: dict[str, object]


class ColumnIn(Request):
    lower: float = Field(allow_inf_nan=False, description="the provider clipped values to [lower, upper]")
    upper: float = Field(allow_inf_nan=False)
    type: Literal["real", "integer"] = Field(
        "real",
        description="real: CKKS vectors (approximate); integer: BFV vectors under the BFV context, integer "
        "bounds, exact sums",
    )
    blocks: list[str] = Field(
        min_length=1, max_length=64, description="one CKKS (real) or BFV (integer) vector per block, base64"
    )


class SealedUploadIn(Request):
    name: str = Field(max_length=100)
    context_id: str = Field(pattern=HEX64)
    subjects: list[Annotated[str, Field(max_length=18)]] = Field(min_length=1, max_length=200_000)
    attributes: dict[Name, list[Annotated[str, Field(max_length=64)]]] = Field(
        default_factory=dict, description="C1 attributes left in the clear (industry, region, size class)"
    )
    columns: dict[Name, ColumnIn] = Field(min_length=1, max_length=64)


class SealedDatasetOut(Response):
    dataset_id: str
    context_id: str
    state: str
    n_subjects: int
    block_size: int


class SealedAggregateIn(Request):
    purpose: str = Field(max_length=64)
    dataset_id: str = Field(max_length=40)
    column: Name
    where: dict[Name, Annotated[str, Field(max_length=64)]] = Field(default_factory=dict)
    epsilon: float = Field(gt=0, le=10, allow_inf_nan=False)


class SealedScoringIn(Request):
    purpose: str = Field(max_length=64)
    dataset_id: str = Field(max_length=40)
    subjects: list[Annotated[str, Field(max_length=18)]] = Field(min_length=1, max_length=200_000)
    weights: dict[Name, str] = Field(
        min_length=1, max_length=64, description="column -> CKKS vector (the weight in every slot), base64"
    )
    quote_hash: str = Field(
        pattern=HEX64, description="hex SHA-256 of the context quote (GET /v1/sealed/context) you verified"
    )
    provision: str = Field(
        max_length=8192,
        description="your score request encrypted to that quote (enc || ciphertext, base64): output policy "
        "with your X25519 recipient key and result key, bound to the context, dataset and subjects; the "
        "enclave releases scores only to that key",
    )


class SealedScoringOut(Response):
    query_id: str
    subjects: list[str] = Field(description="the subjects scored, in the order of the encrypted scores")
    release: str = Field(
        description="the enclave's release document, base64: scores HPKE-encrypted to your provisioned key, "
        "tagged with your result key"
    )
    not_used: dict[str, int]


class RotateIn(Request):
    confirm: bool = Field(
        description="true: rotate the enclave's HE key; datasets under the old one need re-upload"
    )


# --- answers the API gives as plain objects (read by the client) ----------------------------------------------


class NoiseScale(Response):
    sum: float
    count: float


class SealedAggregateOut(Response):
    """``POST /v1/sealed/aggregates``: a noisy sum, count and mean over a sealed column (``exact``: the enclave's
    sum of an integer column was exact before the noise)."""

    query_id: str
    dataset_id: str
    column: str
    sum: int | float
    """an integer for an integer column (exact before its discrete noise)"""
    count: int | float
    mean: float
    noise: NoiseScale
    epsilon: float
    exact: bool


class RotatedOut(Response):
    """``POST /v1/sealed/rotate``: the new context, the retired one, the datasets that need re-upload."""

    context_id: str
    retired: str | None
    needs_reupload: list[str]
