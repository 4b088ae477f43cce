"""Vertical logistic regression as a service: a bank's labels × the platform's features, coordinator in the enclave.

The parties are those of :mod:`protocols.vertical_lr` (read it for who learns what): the **bank** is the guest
(labels, its own features; it runs :class:`protocols.vertical_lr.Guest` on its own machine, through
:meth:`pps_client.Client.vertical.train`), the **safe-room** is the host (platform features of consented
subjects), and the **coordinator** that holds the Paillier private key runs *inside the simulated enclave*
(``enclave_sim``'s ``vlr_coordinator`` job), so the non-collusion assumption between coordinator and host
becomes the assumption that the enclave is what its quote says. The safe-room relays the host's masked
gradients to the enclave itself; the bank's ciphertexts and masked values pass through the safe-room to the
enclave, which the safe-room cannot read (masked under the bank's masks).

The flow:

1. **Alignment.** The bank runs PSI with ``operation="train"`` (:mod:`pps.services.psi`): the server set is the
   subjects whose consent lets this bank *train* for the purpose; the bank learns which of its customers are in
   it, and only that.
2. **Start** (:meth:`VerticalTrainingService.start`). The bank verifies a fresh enclave quote, encrypts the
   coordinator's set-up (``{"key_bits": 2048}``, output policy ``summary``) to that enclave and names the
   aligned subjects in its row order and the platform features. The safe-room provisions the coordinator,
   admits the subjects (operation ``train``, the features' fields; a ``policy.admit`` entry naming each
   subject and consent), standardises its columns over the training rows, and answers the rows it will use
   (subjects without a consent or without a registry record are left out, by reason count) and the
   coordinator's PUBLIC_KEY. A ``training.start`` entry records the session.
3. **Exchange** (:meth:`VerticalTrainingService.exchange`): one HTTP round trip per mini-batch (two with
   ``loss="exact"``, the default: first ``[LINEAR_PREDICTOR]`` -> ``[PROBABILITIES]``, the enclave's exact
   sigmoid of the joined linear predictors, encrypted under its own key). The bank posts
   ``[RESIDUALS, MASKED_GRADIENT]`` and gets ``[DECRYPTED, FORWARD of the next batch]``; the safe-room feeds
   RESIDUALS to the host, sends the host's masked gradient to the enclave and applies the answer, and forwards
   the bank's MASKED_GRADIENT to the enclave. SETUP and EPOCH_END go to host and coordinator alike.

   **Consent per batch** (issue 24, item 4; PIPL Art. 15). Before a batch reads the platform's features — its
   FORWARD and, a round trip later, its RESIDUALS — consent is decided again for the batch's subjects (for all
   of them at the start of each epoch; :meth:`PolicyEngine.in_force`, with the dishonesty records counted):
   a revoked, expired or quarantined consent, or a repaired record, ends the training there, so a withdrawn
   subject's features are never read again, and the bank gets a 409 naming how many subjects (never who). The
   first FORWARD is the first platform-derived value to leave, so one use of each consent is spent then (a
   ``policy.release`` of ``vertical_lr:intermediate``): a training that fails or is cancelled afterwards has
   spent it too. Each epoch leaves a ``training.epoch`` entry with its batch count and a digest of the
   subjects each batch used (``training.fail`` says the same of an unfinished epoch).
4. **Finish** (:meth:`VerticalTrainingService.finish`). Once the bank's EPOCH_END stopped training, consent is
   decided again (a ``policy.release`` entry that spends nothing: the use was spent at the first batch): if any
   subject's consent no longer holds, no model is registered. Otherwise the model is registered (:mod:`pps.services.registry`, kind
   ``vertical_lr``) with its host half sealed as a ``platform`` part that never leaves; the bank keeps its own
   half. The enclave job ends, releasing only its summary (decryption and epoch counts).
5. **Scoring an applicant** (:meth:`VerticalTrainingService.contributions`): the bank sends its own Paillier
   public key and consented subjects (operation ``score``); the safe-room releases the host half's ``x_h w_h``
   per subject *encrypted under the bank's key* (:func:`protocols.vertical_lr.host_score_contribution`), never
   as plaintext. The bank adds its half after decrypting. It thus learns each applicant's ``x_h w_h`` (one
   number, as any split model must reveal to the party that computes the score), never ``x_h`` or ``w_h``.

A session's live state (the host's weights and the enclave's key) is in the serving process: a restart ends it
(the next call says so and marks it failed); nothing is registered from a partial run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from enclave_sim import errors as ee
from enclave_sim.host import RemoteCoordinator
from enclave_sim.jobs import VerticalLRCoordinatorJob
from enclave_sim.model_check import ModelPolicy, PlainModel, Prep, verify_model
from models.features import FEATURE_RESOLUTION
from pps.data.features import FeatureStore, admit_on_features
from pps.errors import Conflict, InvalidInput, ModelRefused, NotFound, RateLimited
from pps.governance.consent import check_purpose
from pps.governance.disclosure import DisclosureAccounting, granularity_of
from pps.governance.policy import Decision, PolicyEngine, Request
from pps.governance.records import Counted, RecordBook
from pps.governance.release import Gate
from pps.identity.uscc import validate_uscc
from pps.infra.executor import Executor
from pps.infra.storage.db import Database
from pps.infra.storage.tables import TrainingState, VerticalTraining, new_id, utcnow
from pps.ledger.entry import Actor, EntryDraft, ObjectRef, Release
from pps.ledger.store import Ledger
from pps.services.enclave import SERVICE, EnclaveService
from pps.services.registry import PLATFORM, ModelRecord, ModelRegistry
from protocols import paillier_fast as pf
from protocols import vertical_lr as vl
from protocols.errors import ProtocolError

log = logging.getLogger(__name__)

OPERATION = "train"
KIND = "vertical_lr"
MIN_ROWS = 50
MAX_ROWS = 200_000
MAX_LIVE_SESSIONS = 8
MAX_LIVE_PER_BANK = 2
IDLE_TIMEOUT_S = 900.0
MIN_KEY_BITS = 2048
MAX_CONTRIBUTIONS = 10_000


@dataclass(frozen=True)
class Started:
    training: VerticalTraining
    rows: tuple[str, ...]
    excluded: dict[str, int]
    public_key: bytes


@dataclass
class _Live:
    bank: str
    purpose: str
    names: tuple[str, ...]
    fields: dict[str, tuple[str, ...]]
    subjects: tuple[str, ...]
    consent_ids: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    host: vl.Host
    coordinator: RemoteCoordinator
    handle: str
    output: dict[str, Any]
    lock: threading.Lock = field(default_factory=threading.Lock)
    guest_features: int = 0
    guest_width: int = 0
    """values in the bank's MASKED_GRADIENT: its features, the intercept, and the loss if computed"""
    pending: tuple[int, int] | None = None
    """(epoch, batch) whose RESIDUALS the host has answered and whose bank gradient is still to decrypt"""
    sigmoid_for: tuple[int, int] | None = None
    """(epoch, batch) whose linear predictors the enclave has answered (loss="exact": one per batch)"""
    last: tuple[bytes, list[bytes]] | None = None
    """the last exchange: the request's digest and the answer (a retried request gets the same answer)"""
    used_at: float = field(default_factory=time.monotonic)
    records: dict[str, tuple[Counted, ...]] | None = None
    """dishonesty records counted per subject (decided again at release)"""
    admitted: dict[str, Decision] = field(default_factory=dict)
    """the admission's decision per training subject (the consent relied on)"""
    spent: bool = False
    """one use of each consent was spent: the first platform-derived values left for the bank"""
    batches: list[str] = field(default_factory=list)
    """this epoch's batches that read the platform's features so far: a digest of each one's subjects"""
    closed: list[tuple[int, list[str]]] = field(default_factory=list)
    """epochs ended but not yet written to the ledger (a ``training.epoch`` entry each)"""


