"""Encrypted scoring: the feature catalogue, and a bank's encrypted model scored over consented subjects.

The bank sends its public CKKS context and its encrypted model (``protocols.he_scoring``; the wire format is
in ``docs/protocols.md``); the safe-room answers in a job whose result only the bank's secret key opens.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from fastapi import APIRouter, status
from pydantic import Field

from api.deps import Caller, RuntimeDep, allow
from api.middleware import current_request_id
from api.schemas import JobPublic, Request
from pps.errors import InvalidInput
from pps.infra.storage.tables import Role
from pps.services.scoring import ALL_CONSENTED

router = APIRouter(prefix="/v1", tags=["scoring"])

SCORING_PATH = "/v1/scoring"

Bank = Annotated[Caller, allow(Role.bank)]
Reader = Annotated[Caller, allow(Role.bank, Role.auditor, Role.platform_admin, Role.data_provider)]


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


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{what} must be base64") from None


@router.get("/features", summary="the platform features a model may read: names, kinds, units, lineage")
def features(caller: Reader, rt: RuntimeDep) -> list[dict[str, Any]]:
    with rt.db.transaction(write=False) as session:
        return [f.as_dict() for f in rt.features.catalogue(session)]


@router.post(
    "/scoring",
    status_code=status.HTTP_202_ACCEPTED,
    summary="score subjects with your encrypted model, as a job",
)
def submit_scoring(body: ScoringIn, caller: Bank, rt: RuntimeDep) -> JobPublic:
    rt.scoring.check_rate(caller.org_id)
    checked = rt.scoring.check(
        purpose=body.purpose,
        subjects=None if body.subjects == ALL_CONSENTED else list(body.subjects),
        context=_b64(body.context, "context"),
        model=_b64(body.model, "model"),
        preprocess={k: v.model_dump(exclude_none=True) for k, v in body.preprocess.items()},
    )
    with rt.db.transaction() as session:
        job = rt.scoring.submit(session, checked, actor=caller.actor, request_id=current_request_id())
        out = JobPublic.of(job)
    rt.jobs.enqueue(job.id)
    return out
