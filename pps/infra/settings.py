"""All settings of PPS, in one place.

Every setting can be given as an environment variable with the ``PPS_`` prefix (``PPS_DATABASE_URL``,
``PPS_SECRET_KEY``, ...) or in a ``.env`` file in the working directory. Secrets are ``SecretStr`` so that
they never show in a repr or a log line. A placeholder secret is refused outside development mode.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pps.errors import ConfigurationError

PLACEHOLDER_SECRET = "dev-insecure-secret-change-me"  # noqa: S105 - it is the placeholder that is refused
MIN_SECRET_LENGTH = 32


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PPS_", env_file=".env", extra="ignore")

    environment: Literal["development", "test", "production"] = Field(
        "development", description="development allows placeholder secrets; production refuses them"
    )
    data_dir: Path = Field(Path(".pps"), description="where the embedded database and key files live")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL; default sqlite:///<data_dir>/pps.db. "
        "PostgreSQL: postgresql+psycopg://user@host:5432/db",
    )
    key_dir: Path | None = Field(
        None, description="key material (ledger signing key); default <data_dir>/keys"
    )
    secret_key: SecretStr = Field(
        SecretStr(PLACEHOLDER_SECRET),
        description="server secret: keys the HMAC under which API tokens are stored",
    )
    executor: Literal["local", "ray"] = Field("local", description="where heavy jobs run")
    # execution backends (pps.infra.executor)
    executor_workers: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="workers of the executor: local: 1 = in this process (default), more = a process pool; "
        "ray: actors per job (default: the cluster's CPUs)",
    )
    executor_max_retries: int = Field(
        2, ge=0, le=10, description="times a chunk whose worker died is run again before its job fails"
    )
    ray_address: str | None = Field(
        None,
        pattern=r"^(auto|ray://[A-Za-z0-9.\-]+:[0-9]{1,5}|[A-Za-z0-9.\-]+:[0-9]{1,5})$",
        description="PPS_EXECUTOR=ray: 'auto' joins this node's cluster, 'ray://head:10001' connects as a "
        "client; unset starts a local Ray instance (one machine)",
    )
    ledger_origin: str = Field(
        "pps.local/ledger", description="origin line of the signed checkpoints (names this log)"
    )
    receipt_issuer: str = Field(
        "pps.local/consent", description="key name that signs consent receipts (no spaces or '+')"
    )
    checkpoint_interval_seconds: float = Field(
        300.0, ge=0, description="publish a checkpoint this often while serving if the log grew; 0 = never"
    )
    max_body_bytes: int = Field(1 << 20, ge=1024, description="largest request body accepted (413 above)")
    max_upload_bytes: int = Field(
        1 << 30, ge=1024, description="largest dataset upload accepted (the file is held in memory once)"
    )
    upload_max_rows: int = Field(
        2_000_000,
        ge=1,
        description="most data rows a dataset upload may hold (Parquet: refused by its footer, before reading)",
    )
    upload_max_columns: int = Field(256, ge=1, description="most columns a dataset upload may have")
    upload_max_expanded_bytes: int = Field(
        1 << 30,
        ge=1024,
        description="most uncompressed bytes a Parquet upload's footer may declare (refused before reading)",
    )
    recovery_interval_seconds: float = Field(
        60.0,
        ge=0,
        description="how often a serving process fails the trainings of dead workers and aborts abandoned "
        "federations (also once at start); 0 = only at start",
    )
    read_flush_seconds: float = Field(
        5.0,
        ge=0,
        description="how often the hot reads noted in memory (overseers paging through consents, objections, "
        "lineage and the ledger) are written to the ledger as read.batch entries; also when 1000 wait and at "
        "shutdown; 0 = only then",
    )
    state_check_interval_seconds: float = Field(
        300.0,
        ge=0,
        description="how often a serving process replays the ledger and compares consents, budgets and "
        "objections with their rows (also once at start); a divergent consent or budget is refused until "
        "reconciled; 0 = only at start",
    )
    federation_stale_hours: float = Field(
        24.0,
        gt=0,
        description="a federation still inviting this long, or this long past a phase deadline nobody closed, "
        "is aborted",
    )
    page_size_default: int = Field(50, ge=1)
    page_size_max: int = Field(500, ge=1, le=1000)
    token_ttl_days: int = Field(90, ge=1, le=3650, description="default lifetime of an issued API token")
    job_workers: int = Field(2, ge=1, le=64, description="threads that run jobs in this process")
    job_result_ttl_hours: float = Field(168.0, gt=0, description="how long a job's result is kept")
    psi_workers: int | None = Field(
        None, ge=1, le=64, description="processes that prepare a PSI setup in parallel (default: the cores)"
    )
    psi_fpr: float = Field(1e-6, gt=0, lt=0.01, description="false-positive bound of a PSI answer")
    psi_max_client_items: int = Field(100_000, ge=1, le=1_000_000, description="largest customer list")
    scoring_max_subjects: int = Field(
        1_000_000, ge=1, le=10_000_000, description="most subjects one scoring job may name"
    )
    scoring_jobs_per_hour: int = Field(60, ge=1, description="scoring jobs a bank may submit per hour")
    scoring_noise_std: float = Field(
        2.0**-16, ge=0, le=1.0, description="std of the noise added to every released score (score units)"
    )
    max_scoring_body_bytes: int = Field(
        256 << 20,
        ge=1 << 20,
        description="largest scoring request (public context + encrypted model, base64)",
    )
    # the credit report and authorised queries (pps.services.reports)
    report_ttl_hours: int = Field(
        24, ge=1, le=24 * 31, description="how long a released report or query result is valid and kept"
    )
    # model approval, output granularity and disclosure accounting (pps.services.approval)
    unsafe_unapproved_models: bool = Field(
        False,
        description="UNSAFE: let encrypted scoring run a model the enclave has not approved (a crafted model "
        "reads features back); tests of the HE mechanics and legacy flows only",
    )
    model_policy_min_material_features: int = Field(
        3, ge=1, le=64, description="features that must each carry >= 1 % of a model's score variance"
    )
    model_policy_max_share: float = Field(
        0.6, gt=0, le=1, description="largest share of a model's score variance one feature may carry"
    )
    model_policy_max_step_ratio: float = Field(
        2.5, gt=0, description="largest score move of one resolution step relative to the rest's spread"
    )
    model_policy_window_days: int = Field(
        90, ge=1, le=3660, description="a bank's approved models in this window are checked together"
    )
    disclosure_budget_models: int = Field(
        3,
        ge=1,
        le=1000,
        description="distinct models whose results may reach a bank about one subject per window",
    )
    disclosure_window_days: int = Field(90, ge=1, le=3660, description="the disclosure accounting window")
    # aggregate queries (pps.services.aggregates)
    aggregate_min_cohort_size: int = Field(
        10,
        ge=1,
        le=100_000,
        description="smallest cohort an aggregate answer shows; smaller ones are suppressed",
    )
    aggregate_max_epsilon: float = Field(
        1.0, gt=0, le=10, description="largest epsilon one aggregate query may spend"
    )
    aggregate_default_budget: float = Field(
        1.0, ge=0, le=1_000_000, description="total epsilon of a bank until an operator sets its budget"
    )
    aggregate_cache_versions: int = Field(
        8, ge=1, le=256, description="decrypted dataset versions kept in memory for aggregate queries"
    )
    # the simulated enclave (pps.services.enclave)
    enclave_unsafe_debug: bool = Field(
        False, description="UNSAFE: run the enclave in debug mode; verifiers refuse its quotes (tests only)"
    )
    unsafe_small_paillier_keys: bool = Field(
        False,
        description="UNSAFE: let a vertical training's coordinator use a Paillier key under 2048 bits "
        "(fast tests and notebooks only)",
    )
    enclave_call_timeout_s: float = Field(
        1800.0,
        gt=0,
        description="longest an enclave operation (a training job) may take before it is stopped",
    )
    # objections and corrections (pps.governance.objections)
    objection_response_days: int = Field(
        15,
        ge=1,
        le=20,
        description="days a provider has to answer an objection: at most 20 (征信业管理条例 Art. 25)",
    )
    # credit repair (pps.governance.repair)
    repair_decision_days: int = Field(
        5,
        ge=1,
        le=20,
        description="working days the designated authority has to decide a credit-repair application",
    )
    repair_proof_max_bytes: int = Field(
        2 << 20,
        ge=1024,
        le=64 << 20,
        description="largest proof file (PDF, PNG, JPEG) of a repair application",
    )
    objection_evidence_max_bytes: int = Field(
        2 << 20, ge=1024, le=64 << 20, description="largest evidence file (PDF, PNG, JPEG) of an objection"
    )
    auto_migrate: bool = Field(True, description="apply Alembic migrations when the service starts")
    sqlite_busy_timeout_ms: int = Field(30_000, ge=0)

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Settings:
        if self.environment != "development":
            secret = self.secret_key.get_secret_value()
            if secret == PLACEHOLDER_SECRET or len(secret) < MIN_SECRET_LENGTH:
                raise ConfigurationError(
                    f"PPS_SECRET_KEY must be set to a random value of at least {MIN_SECRET_LENGTH} characters "
                    f"when PPS_ENVIRONMENT={self.environment} (generate one with: "
                    "python -c 'import secrets; print(secrets.token_urlsafe(48))')"
                )
        if self.page_size_default > self.page_size_max:
            raise ConfigurationError("PPS_PAGE_SIZE_DEFAULT must not exceed PPS_PAGE_SIZE_MAX")
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'pps.db').as_posix()}"

    @property
    def resolved_key_dir(self) -> Path:
        return self.key_dir if self.key_dir is not None else self.data_dir / "keys"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once from the environment)."""
    return Settings()
