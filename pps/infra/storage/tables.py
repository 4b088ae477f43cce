"""The database tables (SQLAlchemy 2 typed ORM).

Alembic migrations under ``pps/infra/storage/migrations`` are the schema; a test proves that the migrated schema
equals this metadata on SQLite and on PostgreSQL. In this project the word *models* means risk models, so
tables live here, under ``pps/infra/storage``. Column types that migrations use live in
:mod:`pps.infra.storage.types`, frozen, so that old migrations never change with this module.
"""

from __future__ import annotations

import enum
import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy import Enum as SAEnum
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from pps.infra.storage.types import UTCDateTime
from pps_wire.schemas.identity import Role as Role  # the roles are part of the API

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """A random object id with a readable prefix, e.g. ``org_3f9c0a6b1d2e4f5a6b7c``."""
    return f"{prefix}_{secrets.token_hex(10)}"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: dict[Any, Any] = {datetime: UTCDateTime()}


class Organization(Base):
    __tablename__ = "organizations"
    __table_args__ = (CheckConstraint("role <> 'subject' OR uscc IS NOT NULL", name="subject_has_uscc"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[Role] = mapped_column(
        SAEnum(Role, native_enum=False, length=32, validate_strings=True, create_constraint=False)
    )
    uscc: Mapped[str | None] = mapped_column(String(18), unique=True)
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="org")


class ApiToken(Base):
    """An API credential. Only an HMAC of the secret is stored; the secret is shown once, at issue."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    label: Mapped[str] = mapped_column(String(100))
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]

    org: Mapped[Organization] = relationship(back_populates="tokens")


class LedgerHead(Base):
    """One row: the size of the ledger and its frontier. Appends lock it, so indices are dense and unique.

    ``frontier`` concatenates the hashes of the maximal perfect subtrees of the current tree (left to right,
    at most 64 of them): an append needs nothing else to extend the tree, and the root is their fold.
    It is a cache of stored nodes; ``pps audit verify`` checks that it agrees with them.
    """

    __tablename__ = "ledger_head"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    frontier: Mapped[bytes] = mapped_column(LargeBinary)


class LedgerEntry(Base):
    """One ledger entry: its canonical JSON bytes (what is hashed) and indexed copies of a few fields.

    The indexed columns serve filters only; ``pps audit verify`` checks that they agree with ``entry``.
    """

    __tablename__ = "ledger_entries"
    __table_args__ = (
        Index("ix_ledger_entries_actor_org_id_idx", "actor_org_id", "idx"),
        Index("ix_ledger_entries_action_idx", "action", "idx"),
    )

    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    entry: Mapped[bytes] = mapped_column(LargeBinary)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    time: Mapped[datetime]
    actor_org_id: Mapped[str | None] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))


class LedgerEntrySubject(Base):
    """Which subjects (USCCs) an entry touches, so a subject can list its own entries quickly."""

    __tablename__ = "ledger_entry_subjects"

    uscc: Mapped[str] = mapped_column(String(18), primary_key=True)
    idx: Mapped[int] = mapped_column(ForeignKey("ledger_entries.idx"), primary_key=True)


class LedgerEntryObject(Base):
    """Which objects an entry names, so lineage (every entry about a dataset) is one indexed query."""

    __tablename__ = "ledger_entry_objects"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    object_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    idx: Mapped[int] = mapped_column(ForeignKey("ledger_entries.idx"), primary_key=True)


class LedgerNode(Base):
    """The hash of the perfect subtree at ``(level, index)``; level 0 holds the leaf hashes."""

    __tablename__ = "ledger_nodes"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LedgerCheckpoint(Base):
    """A signed checkpoint (C2SP tlog-checkpoint signed note) as published."""

    __tablename__ = "ledger_checkpoints"

    tree_size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


# --- datasets ----------------------------------------------------------------------------------------


class KekCanary(Base):
    """A fixed plaintext wrapped by one key-encryption key version when that version was made: at start the
    service opens every canary, so a deleted, truncated or substituted key file is caught before any data is
    read (``pps.infra.keyring``). A version with a canary is never made again."""

    __tablename__ = "kek_canaries"

    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    blob: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]


class Dataset(Base):
    """A provider's dataset; its data lives in versions, encrypted column chunk by column chunk."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("provider_org_id", "name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    provider_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(1000))
    schema_json: Mapped[str] = mapped_column(Text)
    """the declared schema new versions are validated against"""
    current_version: Mapped[int | None]
    created_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]
    platform_aggregates: Mapped[bool] = mapped_column(default=False, server_default=false())
    """the provider's opt-in to platform-wide aggregate queries over its C2 fields (``pps.services.aggregates``)"""