def _digest(subjects: Sequence[str]) -> str:
    """What a batch (or an epoch of batches) used, without naming anyone: sha256 of the subjects' USCCs, one a
    line, in the batch's order (an auditor recomputes it from the ``policy.admit`` entries and the SETUP's
    batch schedule)."""
    return hashlib.sha256("\n".join(subjects).encode()).hexdigest()


def _epoch_digest(batches: Sequence[str]) -> str:
    return hashlib.sha256("".join(batches).encode()).hexdigest()


def _ref(training_id: str) -> ObjectRef:
    return ObjectRef("training", training_id)


@dataclass
class VerticalTrainingService:
    db: Database
    ledger: Ledger
    policy: PolicyEngine
    features: FeatureStore
    enclave: EnclaveService
    models: ModelRegistry
    executor: Executor | None = None
    """where the host's encrypted gradients run over row blocks (``None`` or in-process: here)"""
    min_rows: int = MIN_ROWS
    """the fewest aligned rows a training may use (fewer rows: each row weighs more in what leaks)"""
    max_per_bank: int = MAX_LIVE_PER_BANK
    idle_timeout_s: float = IDLE_TIMEOUT_S
    unsafe_small_keys: bool = False
    """accept a coordinator key under 2048 bits (tests only: PPS_UNSAFE_SMALL_PAILLIER_KEYS)"""
    model_policy: ModelPolicy | None = None
    """The published model policy the host half must meet before any contribution is released (``None`` only
    with ``unsafe_unapproved_models``): the bank steers the host half through its labels, so a training can
    make it read a platform feature back."""
    disclosures: DisclosureAccounting = field(default_factory=DisclosureAccounting)
    _live: dict[str, _Live] = field(default_factory=dict)
    _reserved: dict[str, str] = field(default_factory=dict)
    """training id -> bank, for sessions being started (they count against the limits)"""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _reap(self) -> None:
        """Fail the sessions nobody touched for ``idle_timeout_s``: they hold an enclave handle and a slot."""
        now = time.monotonic()
        with self._lock:
            idle = [tid for tid, live in self._live.items() if now - live.used_at > self.idle_timeout_s]
        for tid in idle:
            self._fail(tid, f"idle for more than {self.idle_timeout_s:.0f} s; start again")

    def _reserve(self, training_id: str, bank: str) -> None:
        self._reap()
        with self._lock:
            banks = [live.bank for live in self._live.values()] + list(self._reserved.values())
            if len(banks) >= MAX_LIVE_SESSIONS:
                raise RateLimited(
                    f"{MAX_LIVE_SESSIONS} trainings are running; try again later",
                    details={"retry_after_s": 60},
                )
            if banks.count(bank) >= self.max_per_bank:
                raise RateLimited(
                    f"you have {self.max_per_bank} trainings running: finish or cancel one "
                    "(DELETE /v1/training/vertical/{id})",
                    details={"retry_after_s": 60},
                )
            self._reserved[training_id] = bank

    # --- start ----------------------------------------------------------------------------------------

    def start(
        self,
        *,
        actor: Actor,
        name: str,
        purpose: str,
        subjects: Sequence[str],
        features: Sequence[str],
        quote_hash: bytes,
        ciphertext: bytes,
        request_id: str | None = None,
    ) -> Started:
        """Provision the coordinator, admit the aligned subjects, build the host; see the module docstring."""
        bank = actor.org_id
        assert bank is not None
        check_purpose(purpose)
        if not 1 <= len(name.strip()) <= 128:
            raise InvalidInput("a training needs a name of 1 to 128 characters")
        if not self.min_rows <= len(subjects) <= MAX_ROWS:
            raise InvalidInput(
                f"name {self.min_rows} to {MAX_ROWS:,} aligned subjects (the PSI intersection)"
            )
        for subject in subjects:
            validate_uscc(subject)
        if len(set(subjects)) != len(subjects):
            raise InvalidInput("name each subject once, in the bank's row order")
        names = tuple(features)
        if not names or len(set(names)) != len(names):
            raise InvalidInput("name at least one platform feature, each once (GET /v1/features)")
        if len(quote_hash) != 32:
            raise InvalidInput("quote_hash must be the 32-byte hash of the quote the bank verified")
        with self.db.transaction(write=False) as s:
            fields = self.features.fields_for(s, list(names))
        training_id = new_id("vlr")
        self._reserve(training_id, bank)
        try:
            return self._start(
                training_id,
                actor=actor,
                bank=bank,
                name=name,
                purpose=purpose,
                subjects=subjects,
                names=names,
                fields=fields,
                quote_hash=quote_hash,
                ciphertext=ciphertext,
                request_id=request_id,
            )
        finally:
            with self._lock:
                self._reserved.pop(training_id, None)

    def _start(
        self,
        training_id: str,
        *,
        actor: Actor,
        bank: str,
        name: str,
        purpose: str,
        subjects: Sequence[str],
        names: tuple[str, ...],
        fields: dict[str, tuple[str, ...]],
        quote_hash: bytes,
        ciphertext: bytes,
        request_id: str | None,
    ) -> Started:
        host_enclave = self.enclave.host()
        receipt = host_enclave.provision(
            training_id,
            job=VerticalLRCoordinatorJob.kind,
            slot="guest",
            quote_hash=quote_hash,
            ciphertext=ciphertext,
        )
        try:
            output = dict(receipt["output"])
            if output.get("release") != ["summary"]:
                raise InvalidInput("the coordinator's output policy must release its summary only")
            coordinator = RemoteCoordinator(host_enclave, training_id)
            pk_msg = coordinator.public_key_message()
            bits = pf.PublicKey.from_bytes(vl.decode_message(pk_msg, None).body).bits
            if bits < MIN_KEY_BITS and not self.unsafe_small_keys:
                raise InvalidInput(
                    f"the coordinator's Paillier key has {bits} bits; at least {MIN_KEY_BITS} are required: "
                    'provision it with {"key_bits": 2048} or more'
                )
            admission = admit_on_features(
                self.db,
                self.features,
                self.policy,
                bank=bank,
                purpose=purpose,
                operation=OPERATION,
                names=names,
                submitted_fields=fields,
                subjects=list(subjects),
                job=_ref(training_id),
                actor=actor,
            )
            usable = admission.usable(subjects)
            allowed, found, rows, excluded = usable.allowed, usable.subjects, usable.rows, usable.left_out
            if len(found) < self.min_rows:
                raise InvalidInput(
                    f"only {len(found)} of the {len(subjects)} subjects can be used ({excluded}); a training needs "
                    f"at least {self.min_rows} — align again with PSI (operation 'train')"
                )
            x = admission.table.matrix(list(names), rows)
            mean, scale = x.mean(axis=0), x.std(axis=0)
            scale[scale == 0] = 1.0
            fan_out = None if self.executor is None or self.executor.in_process else self.executor
            host = vl.Host((x - mean) / scale, executor=fan_out)
            host.receive_public_key(pk_msg)
            now = utcnow()
            with self.db.transaction() as s:
                entry = self.ledger.append(
                    s,
                    EntryDraft(
                        action="training.start",
                        actor=actor,
                        objects=(_ref(training_id),),
                        purpose=purpose,
                        request_id=request_id,
                        detail={
                            "kind": KIND,
                            "rows": len(found),
                            "features": list(names),
                            "excluded": excluded,
                            "quote_hash": quote_hash.hex(),
                            "measurement": str(host_enclave.hello.get("measurement", "")),
                        },
                    ),
                )
                row = VerticalTraining(
                    id=training_id,
                    bank_org_id=bank,
                    name=name,
                    purpose=purpose,
                    features_json=json.dumps(list(names)),
                    rows=len(found),
                    state=TrainingState.training,
                    epochs_done=0,
                    enclave_handle=training_id,
                    enclave_instance=host_enclave.starts,
                    quote_hash=quote_hash.hex(),
                    admission_index=entry.index,
                    created_at=now,
                    updated_at=now,
                )
                s.add(row)
                s.flush()
                s.expunge(row)
        except BaseException:
            self.enclave.drop(training_id)
            raise
        with self._lock:
            self._live[training_id] = _Live(
                bank=bank,
                purpose=purpose,
                names=names,
                fields=admission.fields,
                subjects=tuple(found),
                consent_ids=tuple(sorted({allowed[u].consent_id or "" for u in found} - {""})),
                mean=mean,
                scale=scale,
                host=host,
                coordinator=coordinator,
                handle=training_id,
                output=output,
                records=admission.records,
                admitted={u: allowed[u] for u in found},
            )
        return Started(row, tuple(found), excluded, pk_msg)

    # --- the exchange ---------------------------------------------------------------------------------

    def get(
        self, session: Session, training_id: str, *, org_id: str | None, sees_everything: bool
    ) -> VerticalTraining:
        row = session.get(VerticalTraining, training_id)
        if row is None or (not sees_everything and row.bank_org_id != org_id):
            raise NotFound(f"no training {training_id}")
        return row

    def _session(self, training_id: str, actor: Actor) -> _Live:
        self._reap()
        with self.db.transaction(write=False) as s:
            row = self.get(s, training_id, org_id=actor.org_id, sees_everything=False)
            state, error = row.state, row.error
        if state is not TrainingState.training:
            raise Conflict(f"training {training_id} is {state.value}" + (f": {error}" if error else ""))
        live = self._live.get(training_id)
        if live is None:
            self._fail(
                training_id, "the service restarted during the training; its state is gone — start again"
            )
            raise Conflict(
                f"training {training_id} was interrupted by a restart of the service; start it again"
            )
        return live

    def _fail(self, training_id: str, why: str) -> None:
        with self._lock:
            live = self._live.pop(training_id, None)
        self.enclave.drop(training_id)
        used: dict[str, Any] = {}
        closed: list[EntryDraft] = []
        if live is not None:  # what the unfinished epoch read of the platform's features, batch by batch
            closed = self._epoch_entries(training_id, live, live.closed)  # ended in the failing request
            used = {
                "uses_spent": live.spent,
                "epoch": live.host.epoch,
                "batches_used": len(live.batches),
                "subjects_sha256": _epoch_digest(live.batches),
            }
        with self.db.transaction() as s:
            row = s.get(VerticalTraining, training_id)
            if row is None or row.state is not TrainingState.training:
                return
            row.state, row.error, row.updated_at = TrainingState.failed, why, utcnow()
            self.ledger.append_many(
                s,
                [
                    *closed,
                    EntryDraft(
                        action="training.fail",
                        actor=SERVICE,
                        objects=(_ref(training_id),),
                        purpose=row.purpose,
                        detail={"kind": KIND, "reason": why[:200], "epochs": row.epochs_done, **used},
                    ),
                ],
            )

    @staticmethod
    def _epoch_entries(
        training_id: str, live: _Live, closed: Sequence[tuple[int, list[str]]]
    ) -> list[EntryDraft]:
        """A ``training.epoch`` entry per ended epoch: its batches and a digest of the subjects each used."""
        return [
            EntryDraft(
                action="training.epoch",
                actor=SERVICE,
                objects=(_ref(training_id),),
                purpose=live.purpose,
                detail={
                    "kind": KIND,
                    "epoch": epoch,
                    "batches": len(batches),
                    "rows": len(live.subjects),
                    "subjects_sha256": _epoch_digest(batches),
                    "consent": "decided again before every batch",
                },
            )
            for epoch, batches in closed
        ]

    def exchange(self, training_id: str, frames: Sequence[bytes], *, actor: Actor) -> list[bytes]:
        """Feed the bank's frames to host and coordinator, in order; answer the frames for the bank."""
        live = self._session(training_id, actor)
        digest = hashlib.sha256(b"".join(hashlib.sha256(f).digest() for f in frames)).digest()
        out: list[bytes] = []
        epochs_before = live.host.epoch
        with live.lock:
            live.used_at = time.monotonic()
            if live.last is not None and live.last[0] == digest:
                return list(live.last[1])  # the answer to a retried request, whose first answer was lost
            changed = False
            for frame in frames:
                if len(frame) < 7:
                    raise InvalidInput("a frame too short to be a vertical-LR message")
                try:
                    kind, sender = vl.MessageType(frame[5]), vl.Party(frame[6])
                except ValueError:
                    raise InvalidInput("not a vertical-LR message (unknown type or sender)") from None
                if sender is not vl.Party.GUEST:
                    raise InvalidInput("the bank sends guest messages only")
                try:
                    out.extend(self._dispatch(live, kind, frame))
                    changed = True
                except ProtocolError as exc:
                    if changed:  # earlier frames of this request moved the session on: it cannot resume
                        self._fail(training_id, f"a refused frame after others were applied: {exc}")
                        raise InvalidInput(f"training {training_id}: {exc}; the session was ended") from None
                    raise InvalidInput(f"training {training_id}: {exc}") from None
                except ee.EnclaveError as exc:
                    self._fail(training_id, f"the enclave failed: {exc.message}")
                    raise
            if live.host.stage is vl.Stage.READY_FORWARD:
                used = self._decide_batch(training_id, live)
                out.append(live.host.forward())
                live.batches.append(_digest(used))
            live.last = (digest, list(out))
            done = live.host.done
            epochs = live.host.epoch + (1 if done else 0)
            closed, live.closed = live.closed, []
        if epochs != epochs_before or done or closed:
            with self.db.transaction() as s:
                row = s.get(VerticalTraining, training_id)
                assert row is not None
                row.epochs_done, row.updated_at = epochs, utcnow()
                self.ledger.append_many(s, self._epoch_entries(training_id, live, closed))
        return out

    def _decide_batch(self, training_id: str, live: _Live) -> list[str]:
        """Before a batch reads the platform's features (its FORWARD, then its RESIDUALS): decide again for the
        batch's subjects — for every subject at the start of an epoch — that their consents still hold and no
        dishonesty record counted for them was repaired or expired. A subject lost ends the training at once
        (a model needs every subject, :meth:`finish`): its features are never read again. Before the first
        FORWARD, the first platform-derived values to leave, one use of each consent is spent (a
        ``policy.release`` of ``vertical_lr:intermediate``): a training that fails or is cancelled later has
        used its subjects' data and keeps that use spent. Returns the batch's subjects, in its order."""
        host = live.host
        rows = host.batch_rows()
        batch = [live.subjects[int(i)] for i in rows]
        everyone = not live.spent or (host.batch == 0 and host.stage is vl.Stage.READY_FORWARD)
        subjects = list(live.subjects) if everyone else batch
        request = Request(live.bank, tuple(subjects), live.fields, OPERATION, live.purpose)
        gate = Gate(self.policy, request, job=_ref(training_id), actor=SERVICE, records=live.records)
        where = f"before epoch {host.epoch} batch {host.batch} read the platform's features"
        refusal = f"no longer allows training: the training was ended {where}; no model was registered"
        try:
            if not live.spent:
                with self.db.transaction() as s:
                    gate.release_all(
                        s,
                        what=f"{KIND}:intermediate",
                        refusal=refusal,
                        admitted=[live.admitted[u] for u in subjects],
                    )
                live.spent = True
                return batch
            with self.db.transaction(write=False) as s:
                lost = [
                    d for d in self.policy.in_force(s, [live.admitted[u] for u in subjects]) if not d.allowed
                ]
                withheld = RecordBook.withheld(s, live.records, subjects) if live.records else {}
            if lost or withheld:
                what = "the consent or dishonesty records" if withheld else "the consent"
                raise Conflict(
                    f"{what} of {len({d.subject for d in lost} | set(withheld))} subject(s) {refusal}"
                )
        except Conflict as exc:
            self._fail(training_id, exc.message)
            raise Conflict(
                f"training {training_id}: {exc.message} — align again and start a new training"
            ) from None
        return batch

    def _dispatch(self, live: _Live, kind: vl.MessageType, frame: bytes) -> list[bytes]:
        host, coordinator = live.host, live.coordinator
        if kind is vl.MessageType.SETUP:
            if host.stage is not vl.Stage.AWAITING_SETUP:
                raise vl.ProtocolStateError("SETUP: the session is already set up")
            ack = host.receive_setup(frame)  # checks the body, row counts and batch sizes first
            coordinator.receive_setup(frame)
            assert host.config is not None
            body = json.loads(vl.decode_message(frame, host.public_key).body)
            live.guest_features = int(body["n_features"])
            live.guest_width = live.guest_features + 1 + int(host.config.compute_loss)
            return [ack]
        if kind is vl.MessageType.LINEAR_PREDICTOR:
            # loss="exact": the bank's [[z]] for the batch the host just sent, one per batch (the enclave also
            # refuses a second), to the enclave, which answers [[4 sigmoid(z)]] encrypted under its own key
            msg = vl.decode_message(frame, host.public_key)
            if host.stage is not vl.Stage.AWAITING_RESIDUALS or (msg.epoch, msg.batch) != (
                host.epoch,
                host.batch,
            ):
                raise vl.ProtocolStateError(
                    f"LINEAR_PREDICTOR for epoch {msg.epoch} batch {msg.batch}: the host awaits the residuals of "
                    f"epoch {host.epoch} batch {host.batch}"
                )
            if live.sigmoid_for == (msg.epoch, msg.batch):
                raise vl.ProtocolStateError(
                    f"LINEAR_PREDICTOR: a second one for epoch {msg.epoch} batch {msg.batch} (one per batch)"
                )
            answer = coordinator.sigmoid(frame)
            live.sigmoid_for = (msg.epoch, msg.batch)
            return [answer]
        if kind is vl.MessageType.RESIDUALS:
            if live.pending is not None:
                raise vl.ProtocolStateError(
                    "RESIDUALS: send your MASKED_GRADIENT of the previous batch first"
                )
            at = (host.epoch, host.batch)
            if host.stage is vl.Stage.AWAITING_RESIDUALS:  # the host's gradient reads the batch's features
                self._decide_batch(live.handle, live)
            masked = host.receive_residuals(frame)
            host.receive_decrypted(coordinator.decrypt(masked))
            live.pending = at
            return []
        if kind is vl.MessageType.MASKED_GRADIENT:
            # exactly one bank gradient per batch, of the batch the host just answered, of the declared width:
            # anything else would make the coordinator decrypt ciphertexts of the bank's choosing
            msg = vl.decode_message(frame, host.public_key)
            if live.pending is None or (msg.epoch, msg.batch) != live.pending:
                raise vl.ProtocolStateError(
                    f"MASKED_GRADIENT for epoch {msg.epoch} batch {msg.batch}: the host expects one only for the "
                    f"batch it answered last ({live.pending})"
                )
            if len(msg.values) != live.guest_width:
                raise vl.InvalidMessage(
                    f"MASKED_GRADIENT: {len(msg.values)} values, the SETUP declared {live.guest_width}"
                )
            answer = coordinator.decrypt(frame)
            live.pending = None
            return [answer]
        if kind is vl.MessageType.EPOCH_END:
            if live.pending is not None:
                raise vl.ProtocolStateError("EPOCH_END: send your MASKED_GRADIENT of the last batch first")
            ended = host.epoch
            host.receive_epoch_end(frame)
            coordinator.receive_epoch_end(frame)
            live.closed.append((ended, live.batches))
            live.batches = []
            return []
        raise vl.ProtocolStateError(f"the bank does not send {kind.name}")

    # --- finish ---------------------------------------------------------------------------------------

    def finish(self, training_id: str, *, actor: Actor, request_id: str | None = None) -> ModelRecord:
        """Decide consent again and register the model, or register nothing and say why."""
        live = self._session(training_id, actor)
        with live.lock:
            if not live.host.done:
                raise Conflict(
                    f"training {training_id} has not finished ({live.host.epoch} epochs so far): send EPOCH_END "
                    "with the stop flag, or train to the last epoch"
                )
            # registered first, the enclave job ended after: a failed transaction (a busy database) leaves the
            # session as it was, to finish again
            model = live.host.model()
            ref = _ref(training_id)
            try:
                with self.db.transaction() as s:
                    row = s.get(VerticalTraining, training_id)
                    assert row is not None
                    Gate(
                        self.policy,
                        Request(live.bank, live.subjects, live.fields, OPERATION, live.purpose),
                        job=ref,
                        actor=SERVICE,
                        request_id=request_id,
                        records=live.records,
                    ).confirm_all(  # the uses were spent at the first batch: decided again, nothing spent
                        s,
                        what=f"model:{KIND}",
                        refusal=(
                            "no longer allows training; no model was "
                            "registered — align again and start a new training"
                        ),
                        admitted=[live.admitted[u] for u in live.subjects],
                    )
                    record = self.models.register(
                        s,
                        kind=KIND,
                        name=row.name,
                        owners=[live.bank],
                        feature_schema=[f"platform:{n}" for n in live.names],
                        training={
                            "rows": len(live.subjects),
                            "host_features": len(live.names),
                            "guest_features": live.guest_features,
                            "epochs": row.epochs_done,
                            "converged": live.host.converged,
                            "loss": live.host.config.loss if live.host.config else None,
                            "decryption_requests": live.coordinator.decryptions,
                            "consents": list(live.consent_ids),
                            "training": training_id,
                            "coordinator": "enclave",
                            "quote_hash": row.quote_hash,
                        },
                        artifacts={
                            PLATFORM: {
                                "features": list(live.names),
                                "weights": model.weights.tolist(),
                                "mean": live.mean.tolist(),
                                "scale": live.scale.tolist(),
                                "fields": {k: list(v) for k, v in live.fields.items()},
                            }
                        },
                        ledger_indices=[row.admission_index],
                        actor=actor,
                        purpose=live.purpose,
                        request_id=request_id,
                    )
                    self.ledger.append(
                        s,
                        EntryDraft(
                            action="training.finish",
                            actor=SERVICE,
                            objects=(ref, ObjectRef("model", record.id)),
                            purpose=live.purpose,
                            released=(Release(to=live.bank, what=f"model:{KIND}"),),
                            detail={
                                "kind": KIND,
                                "epochs": record.training["epochs"],
                                "rows": len(live.subjects),
                            },
                        ),
                    )
                    row.state, row.model_id, row.updated_at = TrainingState.finished, record.id, utcnow()
            except Conflict as exc:
                self._fail(training_id, exc.message)
                raise
            try:  # end the coordinator's job: its summary is its own count of what it decrypted
                _release, plain = self.enclave.host().run(live.handle, params={}, output=live.output)
                log.info("training %s: the coordinator's summary %s", training_id, plain.get("summary"))
            except ee.EnclaveError as exc:
                log.warning(
                    "training %s: the coordinator's job did not end cleanly: %s", training_id, exc.message
                )
        with self._lock:
            self._live.pop(training_id, None)
        self.enclave.drop(live.handle)
        return record

    def cancel(self, training_id: str, *, actor: Actor) -> VerticalTraining:
        """The bank ends a running training: the enclave job and the host's state are dropped; nothing is
        registered (a ``training.fail`` entry says it was cancelled)."""
        self._session(training_id, actor)
        self._fail(training_id, "cancelled by the bank")
        with self.db.transaction(write=False) as s:
            row = self.get(s, training_id, org_id=actor.org_id, sees_everything=False)
            s.expunge(row)
        return row

    # --- scoring with the host half -------------------------------------------------------------------

    def contributions(
        self,
        model_id: str,
        *,
        actor: Actor,
        purpose: str,
        subjects: Sequence[str],
        bank_key: bytes,
        request_id: str | None = None,
    ) -> tuple[bytes, list[str], dict[str, int]]:
        """The host half's ``x_h w_h`` for consented subjects, encrypted under the bank's Paillier key: the
        SCORE_CONTRIBUTION message (empty if no subject could be scored), the subjects in it, the others by
        reason."""
        bank = actor.org_id
        assert bank is not None
        check_purpose(purpose)
        if not 1 <= len(subjects) <= MAX_CONTRIBUTIONS or len(set(subjects)) != len(subjects):
            raise InvalidInput(f"name 1 to {MAX_CONTRIBUTIONS:,} distinct subjects")
        for s_ in subjects:
            validate_uscc(s_)
        with self.db.transaction(write=False) as s:
            record = self.models.get(s, model_id, org_id=bank, sees_everything=False)
            if record.kind != KIND:
                raise InvalidInput(f"model {model_id} is a {record.kind} model: it has no host half")
            part = self.models.part(s, model_id, PLATFORM)
        try:
            key = pf.PublicKey.from_bytes(bank_key)
        except ProtocolError as exc:
            raise InvalidInput(f"public_key: {exc}") from None
        if key.bits < 2048:
            raise InvalidInput("the bank's Paillier key must have at least 2048 bits")
        names = tuple(part["features"])
        fields = {k: tuple(v) for k, v in part["fields"].items()}
        ref = ObjectRef("model", model_id)
        admission = admit_on_features(
            self.db,
            self.features,
            self.policy,
            bank=bank,
            purpose=purpose,
            operation="score",
            names=names,
            submitted_fields=fields,
            subjects=list(subjects),
            job=ref,
            actor=actor,
        )
        usable = admission.usable(subjects)
        allowed, found, rows, excluded = usable.allowed, usable.subjects, usable.rows, usable.left_out
        half = PlainModel(
            {n: float(w) for n, w in zip(names, part["weights"], strict=True)},
            0.0,
            {
                n: Prep(float(m), float(sc))
                for n, m, sc in zip(names, part["mean"], part["scale"], strict=True)
                if float(sc) > 0
            },
        )
        if self.model_policy is not None:  # before anything is computed for any subject
            table = admission.table
            sample = {n: table.values[n] for n in names}
            try:
                verify_model(half, self.model_policy, sample, FEATURE_RESOLUTION)
            except (ee.ModelRefused, ee.ProvisioningError) as exc:
                with self.db.transaction() as s:
                    self.ledger.append(
                        s,
                        EntryDraft(
                            action="model.refuse",
                            actor=actor,
                            objects=(ref, ObjectRef("org", bank)),
                            purpose=purpose,
                            request_id=request_id,
                            detail={
                                "path": "vertical.contributions",
                                "policy_digest": self.model_policy.digest(),
                                "reason": exc.message,
                            },
                        ),
                    )
                raise ModelRefused(
                    f"the host half of model {model_id} does not meet the published model policy "
                    f"({exc.message}); no contribution was computed"
                ) from None
        with self.db.transaction(write=False) as s:
            levels = granularity_of(s, {u: allowed[u].consent_id for u in found})
        coarse = [u for u in found if levels[u] != "score"]
        if coarse:  # a contribution is a number about the subject: only those who allowed scores get one
            keep = [i for i, u in enumerate(found) if levels[u] == "score"]
            found, rows = [found[i] for i in keep], [rows[i] for i in keep]
            excluded = {**excluded, "granularity": excluded.get("granularity", 0) + len(coarse)}
        if not found:
            return b"", [], excluded
        x = (admission.table.matrix(list(names), rows) - np.asarray(part["mean"])) / np.asarray(part["scale"])
        message = vl.host_score_contribution(vl.HostModel(np.asarray(part["weights"])), x, key)
        with self.db.transaction() as s:
            accounted = self.disclosures.spend(
                s,
                bank=bank,
                subjects=found,
                model_digest=f"vertical:{model_id}",
                granularity=dict.fromkeys(found, "score"),
            )
            if accounted.refused:  # over budget: left out (as on the encrypted path), the rest computed again
                keep = [i for i, u in enumerate(found) if u not in accounted.refused]
                excluded = {**excluded, "disclosure_budget": len(found) - len(keep)}
                found, rows = [found[i] for i in keep], [rows[i] for i in keep]
                if not found:
                    return b"", [], excluded
                x = (admission.table.matrix(list(names), rows) - np.asarray(part["mean"])) / np.asarray(
                    part["scale"]
                )
                message = vl.host_score_contribution(vl.HostModel(np.asarray(part["weights"])), x, key)
            Gate(
                self.policy,
                Request(bank, tuple(found), fields, "score", purpose),
                job=ref,
                actor=actor,
                request_id=request_id,
                records=admission.records,
            ).release_all(
                s,
                what=f"{KIND}:contribution",
                admitted=[allowed[s_] for s_ in found],
                refusal="changed meanwhile; nothing was released",
            )
        return message, found, excluded

    def close(self) -> None:
        with self._lock:
            handles = list(self._live)
            self._live.clear()
        for h in handles:
            self.enclave.drop(h)
