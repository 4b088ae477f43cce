"""Model approval: a bank's scoring model is checked in the enclave against the published model policy
before any encrypted evaluation may run it; graded scoring runs an approved model inside the enclave.

The flow (``docs/protocols.md``, "Model approval"; who learns what: :class:`enclave_sim.jobs.ModelApprovalJob`):

1. the operator publishes the model policy (:class:`enclave_sim.model_check.ModelPolicy`, from the settings);
   its first use under a new digest is a ledger entry ``model.policy`` with every field
   (``GET /v1/scoring/model-policy``);
2. the bank verifies a quote (``GET /v1/enclave/quote``) and provisions its model's *plaintext* parameters
   and its public CKKS context to job ``model_approval`` (``POST /v1/scoring/approvals``); the service hands
   the ciphertext to the enclave, supplies the platform's feature distribution (every enterprise's features at
   their published resolution), the policy, and the bank's models approved in the policy's window (sealed:
   only the enclave opens them);
3. inside, the enclave checks the model; a refusal is ``403 model_refused`` naming every rule broken and a
   ``model.refuse`` entry; nothing is released. An approval comes back signed by the enclave's signing key
   (derived from its seal key, announced in ``hello`` and in the ``model.approve`` entry) with the model
   encrypted *by the enclave* under the bank's public context: the service stores the approval (digests,
   features, shares; no weight) and the sealed model;
4. encrypted scoring (:mod:`pps.services.scoring`) runs a model only if its bytes are the ones the enclave
   made for this bank (``encrypted_model_sha256``), under an approval whose signature verifies: a model the
   bank encrypted itself, or altered, is refused at the door (``model_not_approved``) before any data is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from enclave_sim import errors as ee
from enclave_sim.core import signed_bytes
from enclave_sim.jobs import GradedScoreJob, ModelApprovalJob
from enclave_sim.model_check import ModelPolicy
from models.features import FEATURE_RESOLUTION, FEATURES
from models.households import HOUSEHOLD_FEATURE_RESOLUTION, HOUSEHOLD_FEATURES
from pps.data.features import FeatureStore, admit_on_features
from pps.errors import EnclaveUnavailable, InvalidInput, ModelNotApproved, ModelRefused, ProvisioningFailed
from pps.governance.consent import check_purpose
from pps.governance.disclosure import DisclosureAccounting, granularity_of
from pps.governance.policy import PolicyEngine, Request
from pps.governance.release import Gate
from pps.identity.persons import is_person_code
from pps.identity.uscc import validate_uscc
from pps.infra.jobs import JobContext, JobOutcome, JobService
from pps.infra.storage.db import Database
from pps.infra.storage.tables import Job, ModelApproval, new_id, utcnow
from pps.ledger.entry import Actor, EntryDraft, ObjectRef, Release
from pps.ledger.store import Ledger
from pps.services.enclave import EnclaveService
from pps_wire.provision import table_bytes

APPROVAL_RELEASE = ("approval", "encrypted_model", "sealed_model")
GRADED_KIND = "score.graded"
GRADED_MEDIA_TYPE = "application/vnd.pps.enclave-release+json"
SERVICE = Actor(None, "service", "job")
MAX_GRADED_SUBJECTS = 100_000
MAX_SAMPLE = 5_000
"""Subjects of each population the policy's shares are computed on (a fixed-seed sample when the platform has
more: every feature goes to the enclave, since the host does not know which the model reads)."""
RESOLUTION: dict[str, float] = {**FEATURE_RESOLUTION, **HOUSEHOLD_FEATURE_RESOLUTION}
"""The published resolution of every feature a model may read."""
POPULATIONS: dict[str, tuple[str, ...]] = {
    "enterprise": tuple(FEATURES),
    "household": tuple(HOUSEHOLD_FEATURES),
}
"""Which features describe which kind of subject: a model reads one kind's (households are persons, keyed by
person codes, :mod:`pps.identity.persons`)."""


def approval_public(row: ModelApproval) -> dict[str, Any]:
    doc = json.loads(row.approval_json)
    return {
        "id": row.id,
        "bank_org_id": row.bank_org_id,
        "model_digest": row.model_digest,
        "policy_digest": row.policy_digest,
        "encrypted_model_sha256": row.encrypted_model_sha256,
        "context_id": row.context_id,
        "features": doc["features"],
        "kind": doc.get("kind", "logistic"),
        "release_error": doc.get("release_error", 0.0),
        "verdict": doc["verdict"],
        "signature": doc["signature"],
        "signing_key": row.signing_key,
        "created_at": row.created_at,
    }


@dataclass
class ModelApprovalService:
    db: Database
    ledger: Ledger
    enclave: EnclaveService
    features: FeatureStore
    policy: ModelPolicy
    engine: PolicyEngine
    jobs: JobService
    disclosures: DisclosureAccounting

    # --- the published policy ---------------------------------------------------------------------------

    def published(self) -> dict[str, Any]:
        return {
            "policy": self.policy.as_dict(),
            "digest": self.policy.digest(),
            "resolution": dict(RESOLUTION),
            "populations": {k: list(v) for k, v in POPULATIONS.items()},
        }

    def record_policy(self, session: Session) -> None:
        """The policy's first use under its digest is a ``model.policy`` ledger entry."""
        digest = self.policy.digest()
        known = session.scalar(select(ModelApproval.id).where(ModelApproval.policy_digest == digest).limit(1))
        if known is not None or digest in self._recorded:
            return
        self.ledger.append(
            session,
            EntryDraft(
                action="model.policy",
                actor=Actor(None, "service", "operator"),
                objects=(ObjectRef("model_policy", digest),),
                detail={"digest": digest, **{k: repr(v) for k, v in self.policy.as_dict().items()}},
            ),
        )
        self._recorded.add(digest)

    def __post_init__(self) -> None:
        self._recorded: set[str] = set()

    # --- approval -------------------------------------------------------------------------------------

    def _sample(self) -> bytes:
        """Up to :data:`MAX_SAMPLE` subjects of each population (enterprises, households), every feature, keyed
        ``"<population>:<n>"``: the distribution, not whose it is. The enclave checks a model on the population
        whose features it reads (a household's enterprise features are 0, and the other way round)."""
        with self.db.transaction(write=False) as session:
            table = self.features.table(session)
        person = np.fromiter((is_person_code(u) for u in table.usccs), dtype=bool, count=len(table.usccs))
        keys: list[str] = []
        picked: list[npt.NDArray[np.int64]] = []
        for pop, mask in (("enterprise", ~person), ("household", person)):
            rows = np.flatnonzero(mask)
            if len(rows) > MAX_SAMPLE:
                rows = np.sort(np.random.default_rng(0).choice(rows, size=MAX_SAMPLE, replace=False))
            keys.extend(f"{pop}:{i}" for i in range(len(rows)))
            picked.append(rows)
        rows = np.concatenate(picked) if picked else np.empty(0, dtype=np.int64)
        cols = {}
        for name in sorted(table.values):
            v = table.values[name][rows]
            cols[name] = [None if not np.isfinite(x) else float(x) for x in v]
        return table_bytes(keys, cols)

    def _prior(self, session: Session, bank: str) -> list[str]:
        since = utcnow() - timedelta(days=self.policy.window_days)
        return list(
            session.scalars(
                select(ModelApproval.sealed_model).where(
                    ModelApproval.bank_org_id == bank,
                    ModelApproval.created_at > since,
                    ModelApproval.policy_digest == self.policy.digest(),
                )
            )
        )

    def approve(
        self, *, bank: str, quote_hash: bytes, ciphertext: bytes, actor: Actor, request_id: str | None = None
    ) -> tuple[ModelApproval, bytes | None]:
        """Check the bank's provisioned model in the enclave; ``(approval, encrypted model bytes)``.

        Raises :class:`ModelRefused` (after recording the refusal) naming every rule the model breaks."""
        host = self.enclave.host()
        handle = new_id("apv")
        kind = ModelApprovalJob.kind
        receipt = host.provision(handle, job=kind, slot="bank", quote_hash=quote_hash, ciphertext=ciphertext)
        declared = {"release": sorted(APPROVAL_RELEASE), "recipient_key": None}
        if receipt.get("output") != declared:
            self.enclave.drop(handle)
            raise ProvisioningFailed(
                f"a model approval releases exactly {', '.join(sorted(APPROVAL_RELEASE))}, in the clear "
                "(no recipient key): provision it with that output policy"
            )
        try:
            with self.db.transaction(write=False) as session:
                prior = self._prior(session, bank)
            host.supply(handle, job=kind, slot="platform", data=self._sample())
            host.supply(
                handle,
                job=kind,
                slot="policy",
                data=json.dumps(
                    {
                        "policy": self.policy.as_dict(),
                        "resolution": RESOLUTION,
                        "populations": {k: list(v) for k, v in POPULATIONS.items()},
                    }
                ).encode(),
            )
            host.supply(handle, job=kind, slot="prior", data=json.dumps(prior).encode())
            _release, plain = host.run(handle, params={}, output=declared)
        except ee.ModelRefused as exc:
            with self.db.transaction() as session:
                self.record_policy(session)
                self.ledger.append(
                    session,
                    EntryDraft(
                        action="model.refuse",
                        actor=actor,
                        objects=(ObjectRef("org", bank), ObjectRef("model_policy", self.policy.digest())),
                        request_id=request_id,
                        detail={
                            "policy_digest": self.policy.digest(),
                            "reason": exc.message,
                            "model_sha256": str(receipt.get("sha256", "")),
                            "measurement": host.hello["measurement"],
                        },
                    ),
                )
            raise ModelRefused(exc.message) from None
        except BaseException:
            self.enclave.drop(handle)
            raise
        approval = plain["approval"]
        signing_key = str(host.hello["signing_key"])
        verify_approval(approval, signing_key)
        encrypted = plain.get("encrypted_model")
        row = ModelApproval(
            id=new_id("mdl"),
            bank_org_id=bank,
            model_digest=approval["model_digest"],
            policy_digest=approval["policy_digest"],
            encrypted_model_sha256=approval["encrypted_model_sha256"],
            context_id=approval["context_id"],
            approval_json=json.dumps(approval, sort_keys=True),
            signing_key=signing_key,
            sealed_model=plain["sealed_model"],
            created_at=utcnow(),
        )
        with self.db.transaction() as session:
            self.record_policy(session)
            session.add(row)
            session.flush()
            self.ledger.append(
                session,
                EntryDraft(
                    action="model.approve",
                    actor=actor,
                    objects=(ObjectRef("model_approval", row.id), ObjectRef("org", bank)),
                    request_id=request_id,
                    detail={
                        "model_digest": row.model_digest,
                        "policy_digest": row.policy_digest,
                        "encrypted_model_sha256": row.encrypted_model_sha256 or "",
                        "features": list(approval["features"]),
                        "shares": {k: repr(v) for k, v in approval["verdict"]["shares"].items()},
                        "signing_key": signing_key,
                        "signature": approval["signature"],
                        "measurement": host.hello["measurement"],
                    },
                ),
            )
            session.expunge(row)
        import base64

        return row, base64.b64decode(encrypted) if encrypted else None

    # --- what scoring asks ------------------------------------------------------------------------------

    def require(
        self, session: Session, *, bank: str, encrypted_model_sha256: str, context_id: str
    ) -> ModelApproval:
        """The approval under which ``bank`` may run the encrypted model with this digest, or
        :class:`ModelNotApproved` naming why not."""
        row = session.scalar(
            select(ModelApproval)
            .where(
                ModelApproval.bank_org_id == bank,
                ModelApproval.encrypted_model_sha256 == encrypted_model_sha256,
            )
            .order_by(ModelApproval.created_at.desc())
            .limit(1)
        )
        if row is None:
            raise ModelNotApproved(
                "this encrypted model was not made by the enclave for this bank: have the model approved "
                "(POST /v1/scoring/approvals with its plaintext parameters, under a quote you verified) and "
                "submit the encrypted model that approval returns, unaltered"
            )
        if row.context_id != context_id:
            raise ModelNotApproved("the approved model was encrypted under another context than the one sent")
        if row.policy_digest != self.policy.digest():
            raise ModelNotApproved(
                "the model was approved under a model policy that is no longer published: approve it again"
            )
        verify_approval(json.loads(row.approval_json), row.signing_key)
        return row

    def approved(self, session: Session, *, bank: str, approval_id: str) -> ModelApproval:
        row = session.get(ModelApproval, approval_id)
        if row is None or row.bank_org_id != bank:
            raise ModelNotApproved(f"no model approval {approval_id} for this bank")
        if row.policy_digest != self.policy.digest():
            raise ModelNotApproved(
                "the model was approved under a model policy that is no longer published: approve it again"
            )
        verify_approval(json.loads(row.approval_json), row.signing_key)
        return row