class DatasetVersion(Base):
    """One upload. ``wrapped_dek`` is the version's data key wrapped by KEK ``kek_version``; null once shredded."""

    __tablename__ = "dataset_versions"

    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    schema_json: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(16))
    row_count: Mapped[int] = mapped_column(BigInteger)
    chunk_rows: Mapped[int]
    chunk_count: Mapped[int]
    kek_version: Mapped[int | None]
    wrapped_dek: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
    shredded_at: Mapped[datetime | None]


class DatasetChunk(Base):
    """An encrypted column chunk (AES-256-GCM under the version's data key, bound to its place by the AAD)."""

    __tablename__ = "dataset_chunks"
    __table_args__ = (
        ForeignKeyConstraint(
            ["dataset_id", "version"], ["dataset_versions.dataset_id", "dataset_versions.version"]
        ),
    )

    dataset_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    column: Mapped[str] = mapped_column(String(63), primary_key=True)
    chunk: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)


# --- consent -----------------------------------------------------------------------------------------


class ConsentState(enum.StrEnum):
    requested = "requested"
    active = "active"
    denied = "denied"
    revoked = "revoked"


class Consent(Base):
    """A subject's consent for one bank and purpose, over named fields, for named operations, in a window.

    ``scope_json`` is ``[{"dataset_id": ..., "fields": [...]}]`` with every field named explicitly.
    Expiry is not a state: a consent past ``valid_until`` is simply not valid any more.
    """

    __tablename__ = "consents"
    __table_args__ = (
        Index("ix_consents_bank_org_id_purpose_subject_uscc", "bank_org_id", "purpose", "subject_uscc"),
        Index("ix_consents_subject_uscc", "subject_uscc"),
        CheckConstraint("valid_until > valid_from", name="window_is_positive"),
        CheckConstraint("max_uses IS NULL OR max_uses > 0", name="max_uses_positive"),
        CheckConstraint("uses >= 0 AND (max_uses IS NULL OR uses <= max_uses)", name="uses_within_limit"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subject_uscc: Mapped[str] = mapped_column(String(18))
    """the enterprise, by its USCC: a bank may ask an enterprise that has not joined yet (and cannot tell)"""
    bank_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    purpose: Mapped[str] = mapped_column(String(64))
    scope_json: Mapped[str] = mapped_column(Text)
    operations_json: Mapped[str] = mapped_column(Text)
    valid_from: Mapped[datetime]
    valid_until: Mapped[datetime]
    max_uses: Mapped[int | None]
    uses: Mapped[int]
    state: Mapped[ConsentState] = mapped_column(
        SAEnum(ConsentState, native_enum=False, length=16, validate_strings=True, create_constraint=False)
    )
    requested_by: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    decision_note: Mapped[str | None] = mapped_column(String(500))
    receipt: Mapped[str | None] = mapped_column(Text)
    """the signed consent receipt (a signed note over canonical JSON), once granted"""
    granularity: Mapped[str] = mapped_column(String(16), server_default="score")
    """what a score may release about the subject: ``decision``, ``grade`` or ``score``
    (:mod:`enclave_sim.model_check`); consents given before it existed released scores, and keep doing so"""


# --- jobs --------------------------------------------------------------------------------------------


class JobState(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL_JOB_STATES = frozenset({JobState.succeeded, JobState.failed, JobState.cancelled})


class Job(Base):
    """A persisted computation: accepted (stored) before it runs, and always ending in a terminal state."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_owner_org_id_created_at", "owner_org_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    owner_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    purpose: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[JobState] = mapped_column(
        SAEnum(JobState, native_enum=False, length=16, validate_strings=True, create_constraint=False),
        index=True,
    )
    params_json: Mapped[str] = mapped_column(Text)
    """what the job computes, as the service fixed it (never secrets or raw records)"""
    progress_done: Mapped[int] = mapped_column(BigInteger)
    progress_total: Mapped[int] = mapped_column(BigInteger)
    cancel_requested: Mapped[bool]
    runner: Mapped[str | None] = mapped_column(String(100))
    """``host:pid`` of the process running it, so a restart can tell its own dead jobs from live ones"""
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(String(1000))
    summary_json: Mapped[str | None] = mapped_column(Text)
    """what the requester may know about the outcome (counts, subjects not served and why)"""
    request_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    expires_at: Mapped[datetime]
    result_deleted_at: Mapped[datetime | None]


class JobBlob(Base):
    """Bytes that belong to a job: its input (``role='input'``) and, once released, its result."""

    __tablename__ = "job_blobs"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(16), primary_key=True)
    media_type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[bytes] = mapped_column(LargeBinary)


# --- aggregate queries (pps.services.aggregates) --------------------------------------------------------------


class ModelApproval(Base):
    """A bank's scoring model approved in the enclave against the published model policy.

    Holds no weight: digests, the features, the verdict's shares, the enclave's signature over the approval
    (``approval_json``, verified with ``signing_key``) and the model sealed to the enclave build (only it
    opens ``sealed_model``). ``encrypted_model_sha256`` names the CKKS model the enclave made for the bank:
    encrypted scoring runs that model and no other.
    """

    __tablename__ = "model_approvals"
    __table_args__ = (
        Index("ix_model_approvals_bank_org_id_created_at", "bank_org_id", "created_at"),
        Index("ix_model_approvals_encrypted_model_sha256", "encrypted_model_sha256"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    bank_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    model_digest: Mapped[str] = mapped_column(String(64))
    policy_digest: Mapped[str] = mapped_column(String(64))
    encrypted_model_sha256: Mapped[str | None] = mapped_column(String(64))
    context_id: Mapped[str | None] = mapped_column(String(64))
    approval_json: Mapped[str] = mapped_column(Text)
    signing_key: Mapped[str] = mapped_column(String(64))
    sealed_model: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class Disclosure(Base):
    """One model's output released to one bank about one subject: disclosure accounting across jobs and
    models (a subject's results reach a bank through at most a budget of distinct models per window)."""

    __tablename__ = "disclosures"
    __table_args__ = (Index("ix_disclosures_subject_uscc", "subject_uscc"),)

    bank_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    subject_uscc: Mapped[str] = mapped_column(String(18), primary_key=True)
    model_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    granularity: Mapped[str] = mapped_column(String(16))
    first_at: Mapped[datetime]
    last_at: Mapped[datetime]
    releases: Mapped[int]


class PrivacyBudget(Base):
    """A bank's differential-privacy budget, in micro-epsilon (integers: no float drift in the guard).

    Spending is one guarded ``UPDATE … SET spent = spent + e WHERE spent + e <= total``; the check constraint
    is the second line of defence.
    """

    __tablename__ = "privacy_budgets"
    __table_args__ = (
        CheckConstraint("spent_micro >= 0 AND spent_micro <= total_micro", name="spent_within_total"),
    )

    bank_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    total_micro: Mapped[int] = mapped_column(BigInteger)
    spent_micro: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]


class ReleasedCohort(Base):
    """A cohort (member set) whose statistics were released to a bank, kept to refuse differencing.

    ``members`` is the sorted array of the members' keyed 64-bit hashes (uint64 little-endian); ``digest`` is
    SHA-256 of those bytes (one row per distinct set and bank); ``size`` lets the check load only the sets
    whose size is within the minimum cohort size of a new one.
    """

    __tablename__ = "released_cohorts"
    __table_args__ = (
        UniqueConstraint("bank_org_id", "digest"),
        Index("ix_released_cohorts_bank_org_id_size", "bank_org_id", "size"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    bank_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    size: Mapped[int] = mapped_column(BigInteger)
    digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    members: Mapped[bytes] = mapped_column(LargeBinary)
    query_id: Mapped[str] = mapped_column(String(40))
    """the first query that released this set"""
    created_at: Mapped[datetime]


# --- objections and corrections (pps.governance.objections) -----------------------------------------------------


class ObjectionState(enum.StrEnum):
    open = "open"
    accepted = "accepted"
    rejected = "rejected"
    unverifiable = "unverifiable"
    """could not be verified: kept, annotated, the annotation travels with the record (征信业管理条例 Art. 25)"""


class Objection(Base):
    """A subject's dispute of fields of one of its records in a provider's dataset.

    What the subject wrote (the record key value and the reason) and the provider's note are sealed under the
    objection's own data key (``wrapped_dek``, wrapped by the KMS like a dataset version's): they may quote
    values. The disputed field *names* stay in the clear so that open disputes can be matched cheaply.
    """

    __tablename__ = "objections"
    __table_args__ = (
        Index("ix_objections_subject_uscc_state", "subject_uscc", "state"),
        Index("ix_objections_provider_org_id_state", "provider_org_id", "state"),
        Index("ix_objections_dataset_id_state", "dataset_id", "state"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subject_uscc: Mapped[str] = mapped_column(String(18))
    subject_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"))
    provider_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    filed_version: Mapped[int]
    """the dataset version the objection was filed against"""
    fields_json: Mapped[str] = mapped_column(Text)
    """sorted JSON list of the disputed (non-key) field names"""
    state: Mapped[ObjectionState] = mapped_column(
        SAEnum(ObjectionState, native_enum=False, length=16, validate_strings=True, create_constraint=False)
    )
    kek_version: Mapped[int]
    wrapped_dek: Mapped[bytes] = mapped_column(LargeBinary)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    """AES-256-GCM of canonical JSON ``{"record_key", "reason", "note"}`` under the objection's data key"""
    has_evidence: Mapped[bool]
    due_at: Mapped[datetime]
    created_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    corrected_version: Mapped[int | None]
    """the dataset version an acceptance produced"""
    corrected_fields_json: Mapped[str | None] = mapped_column(Text)
    """the disputed fields whose value the acceptance changed (names only, never values)"""


class ObjectionEvidence(Base):
    """A subject's evidence file (PDF, PNG or JPEG), sealed under its objection's data key."""

    __tablename__ = "objection_evidence"

    objection_id: Mapped[str] = mapped_column(ForeignKey("objections.id"), primary_key=True)
    media_type: Mapped[str] = mapped_column(String(32))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)


class CorrectionNotice(Base):
    """A bank was released a result (``ledger_index``: its ``policy.release`` entry) computed with a value that
    an accepted objection later corrected: which result, which subject, which fields — never the value."""

    __tablename__ = "correction_notices"
    __table_args__ = (
        UniqueConstraint("objection_id", "ledger_index"),
        Index("ix_correction_notices_bank_org_id_id", "bank_org_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    bank_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    objection_id: Mapped[str] = mapped_column(ForeignKey("objections.id"))
    subject_uscc: Mapped[str] = mapped_column(String(18))
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"))
    fields_json: Mapped[str] = mapped_column(Text)
    result_kind: Mapped[str] = mapped_column(String(32))
    result_id: Mapped[str] = mapped_column(String(64))
    operation: Mapped[str] = mapped_column(String(32))
    purpose: Mapped[str | None] = mapped_column(String(64))
    ledger_index: Mapped[int] = mapped_column(BigInteger)
    released_at: Mapped[datetime]
    old_version: Mapped[int]
    new_version: Mapped[int]
    created_at: Mapped[datetime]


# --- the model registry (pps.services.registry) and vertical training sessions (pps.services.vertical) -------------


class ModelState(enum.StrEnum):
    active = "active"
    retired = "retired"


class RegisteredModel(Base):
    """A trained model: who owns it, what it reads, how it was trained (counts and consent ids, never records),
    its held-out evaluation, and the ledger entries that made it. Its parameters are :class:`ModelArtifact` rows."""

    __tablename__ = "models"
    __table_args__ = (Index("ix_models_created_by_created_at", "created_by", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    created_by: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    owners_json: Mapped[str] = mapped_column(Text)
    """sorted JSON list of the organisations that own (and may list and use) the model"""
    purpose: Mapped[str | None] = mapped_column(String(64))
    features_json: Mapped[str] = mapped_column(Text)
    training_json: Mapped[str] = mapped_column(Text)
    evaluation_json: Mapped[str | None] = mapped_column(Text)
    evaluated_by: Mapped[str | None] = mapped_column(String(40))
    ledger_json: Mapped[str] = mapped_column(Text)
    """JSON list of the ledger indices of the training and the registration"""
    state: Mapped[ModelState] = mapped_column(
        SAEnum(ModelState, native_enum=False, length=16, validate_strings=True, create_constraint=False)
    )
    created_at: Mapped[datetime]


class ModelArtifact(Base):
    """A part of a model's parameters, sealed at rest under its own data key. ``holder`` is the organisation that
    may fetch it, or ``platform`` for a part that never leaves the safe-room (a vertical model's host half)."""

    __tablename__ = "model_artifacts"

    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), primary_key=True)
    holder: Mapped[str] = mapped_column(String(40), primary_key=True)
    kek_version: Mapped[int]
    wrapped_dek: Mapped[bytes] = mapped_column(LargeBinary)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[bytes] = mapped_column(LargeBinary(32))


class TrainingState(enum.StrEnum):
    training = "training"
    finished = "finished"
    failed = "failed"


class VerticalTraining(Base):
    """A vertical-LR session between a bank (guest), the safe-room (host) and the enclave's coordinator. The host's
    live state is in the serving process; this row is what survives it (a restart fails the session cleanly)."""

    __tablename__ = "vertical_trainings"
    __table_args__ = (Index("ix_vertical_trainings_bank_org_id_created_at", "bank_org_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    bank_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    name: Mapped[str] = mapped_column(String(128))
    purpose: Mapped[str] = mapped_column(String(64))
    features_json: Mapped[str] = mapped_column(Text)
    rows: Mapped[int]
    state: Mapped[TrainingState] = mapped_column(
        SAEnum(TrainingState, native_enum=False, length=16, validate_strings=True, create_constraint=False)
    )
    epochs_done: Mapped[int]
    enclave_handle: Mapped[str] = mapped_column(String(40))
    enclave_instance: Mapped[int]
    quote_hash: Mapped[str] = mapped_column(String(64))
    admission_index: Mapped[int] = mapped_column(BigInteger)
    model_id: Mapped[str | None] = mapped_column(String(40))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


# --- web sessions (api.web) --------------------------------------------------------------------------


class WebSession(Base):
    """A browser session of the role pages, opened by logging in with an API token.

    The cookie carries a random session id; only its SHA-256 is stored, and never the API token itself
    (``token_id`` names it, so revoking the token or disabling the organisation ends the session too).
    ``csrf_token`` is the synchronizer token every state-changing form must echo.
    """

    __tablename__ = "web_sessions"

    id_hash: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    token_id: Mapped[str] = mapped_column(ForeignKey("api_tokens.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


# --- horizontal federated training (pps.services.federated) ---------------------------------------------------


class FederationState(enum.StrEnum):
    inviting = "inviting"
    running = "running"
    done = "done"
    aborted = "aborted"


class RoundPhase(enum.StrEnum):
    advertise_keys = "advertise_keys"
    share_keys = "share_keys"
    masked_input = "masked_input"
    unmask = "unmask"
    done = "done"
    aborted = "aborted"


class Federation(Base):
    """A horizontal training of one model by several banks over their own portfolios (secure aggregation)."""

    __tablename__ = "federations"
    __table_args__ = (Index("ix_federations_initiator_org_id_id", "initiator_org_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    initiator_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))
    feature_schema_json: Mapped[str] = mapped_column(Text)
    config_json: Mapped[str] = mapped_column(Text)
    """canonical JSON of the training and secure-aggregation parameters (learning rate, clip norm, ...)"""
    n_params: Mapped[int]
    rounds: Mapped[int]
    threshold: Mapped[int]
    local_epochs: Mapped[int]
    state: Mapped[FederationState] = mapped_column(
        SAEnum(FederationState, native_enum=False, length=16, validate_strings=True, create_constraint=False)
    )
    current_round: Mapped[int]
    """0 while inviting; the round in progress (or the last one) afterwards"""
    model_id: Mapped[str | None] = mapped_column(String(64))
    """the registered model, once training is done"""
    abort_reason: Mapped[str | None] = mapped_column(Text)
    outcome_json: Mapped[str | None] = mapped_column(Text)
    """once done: rounds run, why training stopped (early stopping or the round limit), ``converged``"""
    created_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]


class FederationParticipant(Base):
    """A bank invited to a federation: its position (1..n) in secure aggregation and its acceptance."""

    __tablename__ = "federation_participants"
    __table_args__ = (
        UniqueConstraint("federation_id", "position"),
        Index("ix_federation_participants_bank_org_id", "bank_org_id"),
    )

    federation_id: Mapped[str] = mapped_column(ForeignKey("federations.id"), primary_key=True)
    bank_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    position: Mapped[int]
    purpose: Mapped[str | None] = mapped_column(String(64))
    accepted_at: Mapped[datetime | None]
    evaluation_json: Mapped[str | None] = mapped_column(Text)
    """metrics the bank computed on its own held-out data for the final model (never its data)"""


class FederationRound(Base):
    """One FedAvg round: its secure-aggregation phase, the global model it started from, its result."""

    __tablename__ = "federation_rounds"

    federation_id: Mapped[str] = mapped_column(ForeignKey("federations.id"), primary_key=True)
    round_no: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    phase: Mapped[RoundPhase] = mapped_column(
        SAEnum(RoundPhase, native_enum=False, length=16, validate_strings=True, create_constraint=False)
    )
    global_weights: Mapped[bytes] = mapped_column(LargeBinary)
    """float64 little-endian: the model every bank trains from in this round"""
    result_weights: Mapped[bytes | None] = mapped_column(LargeBinary)
    total_weight: Mapped[int | None] = mapped_column(BigInteger)
    survivors_json: Mapped[str | None] = mapped_column(Text)
    metrics_json: Mapped[str | None] = mapped_column(Text)
    """round 0: the joint feature statistics; a training round: the securely aggregated validation loss of
    the global model it started from"""
    abort_reason: Mapped[str | None] = mapped_column(Text)
    phase_deadline: Mapped[datetime]
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]


class FederationMessage(Base):
    """A bank's secure-aggregation message of one stage of one round, as received (validated) bytes."""

    __tablename__ = "federation_messages"
    __table_args__ = (
        ForeignKeyConstraint(
            ["federation_id", "round_no"], ["federation_rounds.federation_id", "federation_rounds.round_no"]
        ),
    )

    federation_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    round_no: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    stage: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    bank_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    ledger_index: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]


class SealedContext(Base):
    """A CKKS key pair (and a BFV one, for exact integer columns) the enclave generated for sealed datasets
    (``pps.services.sealed``): their public parts, and the secret keys sealed to the enclave's build (only that build on
    this platform opens ``sealed_secret`` and ``bfv_sealed_secret``)."""

    __tablename__ = "sealed_contexts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """the context id: hex SHA-256 of ``public_context``"""
    state: Mapped[str] = mapped_column(String(16))
    """``active`` (uploads accepted) or ``retired`` (rotated away: its datasets need re-upload)"""
    params_json: Mapped[str] = mapped_column(Text)
    public_context: Mapped[bytes] = mapped_column(LargeBinary)
    eval_context: Mapped[bytes] = mapped_column(LargeBinary)
    """public key, relinearisation and Galois keys: what the host computes with"""
    sealed_secret: Mapped[bytes] = mapped_column(LargeBinary)
    measurement: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    retired_at: Mapped[datetime | None]
    bfv_context_id: Mapped[str | None] = mapped_column(String(64))
    """the BFV pair made with it, for exact integer columns: hex SHA-256 of ``bfv_public_context``; bound with
    ``id`` into every context quote. ``None`` for a context made before BFV (rotate to get one)"""
    bfv_public_context: Mapped[bytes | None] = mapped_column(LargeBinary)
    bfv_eval_context: Mapped[bytes | None] = mapped_column(LargeBinary)
    """public key and Galois keys of the BFV pair"""
    bfv_sealed_secret: Mapped[bytes | None] = mapped_column(LargeBinary)


class SealedDataset(Base):
    """A provider's dataset held under homomorphic encryption: subject keys and C1 attributes in the clear,
    every other column as CKKS ciphertexts under ``context_id`` (column-major, one per column and block)."""

    __tablename__ = "sealed_datasets"

    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    context_id: Mapped[str] = mapped_column(ForeignKey("sealed_contexts.id"), index=True)
    state: Mapped[str] = mapped_column(String(16))
    """``ready`` or ``needs_reupload`` (its context was rotated away)"""
    n_subjects: Mapped[int]
    block_size: Mapped[int]
    subjects_json: Mapped[str] = mapped_column(Text)
    attributes_json: Mapped[str] = mapped_column(Text)
    columns_json: Mapped[str] = mapped_column(Text)
    """``{column: {"lower": ..., "upper": ...}}``: the clipping bounds the provider encrypted under"""
    uploaded_at: Mapped[datetime]


class SealedBlock(Base):
    """One ciphertext of a sealed dataset: one column for one block of subjects."""

    __tablename__ = "sealed_blocks"

    dataset_id: Mapped[str] = mapped_column(ForeignKey("sealed_datasets.dataset_id"), primary_key=True)
    column: Mapped[str] = mapped_column(String(64), primary_key=True)
    block: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)


# --- which process holds a long-lived session (pps.infra.recovery) ---------------------------------------------


class SessionHolder(Base):
    """The serving process that holds a long-lived session's live state (a vertical training's weights and
    enclave key), written in the transaction that creates the session. A restart's recovery fails the sessions
    whose holder is gone, and only those: several API workers may each hold their own."""

    __tablename__ = "session_holders"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    object_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    runner: Mapped[str] = mapped_column(String(200))
    """``host:pid:boot`` of the process (``boot`` is random per process start: a reused pid is not mistaken)"""
    created_at: Mapped[datetime]


# --- dishonesty records, credit repair and statements (pps.governance.records, .repair, .statements) ------------


class RecordExclusion(Base):
    """A dishonesty record (a row of the ``penalties`` source, by its record key) that no computation may use any
    more: repaired (an approved repair), its maximum publicity period over, or its 5-year retention over. Written
    once; the record stays in the provider's dataset, every use skips it."""

    __tablename__ = "record_exclusions"
    __table_args__ = (Index("ix_record_exclusions_subject_uscc", "subject_uscc"),)

    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    record_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    subject_uscc: Mapped[str] = mapped_column(String(18))
    reason: Mapped[str] = mapped_column(String(32))
    """``repaired``, ``expired`` (maximum publicity period) or ``retention_ended`` (5 years)"""
    repair_id: Mapped[str | None] = mapped_column(String(40))
    excluded_at: Mapped[datetime]


class RepairState(enum.StrEnum):
    pending = "pending"
    approved = "approved"
    denied = "denied"
    reconsidering = "reconsidering"
    """the subject objected to a denial; the authority decides again (once)"""


class RepairApplication(Base):
    """An enterprise's application to repair one of its dishonesty records (信用修复).

    The proofs are sealed under the application's own data key; the corroboration checks (``checks_json``: each
    check's name, source, result and detail — never a value of another party) and the decision are in the clear.
    """

    __tablename__ = "repair_applications"
    __table_args__ = (
        Index("ix_repair_applications_subject_uscc_state", "subject_uscc", "state"),
        Index("ix_repair_applications_authority_org_id_state", "authority_org_id", "state"),
        Index("ix_repair_applications_dataset_id_record_id", "dataset_id", "record_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subject_uscc: Mapped[str] = mapped_column(String(18))
    subject_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"))
    dataset_version: Mapped[int]
    record_id: Mapped[str] = mapped_column(String(200))
    authority_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    state: Mapped[RepairState] = mapped_column(
        SAEnum(RepairState, native_enum=False, length=16, validate_strings=True, create_constraint=False)
    )
    commitment_sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    checks_json: Mapped[str] = mapped_column(Text)
    kek_version: Mapped[int]
    wrapped_dek: Mapped[bytes] = mapped_column(LargeBinary)
    due_at: Mapped[datetime]
    created_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    reasons_json: Mapped[str | None] = mapped_column(Text)
    """the authority's denial reasons (a JSON list), or the note of an approval"""
    objection_text: Mapped[str | None] = mapped_column(Text)
    """the subject's objection to a denial"""


class RepairProof(Base):
    """A proof file of a repair application (a fine receipt, a tax clearance, a rectification report), sealed."""

    __tablename__ = "repair_proofs"

    application_id: Mapped[str] = mapped_column(ForeignKey("repair_applications.id"), primary_key=True)
    position: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(32))
    media_type: Mapped[str] = mapped_column(String(32))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)


class RepairNotice(Base):
    """A bank was released a result (``ledger_index``) computed with a dishonesty record later repaired: which
    result, which subject, which record — so the bank stops relying on it."""

    __tablename__ = "repair_notices"
    __table_args__ = (
        UniqueConstraint("application_id", "ledger_index"),
        Index("ix_repair_notices_bank_org_id_id", "bank_org_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    bank_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    application_id: Mapped[str] = mapped_column(ForeignKey("repair_applications.id"))
    subject_uscc: Mapped[str] = mapped_column(String(18))
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"))
    record_id: Mapped[str] = mapped_column(String(200))
    result_kind: Mapped[str] = mapped_column(String(32))
    result_id: Mapped[str] = mapped_column(String(64))
    operation: Mapped[str] = mapped_column(String(32))
    purpose: Mapped[str | None] = mapped_column(String(64))
    ledger_index: Mapped[int] = mapped_column(BigInteger)
    released_at: Mapped[datetime]
    created_at: Mapped[datetime]


class RecordStatement(Base):
    """The subject's own statement on a negative record (征信业管理条例 Art. 16), shown with it to banks."""

    __tablename__ = "record_statements"
    __table_args__ = (UniqueConstraint("subject_uscc", "dataset_id", "record_key"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subject_uscc: Mapped[str] = mapped_column(String(18))
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"))
    record_key: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    withdrawn_at: Mapped[datetime | None]


# --- natural persons: farm and herding households, individual-business owners (pps.identity.persons) ------


class Person(Base):
    """A natural person on the platform, keyed by the keyed pseudonym of the resident ID number (``code``,
    also the subject organisation's ``uscc``); the number itself is never stored, only its masked form."""

    __tablename__ = "persons"

    code: Mapped[str] = mapped_column(String(18), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), unique=True)
    kind: Mapped[str] = mapped_column(String(24))
    """``household`` (a farm or herding household) or ``individual_business`` (its owner)"""
    id_masked: Mapped[str] = mapped_column(String(18))
    """first 6 and last 4 characters of the resident ID number, for display to the person (emptied on erasure)"""
    created_at: Mapped[datetime]
    erased_at: Mapped[datetime | None]
    """when the person's data was erased at its request (PIPL Art. 47); uploads naming it are refused since"""


class PersonConsentTerms(Base):
    """The separate grants (单独同意) a person gave with a consent: to provide data to the bank (PIPL Art. 23),
    per sensitive field (Art. 28-29), and the acknowledged warning of adverse consequences for income, asset
    and tax fields (征信业管理条例 Art. 14), in writing for an agreed purpose (Art. 18)."""

    __tablename__ = "person_consent_terms"

    consent_id: Mapped[str] = mapped_column(ForeignKey("consents.id"), primary_key=True)
    subject_code: Mapped[str] = mapped_column(String(18), index=True)
    separate_grant_at: Mapped[datetime]
    sensitive_fields_json: Mapped[str] = mapped_column(Text)
    """``[{"dataset_id": ..., "fields": [...]}]``: each sensitive field granted separately"""
    warning_sha256: Mapped[str | None] = mapped_column(String(64))
    """hash of the Art. 14 warning text shown and acknowledged (null if no such field is covered)"""
    warning_text: Mapped[str | None] = mapped_column(Text)


class PersonNotice(Base):
    """A notice to a person: that negative information will be supplied (征信业管理条例 Art. 15), by whom."""

    __tablename__ = "person_notices"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subject_code: Mapped[str] = mapped_column(String(18), index=True)
    provider_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class FreeReport(Base):
    """A credit report a person read for free (two a calendar year, 征信业管理条例 Art. 17)."""

    __tablename__ = "free_reports"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subject_code: Mapped[str] = mapped_column(String(18), index=True)
    year: Mapped[int]
    issued_at: Mapped[datetime]


class ImpactAssessment(Base):
    """A personal-information protection impact assessment of one processing activity (PIPL Art. 55-56), kept
    at least three years and shown to the persons concerned."""

    __tablename__ = "impact_assessments"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(64), index=True)
    activity: Mapped[str] = mapped_column(String(500))
    assessment_json: Mapped[str] = mapped_column(Text)
    """purpose and means lawful, necessary; impact on rights and risks; protective measures (Art. 56)"""
    created_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime]
    retain_until: Mapped[datetime]


# --- subject keys, signed consent, enrolment, break-glass (pps.identity.keys, pps.identity.operator) ----------


class SubjectKey(Base):
    """A key a subject generated itself and enrolled after the real-name step; it signs the subject's consent.

    The platform holds only the public key. ``verification_ref`` names the real-name check of the legal
    representative that enrolment passed (the representative's id number is never stored, only its HMAC).
    """

    __tablename__ = "subject_keys"

    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    subject_uscc: Mapped[str] = mapped_column(String(18), index=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    public_key: Mapped[bytes] = mapped_column(LargeBinary(200))
    credential_id: Mapped[str | None] = mapped_column(String(400), unique=True)
    """a passkey's WebAuthn credential id (base64url); null for a local key"""
    label: Mapped[str] = mapped_column(String(100))
    verification_ref: Mapped[str] = mapped_column(String(80))
    representative_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    enrolled_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class ConsentSignature(Base):
    """A subject's signature over one consent action (grant, approve, revoke): the exact text and signature."""

    __tablename__ = "consent_signatures"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    consent_id: Mapped[str] = mapped_column(ForeignKey("consents.id"), index=True)
    action: Mapped[str] = mapped_column(String(16))
    key_id: Mapped[str] = mapped_column(ForeignKey("subject_keys.key_id"))
    text: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(Text)
    """base64: the raw signature, or for a passkey the JSON of its assertion (pps_wire.passkey)"""
    nonce: Mapped[str] = mapped_column(String(64), unique=True)
    signed_at: Mapped[datetime]
    recorded_at: Mapped[datetime]


class EnrolmentCode(Base):
    """A one-time code, delivered out of band, that gives an organisation its first credential."""

    __tablename__ = "enrolment_codes"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    code_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class BreakGlass(Base):
    """An emergency operator action on another organisation: proposed by one operator, done by a second."""

    __tablename__ = "break_glass"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    action: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(500))
    proposed_by: Mapped[str] = mapped_column(String(40))
    proposed_at: Mapped[datetime]
    approved_by: Mapped[str | None] = mapped_column(String(40))
    done_at: Mapped[datetime | None]


class DisclosureDocument(Base):
    """A credit report or an authorised query's result, as signed and released (issue 23).

    ``body`` is the signed note (the canonical JSON document and the service's signature); it holds only what
    the disclosure modes let out (public and masked values, summaries), and is erased once ``expires_at`` is
    past: the row then only says that it was released, when, to whom and its digest.
    """

    __tablename__ = "disclosure_documents"
    __table_args__ = (Index("ix_disclosure_documents_bank_org_id_created_at", "bank_org_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    """``report`` or ``query``"""
    subject_uscc: Mapped[str] = mapped_column(String(18), index=True)
    bank_org_id: Mapped[str | None] = mapped_column(String(40))
    """the requesting bank; None when the subject read its own report"""
    purpose: Mapped[str | None] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the canonical document"""
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    body: Mapped[str | None] = mapped_column(Text)
