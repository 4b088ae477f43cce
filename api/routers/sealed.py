"""Sealed datasets: the enclave's public CKKS context (with a quote binding it), provider uploads of encrypted
columns, and banks' aggregates and encrypted scoring over them. Formats and who learns what: ``pps.services.sealed``
and ``docs/protocols.md`` ("Sealed datasets")."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Literal

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, Field

from api.deps import Caller, RuntimeDep, allow
from api.middleware import current_request_id
from api.schemas import Request
from pps.errors import InvalidInput
from pps.infra.storage.tables import Role
from pps.services.sealed import SealedColumn

router = APIRouter(prefix="/v1/sealed", tags=["sealed"])

UPLOAD_PATH = "/v1/sealed/datasets"
SCORING_PATH = "/v1/sealed/scoring"

Anyone = Annotated[Caller, allow()]
Bank = Annotated[Caller, allow(Role.bank)]
Provider = Annotated[Caller, allow(Role.data_provider)]
Admin = Annotated[Caller, allow(Role.platform_admin)]
HEX64 = r"^[0-9a-f]{64}$"
Name = Annotated[str, Field(max_length=63)]


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{what} must be base64") from None


class ContextOut(BaseModel):
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


class SealedDatasetOut(BaseModel):
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


class SealedScoringOut(BaseModel):
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


@router.get(
    "/context", summary="the enclave's public CKKS and BFV contexts and a quote binding them to your nonce"
)
def sealed_context(
    caller: Anyone,
    rt: RuntimeDep,
    nonce: Annotated[str, Query(pattern=r"^[0-9a-fA-F]{64}$", description="32 random bytes, hex")],
) -> ContextOut:
    got = rt.sealed.context_quote(bytes.fromhex(nonce), actor=caller.actor, request_id=current_request_id())
    return ContextOut(
        context_id=got["context_id"],
        public_context=base64.b64encode(got["public_context"]).decode(),
        bfv_context_id=got["bfv_context_id"],
        bfv_public_context=(
            base64.b64encode(got["bfv_public_context"]).decode()
            if got["bfv_public_context"] is not None
            else None
        ),
        quote=base64.b64encode(got["quote"]).decode(),
        params=got["params"],
    )


@router.post("/datasets", status_code=status.HTTP_201_CREATED, summary="upload a sealed dataset")
def upload_sealed(body: SealedUploadIn, caller: Provider, rt: RuntimeDep) -> SealedDatasetOut:
    columns = {
        name: SealedColumn(
            c.lower,
            c.upper,
            tuple(_b64(b, f"columns.{name}.blocks") for b in c.blocks),
            integer=c.type == "integer",
        )
        for name, c in body.columns.items()
    }
    with rt.db.transaction() as session:
        sealed = rt.sealed.upload(
            session,
            provider_org_id=caller.org_id,
            name=body.name,
            context_id=body.context_id,
            subjects=body.subjects,
            attributes=body.attributes,
            columns=columns,
            actor=caller.actor,
            request_id=current_request_id(),
        )
        return SealedDatasetOut(
            dataset_id=sealed.dataset_id,
            context_id=sealed.context_id,
            state=sealed.state,
            n_subjects=sealed.n_subjects,
            block_size=sealed.block_size,
        )


@router.post(
    "/aggregates",
    summary="a noisy sum / count / mean over a sealed column (exact before noise if integer), consented cohort",
)
def sealed_aggregate(body: SealedAggregateIn, caller: Bank, rt: RuntimeDep) -> dict[str, object]:
    return rt.sealed.aggregate(
        bank=caller.org_id,
        purpose=body.purpose,
        dataset_id=body.dataset_id,
        column=body.column,
        where=body.where,
        epsilon=body.epsilon,
        actor=caller.actor,
        request_id=current_request_id(),
    )


@router.post("/scoring", summary="encrypted scoring over a sealed dataset, scores encrypted to your key")
def sealed_scoring(body: SealedScoringIn, caller: Bank, rt: RuntimeDep) -> SealedScoringOut:
    got = rt.sealed.score(
        bank=caller.org_id,
        purpose=body.purpose,
        dataset_id=body.dataset_id,
        subjects=body.subjects,
        weights={k: _b64(v, f"weights.{k}") for k, v in body.weights.items()},
        quote_hash=body.quote_hash,
        provision=_b64(body.provision, "provision"),
        actor=caller.actor,
        request_id=current_request_id(),
    )
    return SealedScoringOut(
        query_id=got["query_id"],
        subjects=got["subjects"],
        release=base64.b64encode(got["release"]).decode(),
        not_used=got["not_used"],
    )


@router.post("/rotate", summary="rotate the enclave's HE key (an audited migration; no silent re-encryption)")
def rotate_sealed_key(body: RotateIn, caller: Admin, rt: RuntimeDep) -> dict[str, object]:
    if not body.confirm:
        raise InvalidInput("rotation needs confirm: true (datasets under the old key will need re-upload)")
    return rt.sealed.rotate(actor=caller.actor, request_id=current_request_id())
