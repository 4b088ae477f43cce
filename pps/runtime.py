"""The assembled safe-room: settings, database, ledger and services, built once per process.

The API app, the CLI and the tests all build one :class:`Runtime` from :class:`~pps.infra.settings.Settings`, so
that every entry point runs the same wiring.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from enclave_sim.platform import EnclaveConfig
from pps.data.datasets.ingest import UploadLimits
from pps.data.datasets.service import DatasetService
from pps.data.features import FeatureStore
from pps.governance.consent import ConsentService
from pps.governance.objections import ObjectionService
from pps.governance.policy import PolicyEngine
from pps.governance.signatures import ConsentSignatures
from pps.identity.keys import SubjectKeyService
from pps.identity.realname import SimulatedRealName
from pps.identity.service import IdentityService
from pps.infra import keyring
from pps.infra.executor import Executor, executor_from_settings
from pps.infra.jobs import JobService
from pps.infra.keys import LEDGER_SIGNING_KEY_FILE, RECEIPT_SIGNING_KEY_FILE, load_or_create_ed25519
from pps.infra.kms import LocalFileKMS
from pps.infra.recovery import Recovered, recover_long_lived
from pps.infra.settings import Settings
from pps.infra.storage import migrate
from pps.infra.storage.db import Database
from pps.ledger.store import Ledger
from pps.services.aggregates import AggregateService
from pps.services.enclave import EnclaveService
from pps.services.federated import FederatedService
from pps.services.psi import PSIService
from pps.services.psi_cache import SetupCache
from pps.services.registry import ModelRegistry
from pps.services.scoring import ScoringService
from pps.services.sealed import SealedService
from pps.services.vertical import VerticalTrainingService
from pps_wire.checkpoint import NoteSigner
from protocols.psi import PSIParams


@dataclass
class Runtime:
    settings: Settings
    db: Database
    ledger: Ledger
    identity: IdentityService
    keys: SubjectKeyService
    kms: LocalFileKMS
    datasets: DatasetService
    features: FeatureStore
    consents: ConsentService
    policy: PolicyEngine
    jobs: JobService
    psi: PSIService
    scoring: ScoringService
    aggregates: AggregateService
    enclave: EnclaveService
    objections: ObjectionService
    executor: Executor
    models: ModelRegistry
    training: VerticalTrainingService
    federated: FederatedService
    sealed: SealedService

    @classmethod
    def build(
        cls, settings: Settings, *, migrate_schema: bool | None = None, open_keys: bool = True
    ) -> Runtime:
        """Wire the services. ``open_keys=False`` skips the start-up key check, for ``pps keys status``,
        which reports what the check would refuse instead of refusing."""
        db = Database(settings.resolved_database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
        if settings.auto_migrate if migrate_schema is None else migrate_schema:
            migrate.upgrade(db.engine)
        key = load_or_create_ed25519(settings.resolved_key_dir / LEDGER_SIGNING_KEY_FILE)
        ledger = Ledger(NoteSigner(settings.ledger_origin, key), settings.ledger_origin)
        identity = IdentityService(ledger, settings.secret_key.get_secret_value().encode())
        subject_keys = SubjectKeyService(
            ledger,
            settings.secret_key.get_secret_value().encode(),
            SimulatedRealName(settings.secret_key.get_secret_value().encode()),
        )
        kms = LocalFileKMS(settings.resolved_key_dir)
        datasets = DatasetService(
            ledger,
            kms,
            limits=UploadLimits(
                rows=settings.upload_max_rows,
                columns=settings.upload_max_columns,
                expanded_bytes=settings.upload_max_expanded_bytes,
            ),
        )
        objections = ObjectionService(
            ledger,
            kms,
            datasets,
            response_days=settings.objection_response_days,
            evidence_max_bytes=settings.objection_evidence_max_bytes,
        )
        models = ModelRegistry(ledger, kms)
        # before anything starts: a key the stored data needs that is missing or not itself stops us here
        if open_keys and migrate.is_up_to_date(db.engine):  # else /readyz says the schema needs upgrading
            keyring.open_keys(db, kms, (datasets, objections, models))
        receipt_key = load_or_create_ed25519(settings.resolved_key_dir / RECEIPT_SIGNING_KEY_FILE)
        signatures = ConsentSignatures()
        consents = ConsentService(ledger, NoteSigner(settings.receipt_issuer, receipt_key), signatures)
        identity.on_disable.append(consents.close_for_org)
        jobs = JobService(
            db,
            ledger,
            workers=settings.job_workers,
            result_ttl=timedelta(hours=settings.job_result_ttl_hours),
        )
        policy = PolicyEngine(ledger, signatures)
        executor = executor_from_settings(settings)
        psi = PSIService(
            db,
            policy,
            jobs,
            # the in-process default keeps PSI's own process pool (PPS_PSI_WORKERS); a pool or Ray takes over
            SetupCache(executor=None if executor.in_process else executor),
            PSIParams(fpr=settings.psi_fpr, max_client_items=settings.psi_max_client_items),
            workers=settings.psi_workers,
        )
        features = FeatureStore(datasets)
        scoring = ScoringService(
            db,
            policy,
            jobs,
            features,
            max_subjects=settings.scoring_max_subjects,
            jobs_per_hour=settings.scoring_jobs_per_hour,
            noise_std=settings.scoring_noise_std,
            executor=executor,
        )
        aggregates = AggregateService(
            db,
            ledger,
            policy,
            datasets,
            secret_key=settings.secret_key.get_secret_value().encode(),
            min_cohort_size=settings.aggregate_min_cohort_size,
            max_epsilon=settings.aggregate_max_epsilon,
            default_budget=settings.aggregate_default_budget,
            cache_versions=settings.aggregate_cache_versions,
        )
        enclave = EnclaveService(
            db,
            ledger,
            policy,
            jobs,
            features,
            settings.resolved_key_dir,
            config=EnclaveConfig(debug=settings.enclave_unsafe_debug),
            call_timeout_s=settings.enclave_call_timeout_s,
        )
        training = VerticalTrainingService(
            db,
            ledger,
            policy,
            features,
            enclave,
            models,
            executor=executor,
            unsafe_small_keys=settings.unsafe_small_paillier_keys,
        )
        federated = FederatedService(db, ledger, registry=models, executor=executor)
        sealed = SealedService(db, ledger, policy, enclave, datasets, aggregates)
        return cls(
            settings=settings,
            db=db,
            ledger=ledger,
            identity=identity,
            keys=subject_keys,
            kms=kms,
            datasets=datasets,
            features=features,
            consents=consents,
            policy=policy,
            jobs=jobs,
            psi=psi,
            scoring=scoring,
            aggregates=aggregates,
            enclave=enclave,
            objections=objections,
            executor=executor,
            models=models,
            training=training,
            federated=federated,
            sealed=sealed,
        )

    @property
    def key_holders(self) -> tuple[keyring.KeyHolder, ...]:
        """The services whose tables hold data keys wrapped by the KEKs (rotation and retirement cover all)."""
        return (self.datasets, self.objections, self.models)

    def recover_long_lived(self) -> Recovered:
        """Fail the trainings whose serving process died, abort abandoned federations (start-up and periodic;
        :mod:`pps.infra.recovery`)."""
        return recover_long_lived(
            self.db, self.ledger, stale_after=timedelta(hours=self.settings.federation_stale_hours)
        )

    def close(self) -> None:
        self.training.close()
        self.jobs.shutdown(wait=True)
        self.enclave.close()
        self.executor.close()
        self.db.dispose()
