"""Sealed datasets: the enclave's public CKKS context (with a quote binding it), provider uploads of encrypted
columns, and banks' aggregates and encrypted scoring over them. Formats and who learns what: ``pps.services.sealed``
and ``docs/protocols.md`` ("Sealed datasets")."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import APIRouter, Query, status

from api.deps import Caller, RuntimeDep, allow
from api.middleware import current_request_id
from pps.errors import InvalidInput
from pps.infra.storage.tables import Role
from pps.services.sealed import SealedColumn
from pps_wire.schemas.sealed import (
    ContextOut,
    RotateIn,
    SealedAggregateIn,
    SealedDatasetOut,
    SealedScoringIn,
    SealedScoringOut,
    SealedUploadIn,
)

router = APIRouter(prefix="/v1/sealed", tags=["sealed"])

UPLOAD_PATH = "/v1/sealed/datasets"
SCORING_PATH = "/v1/sealed/scoring"

Anyone = Annotated[Caller, allow()]
Bank = Annotated[Caller, allow(Role.bank)]
Provider = Annotated[Caller, allow(Role.data_provider)]
Admin = Annotated[Caller, allow(Role.platform_admin)]


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{what} must be base64") from None


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
