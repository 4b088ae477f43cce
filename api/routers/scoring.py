"""Encrypted scoring: the feature catalogue, and a bank's encrypted model scored over consented subjects.

The bank sends its public CKKS context and its encrypted model (``protocols.he_scoring``; the wire format is
in ``docs/protocols.md``); the safe-room answers in a job whose result only the bank's secret key opens.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, status
from sqlalchemy import select

from api.deps import Caller, RuntimeDep, allow
from api.middleware import current_request_id
from api.schemas import JobPublic, job_public
from models.features import FEATURES
from models.households import HOUSEHOLD_FEATURES
from pps.errors import InvalidInput
from pps.infra.storage.tables import ModelApproval, Role
from pps.services.approval import approval_public
from pps.services.scoring import ALL_CONSENTED
from pps_wire.schemas import (
    AutomatedDecisionOut,
    ExplainIn,
    ExplanationOut,
    GradedScoringIn,
    ModelApprovalIn,
    ScoringIn,
)

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


# --- model approval, graded scoring, disclosure accounting (pps.services.approval) -------------------------

Subject = Annotated[Caller, allow(Role.subject)]


@router.get("/scoring/model-policy", summary="the model policy a scoring model must meet, with its digest")
def model_policy(caller: Reader, rt: RuntimeDep) -> dict[str, Any]:
    return rt.approvals.published()


@router.post(
    "/scoring/approvals",
    summary="have your model checked in the enclave against the model policy; get it back encrypted by the enclave",
)
def approve_model(body: ModelApprovalIn, caller: Bank, rt: RuntimeDep) -> dict[str, Any]:
    enc, ct = _b64(body.model.enc, "model.enc"), _b64(body.model.ciphertext, "model.ciphertext")
    if len(enc) != 32:
        raise InvalidInput("model.enc must be 32 bytes (an X25519 encapsulated key)")
    row, encrypted = rt.approvals.approve(
        bank=caller.org_id,
        quote_hash=bytes.fromhex(body.quote_hash),
        ciphertext=enc + ct,
        actor=caller.actor,
        request_id=current_request_id(),
    )
    return {
        "approval": approval_public(row),
        "encrypted_model": base64.b64encode(encrypted).decode() if encrypted is not None else None,
    }


@router.get("/scoring/approvals", summary="your approved models (digests, features, shares; no weights)")
def list_approvals(caller: Bank, rt: RuntimeDep) -> list[dict[str, Any]]:
    with rt.db.transaction(write=False) as session:
        rows = session.scalars(
            select(ModelApproval)
            .where(ModelApproval.bank_org_id == caller.org_id)
            .order_by(ModelApproval.created_at.desc())
        )
        return [approval_public(r) for r in rows]


@router.post(
    "/scoring/graded",
    status_code=status.HTTP_202_ACCEPTED,
    summary="score subjects with an approved model inside the enclave, each at the granularity it consented to",
)
def submit_graded(body: GradedScoringIn, caller: Bank, rt: RuntimeDep) -> JobPublic:
    enc, ct = _b64(body.request.enc, "request.enc"), _b64(body.request.ciphertext, "request.ciphertext")
    if len(enc) != 32:
        raise InvalidInput("request.enc must be 32 bytes (an X25519 encapsulated key)")
    checked = rt.graded.check(
        bank=caller.org_id,
        approval_id=body.approval_id,
        purpose=body.purpose,
        subjects=None if body.subjects == ALL_CONSENTED else list(body.subjects),
        recipient_key=body.recipient_key.lower(),
    )
    with rt.db.transaction() as session:
        job = rt.graded.submit(
            session,
            checked,
            quote_hash=bytes.fromhex(body.quote_hash),
            ciphertext=enc + ct,
            actor=caller.actor,
            request_id=current_request_id(),
        )
        out = job_public(job)
    rt.jobs.enqueue(job.id)
    return out


@router.get(
    "/me/disclosures",
    summary="which banks received results of which models about you, when, how often, at which granularity",
)
def my_disclosures(caller: Subject, rt: RuntimeDep) -> dict[str, Any]:
    if caller.uscc is None:
        raise InvalidInput("only an enterprise has disclosures")
    with rt.db.transaction(write=False) as session:
        rows = rt.disclosures.for_subject(session, caller.uscc)
    return {
        "budget_models": rt.disclosures.budget,
        "window_days": rt.disclosures.window_days,
        "disclosures": rows,
    }


def _describe(name: str) -> str:
    return FEATURES.get(name) or HOUSEHOLD_FEATURES.get(name) or name


@router.get(
    "/me/decisions",
    summary="the automated decisions that used your data: which bank, which approved model, for what (PIPL Art. 24)",
)
def my_decisions(caller: Subject, rt: RuntimeDep) -> list[AutomatedDecisionOut]:
    if caller.uscc is None:
        raise InvalidInput("only a data subject (an enterprise or a person) has decisions about it")
    with rt.db.transaction(write=False) as session:
        rows = rt.explanations.decisions(session, caller.uscc)
    return [AutomatedDecisionOut.model_validate(d.as_dict()) for d in rows]


@router.post(
    "/me/decisions/explain",
    summary="why an approved model scored you as it did: its main features and their direction, computed in "
    "the enclave (PIPL Art. 24)",
)
def explain_decision(body: ExplainIn, caller: Subject, rt: RuntimeDep) -> ExplanationOut:
    if caller.uscc is None:
        raise InvalidInput("only a data subject (an enterprise or a person) has decisions about it")
    out = rt.explanations.explain(
        subject=caller.uscc,
        bank_org_id=body.bank_org_id,
        model_digest=body.model_digest.lower(),
        actor=caller.actor,
        request_id=current_request_id(),
    )
    out["drivers"] = [{**d, "description": _describe(d["feature"])} for d in out["drivers"]]
    return ExplanationOut.model_validate(out)
