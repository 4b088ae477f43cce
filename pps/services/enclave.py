"""The simulated enclave as a service: quotes, provisioning and attested jobs, under policy and on the record.

:class:`EnclaveService` owns one enclave process (:class:`enclave_sim.host.EnclaveHost`), started on first
use and started again after a crash. Its vendor attestation key and platform secret are files in the key
directory (in a real deployment the first is the hardware vendor's and the second is fused into the CPU).

A bank's gradient-boosted-trees job (``POST /v1/enclave/jobs``, kind ``enclave.gbdt``):

1. the bank fetches a quote for its own nonce (``GET /v1/enclave/quote``; the issue is a ledger entry
   ``enclave.quote``) and verifies it against the measurement it expects and the vendor key it pins
   (:func:`pps_client.verify_quote`);
2. it encrypts its labelled rows and its output policy to the enclave key in that quote (HPKE, bound to the
   quote hash) and submits them. The service hands the ciphertext straight to the enclave, which opens it
   and answers with a receipt (size, digest, the public part of the output policy); the job is stored with
   an ``enclave.provision`` entry in the same transaction. The host never sees the bank's rows;
3. the job reads the platform features of the subjects whose consent covers operation ``enclave``, the
   purpose and exactly the fields those features read (admission: ``policy.admit``), gives them to the
   enclave, which joins, trains and evaluates, and releases only what the bank's output policy allows —
   metrics in the clear, scores or the model encrypted to the bank's key, the whole authenticated with a
   key only the bank and the enclave know;
4. at release the policy engine decides again and spends one use of each consent; if any subject's consent
   no longer holds, the model cannot be untrained: the job fails and nothing is released. The release is an
   ``enclave.release`` entry next to ``policy.release``.

If the enclave dies while a job runs, the job fails (``enclave_unavailable``), nothing is released, and the
next call starts a fresh enclave (its start is an ``enclave.start`` entry naming the measurement). Jobs whose
rows were provisioned to an enclave instance that has since stopped fail the same way: the rows were
encrypted to that instance's ephemeral key and are gone with it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.orm import Session

from enclave_sim import errors as ee
from enclave_sim.host import EnclaveHost
from enclave_sim.jobs import GBDTJob, check_gbdt_params
from enclave_sim.platform import EnclaveConfig
from pps.data.features import FeatureStore, admit_on_features
from pps.errors import EnclaveUnavailable, InvalidInput, ProvisioningFailed
from pps.governance.consent import check_purpose
from pps.governance.policy import PolicyEngine, Request
from pps.governance.release import Gate
from pps.identity.uscc import validate_uscc
from pps.infra.jobs import JobContext, JobOutcome, JobService
from pps.infra.keys import (
    ENCLAVE_PLATFORM_SECRET_FILE,
    ENCLAVE_VENDOR_KEY_FILE,
    load_or_create_ed25519,
    load_or_create_secret,
)
from pps.infra.storage.db import Database
from pps.infra.storage.tables import Job, new_id
from pps.ledger.entry import Actor, EntryDraft, ObjectRef, Release
from pps.ledger.store import Ledger
from pps_wire.provision import table_bytes
from pps_wire.quote import NONCE_BYTES, Quote

log = logging.getLogger("pps.enclave")

KIND = "enclave.gbdt"
MEDIA_TYPE = "application/vnd.pps.enclave-release+json"
ALL_CONSENTED = "all_consented"
SERVICE = Actor(None, "service", "job")
MAX_SUBJECTS = 100_000


@dataclass(frozen=True)
class CheckedGBDT:
    """A GBDT request that passed the door: what the host may know of it (never the bank's rows)."""

    purpose: str
    subjects: tuple[str, ...] | None
    features: tuple[str, ...]
    fields: dict[str, tuple[str, ...]]
    params: dict[str, int]
    release: tuple[str, ...]
    recipient_key: str | None


@dataclass
class EnclaveService:
    db: Database
    ledger: Ledger
    policy: PolicyEngine
    jobs: JobService
    features: FeatureStore
    key_dir: Path
    config: EnclaveConfig = field(default_factory=EnclaveConfig)
    call_timeout_s: float = 1800.0
    code_root: Path | None = None
    """Where the enclave's modules are read from (default: the installed ``enclave_sim``); tests point it at a
    changed copy to get another measurement."""

    def __post_init__(self) -> None:
        self.jobs.register(KIND, self._run)
        self._vendor = load_or_create_ed25519(self.key_dir / ENCLAVE_VENDOR_KEY_FILE)
        self._secret = load_or_create_secret(self.key_dir / ENCLAVE_PLATFORM_SECRET_FILE)
        self._host: EnclaveHost | None = None
        self._lock = threading.Lock()

    # --- the enclave process --------------------------------------------------------------------------

    @property
    def vendor_public_key(self) -> Ed25519PublicKey:
        """The simulated vendor's attestation key: verifiers pin it (obtained out of band, not from a quote)."""
        return self._vendor.public_key()

    def vendor_public_bytes(self) -> bytes:
        return self.vendor_public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def host(self) -> EnclaveHost:
        """The running enclave, started (or started again after a crash) if needed."""
        with self._lock:
            if self._host is None:
                self._host = EnclaveHost(
                    vendor_key=self._vendor,
                    platform_secret=self._secret,
                    config=self.config,
                    code_root=self.code_root,
                    call_timeout_s=self.call_timeout_s,
                )
            host = self._host
            if host.alive:
                return host
            if host.starts:
                log.warning("the enclave process is not running; starting a new one")
            try:
                host.start()
            except ee.EnclaveError as exc:
                raise EnclaveUnavailable(f"the enclave could not start: {exc.message}") from None
            with self.db.transaction() as s:
                self.ledger.append(
                    s,
                    EntryDraft(
                        action="enclave.start",
                        actor=Actor(None, "service", "enclave"),
                        objects=(ObjectRef("enclave", f"start-{host.starts}"),),
                        detail={
                            "measurement": host.hello["measurement"],
                            "isv_svn": int(host.hello["isv_svn"]),
                            "debug": bool(host.hello["debug"]),
                            "enclave_key": host.hello["enclave_key"],
                        },
                    ),
                )
            return host

    def running_host(self) -> EnclaveHost:
        """The enclave already running (inside a transaction, where starting one — a ledger entry of its own —
        must not happen); :class:`EnclaveUnavailable` if it is not."""
        host = self._host
        if host is None or not host.alive:
            raise EnclaveUnavailable("the enclave is not running (it stopped or restarted): provision again")
        return host

    def close(self) -> None:
        with self._lock:
            if self._host is not None:
                self._host.stop()

    # --- quotes ---------------------------------------------------------------------------------------

    def quote(self, nonce: bytes) -> bytes:
        """A quote for the verifier's ``nonce`` (32 bytes). Record it with :meth:`record_quote` before it leaves."""
        if len(nonce) != NONCE_BYTES:
            raise InvalidInput(f"nonce must be {NONCE_BYTES} bytes ({2 * NONCE_BYTES} hex characters)")
        host = self.host()
        quote: bytes = host.quote(nonce)
        return quote

    def record_quote(self, session: Session, quote: bytes, *, actor: Actor, request_id: str | None) -> None:
        q = Quote.parse(quote)
        self.ledger.append(
            session,
            EntryDraft(
                action="enclave.quote",
                actor=actor,
                objects=(ObjectRef("quote", q.quote_hash.hex()[:64]),),
                request_id=request_id,
                detail={
                    "measurement": q.measurement.hex(),
                    "isv_svn": q.isv_svn,
                    "debug": q.debug,
                    "nonce": q.nonce.hex(),
                    "enclave_key": q.enclave_key.hex(),
                },
            ),
        )

    # --- submission -----------------------------------------------------------------------------------

    def check_gbdt(
        self,
        *,
        purpose: str,
        subjects: Sequence[str] | None,
        features: Sequence[str],
        params: dict[str, Any],
        release: Sequence[str],
        recipient_key: str | None,
    ) -> CheckedGBDT:
        check_purpose(purpose)
        if subjects is not None:
            if not subjects or len(subjects) > MAX_SUBJECTS:
                raise InvalidInput(f"name 1 to {MAX_SUBJECTS:,} subjects, or ask for {ALL_CONSENTED!r}")
            for s in subjects:
                validate_uscc(s)
            if len(set(subjects)) != len(subjects):
                raise InvalidInput("a job names each subject once")
        if not features or len(set(features)) != len(features):
            raise InvalidInput("name at least one platform feature, each once (GET /v1/features)")
        try:
            checked_params = check_gbdt_params(params)
        except ee.EnclaveJobError as exc:
            raise InvalidInput(exc.message) from None
        unknown = sorted(set(release) - GBDTJob.outputs)
        if not release or unknown or len(set(release)) != len(release):
            raise InvalidInput(f"release must name some of {sorted(GBDTJob.outputs)}, each once")
        if set(release) - GBDTJob.plain_outputs and recipient_key is None:
            raise InvalidInput("scores and the model leave only encrypted: give a recipient_key")
        with self.db.transaction(write=False) as session:
            fields = self.features.fields_for(session, list(features))
        return CheckedGBDT(
            purpose,
            tuple(subjects) if subjects is not None else None,
            tuple(features),
            fields,
            checked_params,
            tuple(sorted(release)),
            recipient_key,
        )

    def provision(
        self, checked: CheckedGBDT, *, quote_hash: bytes, ciphertext: bytes
    ) -> tuple[str, dict[str, Any]]:
        """Hand the bank's ciphertext to the enclave (outside any transaction); ``(handle, receipt)``.

        The enclave checks that the output policy inside equals the one the request declares."""
        handle = new_id("enc")
        host = self.host()
        receipt: dict[str, Any] = host.provision(
            handle,
            job=GBDTJob.kind,
            slot="bank",
            quote_hash=quote_hash,
            ciphertext=ciphertext,
        )
        declared = {"release": list(checked.release), "recipient_key": checked.recipient_key}
        if receipt.get("output") != declared:
            self.drop(handle)
            raise ProvisioningFailed(
                "the output policy inside the encrypted rows is not the one the request declares"
            )
        receipt["instance"] = host.starts
        return handle, receipt

    def drop(self, handle: str) -> None:
        """Forget provisioned data (e.g. when the transaction that would have kept the job fails)."""
        host = self._host
        if host is not None and host.alive:
            try:
                host.drop(handle)
            except ee.EnclaveError:
                log.warning("could not drop enclave handle %s", handle)

    def submit(
        self,
        session: Session,
        checked: CheckedGBDT,
        *,
        handle: str,
        receipt: dict[str, Any],
        quote_hash: bytes,
        actor: Actor,
        request_id: str | None = None,
    ) -> Job:
        """Store the job and its ``enclave.provision`` entry (enqueue after the commit)."""
        host = self._host
        measurement = host.hello.get("measurement", "") if host is not None else ""
        job = self.jobs.submit(
            session,
            kind=KIND,
            actor=actor,
            purpose=checked.purpose,
            params={
                "handle": handle,
                "instance": int(receipt["instance"]),
                "features": list(checked.features),
                "fields": {k: list(v) for k, v in checked.fields.items()},
                "gbdt": checked.params,
                "release": list(checked.release),
                "recipient_key": checked.recipient_key,
                "subjects": ALL_CONSENTED if checked.subjects is None else len(checked.subjects),
                "quote_hash": quote_hash.hex(),
            },
            input_blob=json.dumps({"subjects": checked.subjects}).encode(),
            input_media_type="application/json",
            request_id=request_id,
        )
        self.ledger.append(
            session,
            EntryDraft(
                action="enclave.provision",
                actor=actor,
                objects=(ObjectRef("job", job.id),),
                purpose=checked.purpose,
                request_id=request_id,
                detail={
                    "job": GBDTJob.kind,
                    "slot": "bank",
                    "quote_hash": quote_hash.hex(),
                    "measurement": measurement,
                    "bytes": int(receipt["bytes"]),
                    "sha256": str(receipt["sha256"]),
                    "release": list(checked.release),
                },
            ),
        )
        return job

    # --- the job --------------------------------------------------------------------------------------

    def _run(self, ctx: JobContext) -> JobOutcome:
        if ctx.purpose is None or ctx.input is None:
            raise InvalidInput("an enclave job needs a purpose and its request")
        bank, purpose, params = ctx.owner_org_id, ctx.purpose, ctx.params
        handle = str(params["handle"])
        listed = json.loads(ctx.input)["subjects"]
        names = list(params["features"])
        host = self.host()
        if host.starts != int(params["instance"]):
            raise EnclaveUnavailable(
                "the enclave restarted since the rows were provisioned (they were encrypted to the stopped "
                "instance's key); nothing was released — verify a new quote and submit again"
            )
        job_ref = ObjectRef("job", ctx.job_id)
        try:
            admission = admit_on_features(
                self.db,
                self.features,
                self.policy,
                bank=bank,
                purpose=purpose,
                operation="enclave",
                names=names,
                submitted_fields=params["fields"],
                subjects=listed,
                job=job_ref,
                actor=SERVICE,
            )
            table, fields = admission.table, admission.fields
            usable = admission.usable()
            allowed, found, rows, denied = usable.allowed, usable.subjects, usable.rows, usable.left_out
            matrix = table.matrix(names, rows)
            platform = table_bytes(found, {n: matrix[:, j].tolist() for j, n in enumerate(names)})
            ctx.progress(1, 3)
            host.supply(handle, job=GBDTJob.kind, slot="platform", data=platform)
            ctx.progress(2, 3)
            output = {"release": list(params["release"]), "recipient_key": params["recipient_key"]}
            release, plain = host.run(handle, params=dict(params["gbdt"]), output=output)
            ctx.progress(3, 3)
        except BaseException:
            self.drop(handle)
            raise
        digest = hashlib.sha256(release).hexdigest()
        what = f"enclave.gbdt:{','.join(params['release'])}"

        def finalize(session: Session) -> dict[str, Any]:
            if found:
                Gate(
                    self.policy,
                    Request(bank, tuple(found), fields, "enclave", purpose),
                    job=job_ref,
                    actor=SERVICE,
                    records=admission.records,
                ).release_all(
                    session,
                    what=what,
                    admitted=[allowed[s_] for s_ in found],
                    refusal=(
                        "no longer holds; a trained model cannot leave "
                        "without them — nothing was released, submit the job again"
                    ),
                )
            metrics = plain.get("metrics", {})
            self.ledger.append(
                session,
                EntryDraft(
                    action="enclave.release",
                    actor=SERVICE,
                    objects=(job_ref,),
                    purpose=purpose,
                    released=(Release(to=bank, what=what),),
                    detail={
                        "job": GBDTJob.kind,
                        "quote_hash": str(params["quote_hash"]),
                        "measurement": host.hello["measurement"],
                        "release": list(params["release"]),
                        "release_sha256": digest,
                        "subjects_provided": len(found),
                        "joined": int(metrics.get("joined", 0)),
                    },
                ),
            )
            return {
                "subjects_provided": len(found),
                "not_used": denied,
                "release": list(params["release"]),
                "release_sha256": digest,
                "metrics": metrics,
            }

        return JobOutcome(result=release, media_type=MEDIA_TYPE, finalize=finalize, released_what="release")
