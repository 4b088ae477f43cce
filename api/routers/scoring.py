"""Encrypted scoring: the feature catalogue, and a bank's encrypted model scored over consented subjects.

The bank sends its public CKKS context and its encrypted model (``protocols.he_scoring``; the wire format is
in ``docs/protocols.md``); the safe-room answers in a job whose result only the bank's secret key opens.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, status

from api.deps import Caller, RuntimeDep, allow
from api.middleware import current_request_id
from api.schemas import JobPublic, job_public
from pps.errors import InvalidInput
from pps.infra.storage.tables import Role
from pps.services.scoring import ALL_CONSENTED
from pps_wire.schemas import ScoringIn

router = APIRouter(prefix="/v1", tags=["scoring"])

SCORING_PATH = "/v1/scoring"

Bank = Annotated[Caller, allow(Role.bank)]
Reader = Annotated[Caller, allow(Role.bank, Role.auditor, Role.platform_admin, Role.data_provider)]


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
        out = job_public(job)
    rt.jobs.enqueue(job.id)
    return out
