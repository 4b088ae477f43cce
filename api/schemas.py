"""Request and response bodies, as the routes use them.

The bodies are defined once, in :mod:`pps_wire.schemas` (the client SDK parses the same classes); this module
re-exports those the routes use and adds what only the server can do: build a response from a table row, turn
a request into the service's arguments. Requests forbid unknown fields; responses never carry secrets except
the one-time token in :class:`TokenIssued`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Literal

from pps.data.datasets.schema import DatasetSchema
from pps.governance.consent import Terms
from pps.infra.storage.tables import ApiToken, Consent, Dataset, DatasetVersion, Job, Organization
from pps_wire.schemas import (
    BreakGlassIn,
    BreakGlassPublic,
    CatalogColumn,
    CatalogDataset,
    CheckpointOut,
    ConsentDecision,
    ConsentGrant,
    ConsentPublic,
    ConsentRequestIn,
    ConsentSigned,
    ConsentTerms,
    ConsistencyOut,
    DatasetCreate,
    DatasetPublic,
    DecisionOut,
    EnrolIn,
    Enrolled,
    EntryOut,
    JobPublic,
    Me,
    MineOut,
    OrgCreate,
    OrgCreated,
    OrgDisable,
    OrgPublic,
    Page,
    PolicyCheck,
    PolicyCheckOut,
    ProvenEntry,
    PublicKeyOut,
    Request,
    ScopeItemIn,
    SubjectDataset,
    SubjectKeyEnrol,
    SubjectKeyPublic,
    SubjectSignatureIn,
    TokenIssue,
    TokenIssued,
    TokenPublic,
    VersionPublic,
    b64,
)

__all__ = [
    "BreakGlassIn",
    "BreakGlassPublic",
    "CatalogColumn",
    "CatalogDataset",
    "CheckpointOut",
    "ConsentDecision",
    "ConsentGrant",
    "ConsentPublic",
    "ConsentRequestIn",
    "ConsentSigned",
    "ConsentTerms",
    "ConsistencyOut",
    "DatasetCreate",
    "DatasetPublic",
    "DecisionOut",
    "EnrolIn",
    "Enrolled",
    "EntryOut",
    "JobPublic",
    "Me",
    "MineOut",
    "OrgCreate",
    "OrgCreated",
    "OrgDisable",
    "OrgPublic",
    "Page",
    "PolicyCheck",
    "PolicyCheckOut",
    "ProvenEntry",
    "PublicKeyOut",
    "Request",
    "ScopeItemIn",
    "SubjectDataset",
    "SubjectKeyEnrol",
    "SubjectKeyPublic",
    "SubjectSignatureIn",
    "TokenIssue",
    "TokenIssued",
    "TokenPublic",
    "VersionPublic",
    "b64",
    "consent_public",
    "consent_terms",
    "dataset_public",
    "job_public",
    "org_public",
    "token_public",
    "version_public",
]


# --- identity ----------------------------------------------------------------------------------------


def org_public(org: Organization) -> OrgPublic:
    return OrgPublic(
        id=org.id,
        name=org.name,
        role=org.role,
        uscc=org.uscc,
        created_at=org.created_at,
        disabled_at=org.disabled_at,
    )


def token_public(token: ApiToken, now: datetime) -> TokenPublic:
    state: Literal["active", "expired", "revoked"] = (
        "revoked" if token.revoked_at else "expired" if token.expires_at <= now else "active"
    )
    return TokenPublic(
        id=token.id,
        org_id=token.org_id,
        label=token.label,
        created_at=token.created_at,
        expires_at=token.expires_at,
        revoked_at=token.revoked_at,
        state=state,
    )


# --- datasets ----------------------------------------------------------------------------------------


def version_public(v: DatasetVersion) -> VersionPublic:
    return VersionPublic(
        version=v.version,
        rows=v.row_count,
        format=v.format,
        kek_version=v.kek_version,
        created_at=v.created_at,
        shredded_at=v.shredded_at,
    )


def dataset_public(ds: Dataset, versions: list[DatasetVersion] | None = None) -> DatasetPublic:
    return DatasetPublic(
        id=ds.id,
        name=ds.name,
        description=ds.description,
        provider_org_id=ds.provider_org_id,
        schema_=DatasetSchema.model_validate_json(ds.schema_json),
        current_version=ds.current_version,
        created_at=ds.created_at,
        deleted_at=ds.deleted_at,
        versions=[version_public(v) for v in versions or []],
    )


# --- consent -----------------------------------------------------------------------------------------


def consent_terms(body: ConsentTerms) -> Terms:
    return Terms(
        purpose=body.purpose,
        scope=[i.model_dump() for i in body.scope],
        operations=body.operations,
        valid_until=body.valid_until,
        valid_from=body.valid_from,
        max_uses=body.max_uses,
        granularity=body.granularity,
    )


def consent_public(c: Consent, now: datetime) -> ConsentPublic:
    return ConsentPublic.model_validate(
        {
            "id": c.id,
            "subject_uscc": c.subject_uscc,
            "bank_org_id": c.bank_org_id,
            "purpose": c.purpose,
            "scope": json.loads(c.scope_json),
            "operations": json.loads(c.operations_json),
            "valid_from": c.valid_from,
            "valid_until": c.valid_until,
            "max_uses": c.max_uses,
            "granularity": c.granularity,
            "uses": c.uses,
            "state": c.state.value,
            "expired": c.valid_until <= now,
            "requested_by": c.requested_by,
            "created_at": c.created_at,
            "decided_at": c.decided_at,
            "revoked_at": c.revoked_at,
            "decision_note": c.decision_note,
            "has_receipt": c.receipt is not None,
        }
    )


# --- jobs --------------------------------------------------------------------------------------------


def job_public(job: Job) -> JobPublic:
    return JobPublic.model_validate(
        {
            "id": job.id,
            "kind": job.kind,
            "owner_org_id": job.owner_org_id,
            "purpose": job.purpose,
            "state": job.state.value,
            "progress": {"done": job.progress_done, "total": job.progress_total},
            "params": json.loads(job.params_json),
            "summary": json.loads(job.summary_json) if job.summary_json else None,
            "error": {"code": job.error_code, "message": job.error_message or ""} if job.error_code else None,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "expires_at": job.expires_at,
            "result_available": job.state.value == "succeeded" and job.result_deleted_at is None,
        }
    )
