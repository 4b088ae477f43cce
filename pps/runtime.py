"""The assembled safe-room: settings, database, ledger and services, built once per process.

The API app, the CLI and the tests all build one :class:`Runtime` from :class:`~pps.infra.settings.Settings`, so
that every entry point runs the same wiring.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from enclave_sim.model_check import ModelPolicy
from enclave_sim.platform import EnclaveConfig
from pps.data.datasets.ingest import UploadLimits
from pps.data.datasets.service import DatasetService
from pps.data.features import FeatureStore
from pps.governance.consent import ConsentService
from pps.governance.disclosure import DisclosureAccounting
from pps.governance.erasure import Erasure
from pps.governance.objections import ObjectionService
from pps.governance.persons import PersonRules
from pps.governance.policy import CONSENTS_TABLE, PolicyEngine
from pps.governance.repair import RepairService
from pps.governance.signatures import ConsentSignatures
from pps.governance.state import BUDGETS_TABLE
from pps.governance.statements import StatementService
from pps.identity.keys import SubjectKeyService
from pps.identity.persons import PersonRegistry, Pseudonymizer
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
from pps.ledger.reads import ReadLog
from pps.ledger.replay import Quarantine, Reconciler, StateReport
from pps.ledger.store import Ledger
from pps.services.aggregates import AggregateService
from pps.services.approval import GradedScoringService, ModelApprovalService
from pps.services.enclave import EnclaveService
from pps.services.explanation import ExplanationService
from pps.services.federated import FederatedService
from pps.services.household import HouseholdRatings
from pps.services.psi import PSIService
from pps.services.psi_cache import SetupCache
from pps.services.registry import ModelRegistry
from pps.services.reports import CreditReports
from pps.services.scoring import ScoringService
from pps.services.sealed import SealedService
from pps.services.vertical import VerticalTrainingService
from pps_wire.checkpoint import NoteSigner
from protocols.psi import PSIParams

log = logging.getLogger("pps.runtime")


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
    repairs: RepairService
    statements: StatementService
    executor: Executor
    models: ModelRegistry
    training: VerticalTrainingService
    federated: FederatedService
    sealed: SealedService
    approvals: ModelApprovalService
    graded: GradedScoringService
    disclosures: DisclosureAccounting
    reconciler: Reconciler
    quarantine: Quarantine
    reads: ReadLog
    persons: PersonRegistry
    person_rules: PersonRules
    household_ratings: HouseholdRatings
    reports: CreditReports
    explanations: ExplanationService
    erasure: Erasure

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
        pseudonyms = Pseudonymizer.from_key_dir(settings.resolved_key_dir)
        datasets = DatasetService(
            ledger,
            kms,
            limits=UploadLimits(
                rows=settings.upload_max_rows,
                columns=settings.upload_max_columns,
                expanded_bytes=settings.upload_max_expanded_bytes,
            ),
            pseudonymize=pseudonyms.code,
        )
        objections = ObjectionService(
            ledger,
            kms,
            datasets,
            response_days=settings.objection_response_days,
            evidence_max_bytes=settings.objection_evidence_max_bytes,
        )
        repairs = RepairService(
            ledger,
            kms,
            datasets,
            decision_days=settings.repair_decision_days,
            proof_max_bytes=settings.repair_proof_max_bytes,
        )
        statements = StatementService(ledger, datasets)
        models = ModelRegistry(ledger, kms)
        # before anything starts: a key the stored data needs that is missing or not itself stops us here
        if open_keys and migrate.is_up_to_date(db.engine):  # else /readyz says the schema needs upgrading
            keyring.open_keys(db, kms, (datasets, objections, repairs, models))
        receipt_key = load_or_create_ed25519(settings.resolved_key_dir / RECEIPT_SIGNING_KEY_FILE)
        quarantine = Quarantine()
        signatures = ConsentSignatures(quarantine)
        consents = ConsentService(ledger, NoteSigner(settings.receipt_issuer, receipt_key), signatures)
        identity.on_disable.append(consents.close_for_org)
        jobs = JobService(
            db,
            ledger,
            workers=settings.job_workers,
            result_ttl=timedelta(hours=settings.job_result_ttl_hours),
        )
        policy = PolicyEngine(ledger, quarantine, signatures)
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
        aggregates.quarantine = quarantine
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
        disclosures = DisclosureAccounting(settings.disclosure_budget_models, settings.disclosure_window_days)
        approvals = ModelApprovalService(
            db,
            ledger,
            enclave,
            features,
            ModelPolicy(
                min_material_features=settings.model_policy_min_material_features,
                max_share=settings.model_policy_max_share,
                max_step_ratio=settings.model_policy_max_step_ratio,
                window_days=settings.model_policy_window_days,
            ),
            policy,
            jobs,
            disclosures,
        )
        graded = GradedScoringService(approvals)
        scoring = ScoringService(
            db,
            policy,
            jobs,
            features,
            max_subjects=settings.scoring_max_subjects,
            jobs_per_hour=settings.scoring_jobs_per_hour,
            noise_std=settings.scoring_noise_std,
            executor=executor,
            approvals=None if settings.unsafe_unapproved_models else approvals,
            disclosures=disclosures,
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
            model_policy=None if settings.unsafe_unapproved_models else approvals.policy,
            disclosures=disclosures,
        )
        federated = FederatedService(db, ledger, registry=models, executor=executor, enclave=enclave)
        sealed = SealedService(
            db,
            ledger,
            policy,
            enclave,
            datasets,
            aggregates,
            model_policy=None if settings.unsafe_unapproved_models else approvals.policy,
            disclosures=disclosures,
        )
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
            approvals=approvals,
            graded=graded,
            disclosures=disclosures,
            aggregates=aggregates,
            enclave=enclave,
            objections=objections,
            repairs=repairs,
            statements=statements,
            executor=executor,
            models=models,
            training=training,
            federated=federated,
            sealed=sealed,
            reconciler=Reconciler(ledger),
            quarantine=quarantine,
            reads=ReadLog(ledger, db),
            persons=PersonRegistry(identity, pseudonyms),
            person_rules=PersonRules(ledger, consents),
            household_ratings=HouseholdRatings(policy, datasets),
            reports=CreditReports(ledger, policy, datasets, ttl=timedelta(hours=settings.report_ttl_hours)),
            explanations=ExplanationService(approvals),
            erasure=Erasure(ledger, consents, datasets),
        )

    @property
    def key_holders(self) -> tuple[keyring.KeyHolder, ...]:
        """The services whose tables hold data keys wrapped by the KEKs (rotation and retirement cover all)."""
        return (self.datasets, self.objections, self.repairs, self.models)

    def recover_long_lived(self) -> Recovered:
        """Fail the trainings whose serving process died, abort abandoned federations (start-up and periodic;
        :mod:`pps.infra.recovery`), and erase the credit reports and query results past their expiry."""
        recovered = recover_long_lived(
            self.db, self.ledger, stale_after=timedelta(hours=self.settings.federation_stale_hours)
        )
        with self.db.transaction() as session:
            self.reports.sweep(session)
        return recovered

    def check_state(self) -> StateReport:
        """Replay the ledger and compare consents, budgets, objections, credit repairs and record exclusions with
        their rows (start-up and periodic; :mod:`pps.ledger.replay`): the consents and budgets found divergent
        are refused from now on, until a later check finds them reconciled."""
        with self.db.transaction(write=False, snapshot=True) as session:
            report = self.reconciler.run(session)
        self.quarantine.update(report)
        if not report.ok:
            log.error(
                "governed state differs from the ledger (%d difference(s)); refusing %d consent(s) and %d "
                "budget(s): %s",
                len(report.divergences),
                len(report.divergent_ids(CONSENTS_TABLE)),
                len(report.divergent_ids(BUDGETS_TABLE)),
                "; ".join(d.describe() for d in report.divergences[:20]),
            )
        return report

    def state_status(self) -> str:
        """``ok``, or what the last state check found (run now if none ran yet): for ``/readyz``."""
        if self.reconciler.last is None:
            self.check_state()
        return self.quarantine.reason

    def close(self) -> None:
        try:  # the reads noted since the last flush, before the database goes
            self.reads.flush()
        except Exception:  # pragma: no cover - a database gone already: nothing more can be written
            log.exception("could not write the last noted reads")
        self.training.close()
        self.jobs.shutdown(wait=True)
        self.enclave.close()
        self.executor.close()
        self.db.dispose()
