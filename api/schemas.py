"""Request and response bodies. Requests forbid unknown fields; responses never carry secrets except the
one-time token in :class:`TokenIssued`."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from pps.data.datasets.schema import DatasetSchema
from pps.governance.consent import Terms
from pps.infra.storage.tables import ApiToken, Consent, Dataset, DatasetVersion, Job, Organization, Role
from pps.ledger.checkpoint import Checkpoint

T = TypeVar("T")


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_after: str | int | None = Field(
        None, description="pass as `after` to get the next page; null on the last page"
    )


# --- identity ----------------------------------------------------------------------------------------


class OrgCreate(Request):
    name: str = Field(min_length=1, max_length=200)
    role: Role
    uscc: str | None = Field(
        None,
        min_length=18,
        max_length=18,
        description="required for subjects (enterprises), refused otherwise",
    )


class OrgPublic(BaseModel):
    id: str
    name: str
    role: Role
    uscc: str | None
    created_at: datetime
    disabled_at: datetime | None

    @classmethod
    def of(cls, org: Organization) -> OrgPublic:
        return cls(
            id=org.id,
            name=org.name,
            role=org.role,
            uscc=org.uscc,
            created_at=org.created_at,
            disabled_at=org.disabled_at,
        )


class OrgDisable(Request):
    reason: str = Field(min_length=1, max_length=500, description="why the organisation is offboarded")


class TokenIssue(Request):
    label: str = Field("default", min_length=1, max_length=100)
    ttl_days: int | None = Field(None, ge=1, le=3650, description="lifetime; default set by the server")


class TokenPublic(BaseModel):
    id: str
    org_id: str
    label: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    state: Literal["active", "expired", "revoked"]

    @classmethod
    def of(cls, token: ApiToken, now: datetime) -> TokenPublic:
        state: Literal["active", "expired", "revoked"] = (
            "revoked" if token.revoked_at else "expired" if token.expires_at <= now else "active"
        )
        return cls(
            id=token.id,
            org_id=token.org_id,
            label=token.label,
            created_at=token.created_at,
            expires_at=token.expires_at,
            revoked_at=token.revoked_at,
            state=state,
        )


class TokenIssued(TokenPublic):
    token: str = Field(description="the bearer token; shown only now, store it safely")


class Me(BaseModel):
    org: OrgPublic
    token_id: str


# --- audit -------------------------------------------------------------------------------------------


class CheckpointOut(BaseModel):
    origin: str
    tree_size: int
    root_hash: str = Field(description="base64 SHA-256 root of the tree of tree_size entries")
    note: str = Field(description="the C2SP tlog-checkpoint signed note")

    @classmethod
    def of(cls, cp: Checkpoint) -> CheckpointOut:
        return cls(origin=cp.origin, tree_size=cp.tree_size, root_hash=b64(cp.root_hash), note=cp.note)


class PublicKeyOut(BaseModel):
    origin: str
    key_name: str
    key_id: str = Field(description="hex, the 4-byte signed-note key id")
    verifier_key: str = Field(description="signed-note verifier key: <name>+<key id hex>+<base64(0x01||key)>")
    public_key_pem: str


class EntryOut(BaseModel):
    index: int
    leaf_hash: str = Field(description="base64 SHA-256(0x00 || entry bytes)")
    entry_b64: str = Field(
        description="the exact canonical bytes that were hashed, base64 (empty where USCCs are masked)"
    )
    entry: dict[str, Any] = Field(description="the same entry, parsed")


class ProvenEntry(EntryOut):
    tree_size: int
    inclusion_proof: list[str] = Field(description="base64 hashes, leaf to root (RFC 9162 §2.1.3)")
    checkpoint: CheckpointOut | None = Field(
        None, description="the signed checkpoint at tree_size, if one was published"
    )


class ConsistencyOut(BaseModel):
    first: int
    second: int
    proof: list[str]


class MineOut(BaseModel):
    checkpoint: CheckpointOut
    items: list[ProvenEntry]
    next_after: int | None


# --- datasets ----------------------------------------------------------------------------------------


class DatasetCreate(Request):
    name: str = Field(min_length=1, max_length=100)
    description: str = Field("", max_length=1000)
    schema_: DatasetSchema = Field(alias="schema", description="the declared columns and keys")


class VersionPublic(BaseModel):
    version: int
    rows: int
    format: str
    kek_version: int | None
    created_at: datetime
    shredded_at: datetime | None

    @classmethod
    def of(cls, v: DatasetVersion) -> VersionPublic:
        return cls(
            version=v.version,
            rows=v.row_count,
            format=v.format,
            kek_version=v.kek_version,
            created_at=v.created_at,
            shredded_at=v.shredded_at,
        )


class DatasetPublic(BaseModel):
    """Metadata only: never values."""

    id: str
    name: str
    description: str
    provider_org_id: str
    schema_: DatasetSchema = Field(serialization_alias="schema")
    current_version: int | None
    created_at: datetime
    deleted_at: datetime | None
    versions: list[VersionPublic] = []

    @classmethod
    def of(cls, ds: Dataset, versions: list[DatasetVersion] | None = None) -> DatasetPublic:
        return cls(
            id=ds.id,
            name=ds.name,
            description=ds.description,
            provider_org_id=ds.provider_org_id,
            schema_=DatasetSchema.model_validate_json(ds.schema_json),
            current_version=ds.current_version,
            created_at=ds.created_at,
            deleted_at=ds.deleted_at,
            versions=[VersionPublic.of(v) for v in versions or []],
        )


class CatalogColumn(BaseModel):
    name: str
    type: str
    unit: str | None
    description: str
    sensitivity: str


class CatalogDataset(BaseModel):
    """What a bank may know of a dataset: its provider, shape and columns — never values."""

    id: str
    name: str
    description: str
    provider: str
    rows: int | None
    subject_key: str
    period_key: str | None
    record_key: str | None
    columns: list[CatalogColumn]


class SubjectDataset(BaseModel):
    dataset_id: str
    dataset: str
    provider: str
    version: int
    columns: list[CatalogColumn]
    rows: list[dict[str, Any]]


# --- consent -----------------------------------------------------------------------------------------


class ScopeItemIn(Request):
    dataset_id: str = Field(max_length=40)
    fields: list[str] = Field(
        min_length=1, max_length=500, description='field names; "*" means every C1 field (never C2 or C3)'
    )


class ConsentTerms(Request):
    purpose: str = Field(max_length=64)
    scope: list[ScopeItemIn] = Field(min_length=1, max_length=100)
    operations: list[str] = Field(min_length=1, max_length=5)
    valid_from: AwareDatetime | None = Field(None, description="default: now; with a timezone")
    valid_until: AwareDatetime = Field(description="with a timezone, e.g. 2027-01-01T00:00:00Z")
    max_uses: int | None = Field(None, ge=1, le=1_000_000)

    def terms(self) -> Terms:
        return Terms(
            purpose=self.purpose,
            scope=[i.model_dump() for i in self.scope],
            operations=self.operations,
            valid_until=self.valid_until,
            valid_from=self.valid_from,
            max_uses=self.max_uses,
        )


class ConsentGrant(ConsentTerms):
    bank_org_id: str = Field(max_length=40)


class ConsentRequestIn(ConsentTerms):
    subject_uscc: str = Field(min_length=18, max_length=18)


class ConsentDecision(Request):
    reason: str = Field(min_length=1, max_length=500)


class ConsentPublic(BaseModel):
    id: str
    subject_uscc: str
    bank_org_id: str
    purpose: str
    scope: list[dict[str, Any]]
    operations: list[str]
    valid_from: datetime
    valid_until: datetime
    max_uses: int | None
    uses: int
    state: str
    expired: bool
    requested_by: str
    created_at: datetime
    decided_at: datetime | None
    revoked_at: datetime | None
    decision_note: str | None
    has_receipt: bool

    @classmethod
    def of(cls, c: Consent, now: datetime) -> ConsentPublic:
        return cls(
            id=c.id,
            subject_uscc=c.subject_uscc,
            bank_org_id=c.bank_org_id,
            purpose=c.purpose,
            scope=json.loads(c.scope_json),
            operations=json.loads(c.operations_json),
            valid_from=c.valid_from,
            valid_until=c.valid_until,
            max_uses=c.max_uses,
            uses=c.uses,
            state=c.state.value,
            expired=c.valid_until <= now,
            requested_by=c.requested_by,
            created_at=c.created_at,
            decided_at=c.decided_at,
            revoked_at=c.revoked_at,
            decision_note=c.decision_note,
            has_receipt=c.receipt is not None,
        )


class PolicyCheck(Request):
    subjects: list[str] = Field(min_length=1, max_length=100_000)
    fields: dict[str, list[str]] = Field(description="dataset id → field names")
    operation: str = Field(max_length=16)
    purpose: str = Field(max_length=64)


class DecisionOut(BaseModel):
    subject: str
    allowed: bool
    consent_id: str | None
    reason: str | None
    detail: str


class PolicyCheckOut(BaseModel):
    allowed: int
    denied: dict[str, int]
    decisions: list[DecisionOut]


# --- jobs --------------------------------------------------------------------------------------------


class JobPublic(BaseModel):
    id: str
    kind: str
    owner_org_id: str
    purpose: str | None
    state: str
    progress: dict[str, int]
    params: dict[str, Any]
    summary: dict[str, Any] | None
    error: dict[str, str] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime
    result_available: bool

    @classmethod
    def of(cls, job: Job) -> JobPublic:
        return cls(
            id=job.id,
            kind=job.kind,
            owner_org_id=job.owner_org_id,
            purpose=job.purpose,
            state=job.state.value,
            progress={"done": job.progress_done, "total": job.progress_total},
            params=json.loads(job.params_json),
            summary=json.loads(job.summary_json) if job.summary_json else None,
            error={"code": job.error_code, "message": job.error_message or ""} if job.error_code else None,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            expires_at=job.expires_at,
            result_available=job.state.value == "succeeded" and job.result_deleted_at is None,
        )
