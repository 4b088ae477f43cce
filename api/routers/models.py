"""The model registry: a bank lists and reads its models, fetches its own parts, posts and reads evaluations.

Auditors and platform admins read every model's description; nobody fetches a part held by ``platform`` (a
vertical model's host half): the bank asks for an applicant's contribution instead
(``POST /v1/models/{id}/contributions``), released encrypted under the bank's own Paillier key.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from api.deps import Caller, RuntimeDep, allow
from api.middleware import current_request_id
from models.report import render_html
from pps.errors import InvalidInput
from pps.infra.storage.tables import Role
from pps_wire.schemas import ContributionsIn, EvaluationIn

router = APIRouter(prefix="/v1", tags=["models"])

Bank = Annotated[Caller, allow(Role.bank)]
Reader = Annotated[Caller, allow(Role.bank, Role.auditor, Role.platform_admin)]


@router.get("/models", summary="my models (every model for auditors and platform admins)")
def list_models(caller: Reader, rt: RuntimeDep) -> list[dict[str, Any]]:
    with rt.db.transaction(write=False) as session:
        records = rt.models.list_for(session, caller.org_id, sees_everything=caller.sees_everything)
        return [r.public() for r in records]


@router.get("/models/{model_id}", summary="one model's description: owners, features, training, metrics")
def get_model(model_id: str, caller: Reader, rt: RuntimeDep) -> dict[str, Any]:
    with rt.db.transaction(write=False) as session:
        record = rt.models.get(
            session, model_id, org_id=caller.org_id, sees_everything=caller.sees_everything
        )
        return record.public()


@router.get("/models/{model_id}/parameters", summary="my own part of a model (a ledger entry)")
def fetch_parameters(model_id: str, caller: Bank, rt: RuntimeDep) -> dict[str, Any]:
    with rt.db.transaction() as session:
        return rt.models.fetch(session, model_id, actor=caller.actor, request_id=current_request_id())


@router.get("/models/{model_id}/report", summary="the held-out evaluation as JSON (curves and counts)")
def get_report(model_id: str, caller: Reader, rt: RuntimeDep) -> dict[str, Any]:
    with rt.db.transaction(write=False) as session:
        record = rt.models.get(
            session, model_id, org_id=caller.org_id, sees_everything=caller.sees_everything
        )
    return {
        "model": record.public(),
        "evaluation": None if record.evaluation is None else record.evaluation.to_dict(),
    }


@router.get(
    "/models/{model_id}/report.html",
    response_class=HTMLResponse,
    summary="the evaluation page: ROC and KS curves drawn",
)
async def get_report_html(model_id: str, caller: Reader, rt: RuntimeDep) -> HTMLResponse:
    def render() -> str:
        with rt.db.transaction(write=False) as session:
            record = rt.models.get(
                session, model_id, org_id=caller.org_id, sees_everything=caller.sees_everything
            )
        return render_html(record.public(), record.evaluation)

    return HTMLResponse(await run_in_threadpool(render))


@router.post("/models/{model_id}/evaluation", summary="post the held-out evaluation I computed")
def post_evaluation(model_id: str, body: EvaluationIn, caller: Bank, rt: RuntimeDep) -> dict[str, Any]:
    with rt.db.transaction() as session:
        record = rt.models.post_evaluation(
            session, model_id, body.evaluation, actor=caller.actor, request_id=current_request_id()
        )
        return record.public()


@router.post(
    "/models/{model_id}/contributions",
    summary="a vertical model's host-half contribution for consented applicants, encrypted under my key",
)
def contributions(model_id: str, body: ContributionsIn, caller: Bank, rt: RuntimeDep) -> dict[str, Any]:
    try:
        key = base64.b64decode(body.public_key, validate=True)
    except ValueError:
        raise InvalidInput("public_key must be base64") from None
    message, scored, excluded = rt.training.contributions(
        model_id,
        actor=caller.actor,
        purpose=body.purpose,
        subjects=body.subjects,
        bank_key=key,
        request_id=current_request_id(),
    )
    return {
        "subjects": scored,
        "not_scored": excluded,
        "contribution": base64.b64encode(message).decode(),
    }