def verify_approval(approval: dict[str, Any], signing_key_hex: str) -> None:
    """Raise :class:`ModelNotApproved` unless ``approval`` carries the enclave's signature."""
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(signing_key_hex))
        key.verify(
            bytes.fromhex(str(approval.get("signature", ""))),
            signed_bytes(ModelApprovalJob.kind, "approval", approval),
        )
    except (InvalidSignature, ValueError):
        raise ModelNotApproved(
            "the approval does not carry the enclave's signature; it was altered"
        ) from None


# --- graded scoring: an approved model, inside the enclave, at each subject's granularity -----------------


@dataclass(frozen=True)
class GradedRequest:
    approval: ModelApproval
    purpose: str
    subjects: tuple[str, ...] | None
    fields: dict[str, tuple[str, ...]]
    recipient_key: str


@dataclass
class GradedScoringService:
    """Scoring with an approved model inside the enclave (:class:`enclave_sim.jobs.GradedScoreJob`), each
    subject released at the granularity its consent allows, counted against its disclosure budget."""

    a: ModelApprovalService

    def __post_init__(self) -> None:
        self.a.jobs.register(GRADED_KIND, self._run)

    def check(
        self,
        *,
        bank: str,
        approval_id: str,
        purpose: str,
        subjects: list[str] | None,
        recipient_key: str,
    ) -> GradedRequest:
        check_purpose(purpose)
        if subjects is not None:
            if not subjects or len(subjects) > MAX_GRADED_SUBJECTS:
                raise InvalidInput(
                    f"name 1 to {MAX_GRADED_SUBJECTS:,} subjects, or ask for every consented one"
                )
            for s_ in subjects:
                validate_uscc(s_)
            if len(set(subjects)) != len(subjects):
                raise InvalidInput("a job names each subject once")
        with self.a.db.transaction(write=False) as session:
            row = self.a.approved(session, bank=bank, approval_id=approval_id)
            if json.loads(row.approval_json).get("kind", "logistic") != "logistic":
                raise InvalidInput(
                    "graded scoring takes a logistic model (a PD to grade or decide on); an approved scorecard "
                    "releases points through encrypted scoring (POST /v1/scoring), to subjects who allowed scores"
                )
            names = json.loads(row.approval_json)["features"]
            fields = self.a.features.fields_for(session, names)
            session.expunge(row)
        return GradedRequest(
            row, purpose, tuple(subjects) if subjects is not None else None, fields, recipient_key
        )

    def submit(
        self,
        session: Session,
        request: GradedRequest,
        *,
        quote_hash: bytes,
        ciphertext: bytes,
        actor: Actor,
        request_id: str | None = None,
    ) -> Job:
        """Provision the bank's request (its model digest and output policy) and store the job."""
        host = self.a.enclave.host()
        handle = new_id("grd")
        receipt = host.provision(
            handle, job=GradedScoreJob.kind, slot="bank", quote_hash=quote_hash, ciphertext=ciphertext
        )
        declared = {"release": ["scores", "summary"], "recipient_key": request.recipient_key}
        if receipt.get("output") != declared:
            self.a.enclave.drop(handle)
            raise ProvisioningFailed(
                "graded scoring releases scores (encrypted to the recipient key the request names) and the summary: "
                "provision it with that output policy"
            )
        row = request.approval
        return self.a.jobs.submit(
            session,
            kind=GRADED_KIND,
            actor=actor,
            purpose=request.purpose,
            params={
                "handle": handle,
                "instance": host.starts,
                "approval_id": row.id,
                "model_digest": row.model_digest,
                "features": json.loads(row.approval_json)["features"],
                "fields": {k: list(v) for k, v in request.fields.items()},
                "recipient_key": request.recipient_key,
                "quote_hash": quote_hash.hex(),
                "subjects": "all_consented" if request.subjects is None else len(request.subjects),
            },
            input_blob=json.dumps({"subjects": request.subjects}).encode(),
            input_media_type="application/json",
            request_id=request_id,
        )

    def _run(self, ctx: JobContext) -> JobOutcome:
        if ctx.purpose is None or ctx.input is None:
            raise InvalidInput("a graded scoring job needs a purpose and its request")
        bank, purpose, params = ctx.owner_org_id, ctx.purpose, ctx.params
        handle = str(params["handle"])
        host = self.a.enclave.host()
        if host.starts != int(params["instance"]):
            raise EnclaveUnavailable(
                "the enclave restarted since the request was provisioned; nothing was released — submit it again"
            )
        names = list(params["features"])
        digest = str(params["model_digest"])
        job_ref = ObjectRef("job", ctx.job_id)
        try:
            with self.a.db.transaction(write=False) as session:
                row = self.a.approved(session, bank=bank, approval_id=str(params["approval_id"]))
                sealed = row.sealed_model
            admission = admit_on_features(
                self.a.db,
                self.a.features,
                self.a.engine,
                bank=bank,
                purpose=purpose,
                operation="score",
                names=names,
                submitted_fields=params["fields"],
                subjects=json.loads(ctx.input)["subjects"],
                job=job_ref,
                actor=SERVICE,
            )
            usable = admission.usable()
            with self.a.db.transaction(write=False) as session:
                levels = granularity_of(
                    session, {s_: usable.allowed[s_].consent_id for s_ in usable.subjects}
                )
            matrix = admission.table.matrix(names, usable.rows)
            cols = {
                n: [None if not np.isfinite(x) else float(x) for x in matrix[:, j]]
                for j, n in enumerate(names)
            }
            kind = GradedScoreJob.kind
            host.supply(handle, job=kind, slot="model", data=json.dumps([sealed]).encode())
            host.supply(handle, job=kind, slot="platform", data=table_bytes(usable.subjects, cols))
            host.supply(handle, job=kind, slot="granularity", data=json.dumps(levels).encode())
            output = {"release": ["scores", "summary"], "recipient_key": params["recipient_key"]}
            release, plain = host.run(handle, params={}, output=output)
        except BaseException:
            self.a.enclave.drop(handle)
            raise
        found = usable.subjects
        what = f"score.graded:{digest[:16]}"

        def finalize(session: Session) -> dict[str, Any]:
            if found:
                accounted = self.a.disclosures.spend(
                    session, bank=bank, subjects=found, model_digest=digest, granularity=levels
                )
                if accounted.refused:
                    from pps.errors import Conflict

                    raise Conflict(
                        f"{len(accounted.refused)} subject(s) reached their disclosure budget for this bank "
                        "(distinct models per window): nothing was released — score them with a model already "
                        "counted, or name other subjects"
                    )
                Gate(
                    self.a.engine,
                    Request(bank, tuple(found), admission.fields, "score", purpose),
                    job=job_ref,
                    actor=SERVICE,
                ).release_all(
                    session,
                    what=what,
                    admitted=[usable.allowed[s_] for s_ in found],
                    refusal="no longer holds: nothing was released, submit the job again",
                )
            self.a.ledger.append(
                session,
                EntryDraft(
                    action="enclave.release",
                    actor=SERVICE,
                    objects=(job_ref, ObjectRef("model_approval", str(params["approval_id"]))),
                    purpose=purpose,
                    subjects=tuple(found),
                    released=(Release(to=bank, what=what),),
                    detail={
                        "job": GradedScoreJob.kind,
                        "model_digest": digest,
                        "by_granularity": plain.get("summary", {}).get("by_granularity", {}),
                        "measurement": host.hello["measurement"],
                    },
                ),
            )
            return {
                "scored": len(found),
                "not_used": usable.left_out,
                "model_digest": digest,
                "by_granularity": plain.get("summary", {}).get("by_granularity", {}),
            }

        return JobOutcome(
            result=release, media_type=GRADED_MEDIA_TYPE, finalize=finalize, released_what="scores"
        )
