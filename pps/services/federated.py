"""Horizontal federated training across banks: FedAvg rounds over secure aggregation, as persisted state.

A bank (the initiator) creates a **federation**: the participating banks (organisation ids, itself included),
the model kind (``horizontal_lr`` or ``horizontal_mlp``), the shared feature schema, the number of rounds, the
secure-aggregation threshold, local epochs and the clipping norm. Every other participant **accepts**,
declaring the purpose ``joint_model_training``; when all have, round 1 starts.

Each round runs :mod:`protocols.secagg` (advertise keys → share keys → masked input → unmask → done): every
bank fetches the round's global model and what it needs for the current phase (``GET``), trains locally on its
own portfolio and posts its messages. The service validates each message (:class:`protocols.secagg.SecAggServer`
is the one validation point), stores it, and closes a phase when every bank still in it has posted — or, once
the phase deadline has passed, on any participant's ``advance``, with the banks heard from: the others are the
drop-outs. Nobody, the initiator included, may close a phase early while a bank still in it has not posted:
whoever closes a phase chooses the survivors. With fewer than ``max(threshold, 3)`` banks left the round and the
federation are **aborted** (never averaged over a partial set, and never over two banks, either of which could
solve the aggregate for the other's update); after the unmask phase the weighted sum is decoded and
``global += sum(w_i * delta_i) / sum(w_i)``.

Round 0 and validation (``standardise``, ``validation_fraction``, ``patience``, ``min_delta``; issue 16): a
standardising federation starts with a **statistics round** whose inputs carry only a tail of exact integers —
each bank's rows, positives, feature sums and sums of squares — from which the service computes the joint means
and scales (``pps_wire.federated.joint_standardisation``) and starts round 1 with the bias at the base rate's
log-odds; every bank trains on standardised features and the registered model is folded back onto raw ones. Each
training round's tail is the banks' validation log-loss of the round's global model (sum, rows, positives):
early stopping registers the best round's model (``converged: true``); a loss that blows up, or a model at its
round limit no better than the base rate, aborts the federation with the cause and the fix and no model. The
outcome (rounds run, why it stopped, ``converged``) is on the federation and in the registry's training record.

Enclave mode (``aggregation="enclave"``, issue 24 item 5): a round has one phase, ``masked_input``; each bank
provisions ``{terms, update, weight, tail}`` to the attested enclave under a quote it verified
(:meth:`submit_enclave`; the initiator also the round's terms and output policy) and the enclave's
``fedavg_aggregate`` job refuses malformed or off-terms updates by name, clips the rest to ``clip_norm`` and
releases only the sum — so one bank moves the model by at most its clipped, weighted share. The safe-room learns
what secure aggregation gives it, plus how many updates were clipped and which banks were refused; the enclave
sees each update.

Persistence: the federation, its participants, each round (phase, the global model it started from, its
result) and every accepted message are rows; the server's protocol state is rebuilt from the stored messages on
every request, so a restarted server continues the round where it was (or aborts it once its deadline has
passed with too few banks). A phase is closed and the aggregate computed inside one transaction. A participant's
view (``GET``) reads only the small key and share messages it needs; the masked inputs (``8 * (n_params + 1)``
bytes per bank) are read only when a bank posts a message or a phase is closed (the state is replayed then).

Consent: horizontal training uses the banks' *own* portfolios and labels, so no platform data and no subject
consent is involved; each bank declares the purpose ``joint_model_training`` and only participants can see or
act on a federation (others get ``NotFound``).

Who learns what: the safe-room learns per round which banks took part and dropped out, the total sample count,
and the weighted mean update (hence the global models) — not any bank's update (see :mod:`protocols.secagg`
for the assumptions: semi-honest server, collusion with fewer than ``threshold`` banks). The participating
banks learn the global models, each round's survivors (hence their number, at least 3) and total weight: a bank
that subtracts its own contribution learns the weighted sum of at least two other banks' updates, never one
bank's (unless it colludes with all survivors but one). The clients' secrets never reach the server.

Ledger: ``federation.create``, ``federation.accept`` (each participation), ``federation.round.start``,
``federation.round.submit`` (each message: round, stage, size), ``federation.round.done`` (survivors,
drop-outs, total weight; round 0: rows and constant features; a training round: validation rows and loss in
millionths), ``federation.round.aborted``, ``federation.done`` (rounds, how training stopped, ``converged``). No
floats in entries.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from pps.errors import Forbidden, InvalidInput, NotFound
from pps.governance.consent import check_purpose
from pps.infra.executor import Executor
from pps.infra.storage.db import Database
from pps.infra.storage.tables import (
    Federation,
    FederationMessage,
    FederationParticipant,
    FederationRound,
    FederationState,
    LedgerEntryObject,
    Organization,
    Role,
    RoundPhase,
    new_id,
    utcnow,
)
from pps.ledger.entry import Actor, EntryDraft, ObjectRef
from pps.ledger.store import Ledger
from pps_wire.federated import (
    MIN_VALIDATION_CLASS,
    MODEL_KINDS,
    federation_model,
    fold_standardisation,
    joint_standardisation,
    judges,
    make_model,
    mean_loss,
    model_hyper,
    prior_loss,
    round_tail,
    with_prior_bias,
)
from pps_wire.federated import (
    best_round as best_so_far,
)
from protocols.errors import InvalidParameters, TrainingDiverged
from protocols.secagg import (
    MIN_SURVIVORS,
    STAGE_OF,
    InvalidSecAggMessage,
    RoundInfo,
    SecAggAborted,
    SecAggParams,
    SecAggServer,
    SecAggStageError,
    Stage,
    decode_frame,
    peek_type,
    survivors_frame,
)

PURPOSE: Final = "joint_model_training"
MAX_PARTICIPANTS: Final = 50
MAX_FEATURES: Final = 1000
MAX_ROUNDS: Final = 200
MAX_PARAMS: Final = 1 << 20
PHASE_OF_STAGE: Final = {
    Stage.ADVERTISE_KEYS: RoundPhase.advertise_keys,
    Stage.SHARE_KEYS: RoundPhase.share_keys,
    Stage.MASKED_INPUT: RoundPhase.masked_input,
    Stage.UNMASK: RoundPhase.unmask,
    Stage.DONE: RoundPhase.done,
}
STAGE_OF_PHASE: Final = {v: k for k, v in PHASE_OF_STAGE.items()}
AGGREGATIONS: Final = ("secagg", "enclave")
ENCLAVE_JOB: Final = "fedavg_aggregate"
CLIPPED_ROUNDS: Final = 3
"""Rounds in a row whose averaged update is (nearly) as long as ``clip_norm`` before training stops as divergent:
a weighted mean of updates each clipped to ``clip_norm`` is that long only if (nearly) every bank's update was
clipped and they all point the same way — training is being held back by clipping, not converging."""
CLIPPED_FRACTION: Final = 0.98

Registry = Any
"""``pps.services.registry``'s service: ``register(session, *, kind, name, owners, ...) -> ModelRecord``"""


@dataclass(frozen=True)
class FederationSpec:
    """A federation as the initiator asks for it; :meth:`check` validates all of it before anything is read."""

    name: str
    participants: tuple[str, ...]
    kind: str
    feature_schema: tuple[str, ...]
    rounds: int
    threshold: int
    local_epochs: int = 1
    clip_norm: float = 5.0
    learning_rate: float = 0.1
    l2: float = 1e-4
    batch_size: int = 64
    hidden: int = 16
    seed: int = 0
    phase_timeout_s: int = 600
    standardise: bool = True
    validation_fraction: float = 0.2
    patience: int = 5
    min_delta: float = 1e-4
    aggregation: str = "secagg"
    """``secagg`` (pairwise masks: the server learns only the sum) or ``enclave`` (each bank provisions its update to
    the attested enclave, which refuses or clips it and releases only the sum: one bank's influence is bounded)"""
    purpose: str = PURPOSE
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> SecAggParams:
        if not 0 < len(self.name.strip()) <= 200:
            raise InvalidInput("name needs 1 to 200 characters")
        if check_purpose(self.purpose) != PURPOSE:
            raise InvalidInput(f"horizontal training is for the purpose {PURPOSE!r}, not {self.purpose!r}")
        if self.kind not in MODEL_KINDS:
            raise InvalidInput(f"kind must be one of {', '.join(MODEL_KINDS)}")
        if (
            len(set(self.participants)) != len(self.participants)
            or not MIN_SURVIVORS <= len(self.participants) <= MAX_PARTICIPANTS
        ):
            raise InvalidInput(
                f"participants must be {MIN_SURVIVORS} to {MAX_PARTICIPANTS} distinct bank organisation ids: "
                f"a round is averaged over at least {MIN_SURVIVORS} banks, so that no bank can solve the result "
                "for another's update"
            )
        names = self.feature_schema
        if not 1 <= len(names) <= MAX_FEATURES or len(set(names)) != len(names):
            raise InvalidInput(f"feature_schema must list 1 to {MAX_FEATURES} distinct feature names")
        if not all(isinstance(n, str) and 0 < len(n) <= 64 for n in names):
            raise InvalidInput("feature names must be strings of 1 to 64 characters")
        for name, v, lo, hi in (
            ("rounds", self.rounds, 1, MAX_ROUNDS),
            ("local_epochs", self.local_epochs, 1, 100),
            ("batch_size", self.batch_size, 1, 100_000),
            ("hidden", self.hidden, 1, 1024),
            ("seed", self.seed, 0, 2**31 - 1),
            ("phase_timeout_s", self.phase_timeout_s, 1, 7 * 24 * 3600),
            ("patience", self.patience, 1, MAX_ROUNDS),
        ):
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise InvalidInput(f"{name} must be an integer in [{lo}, {hi}]")
        for name, f in (
            ("learning_rate", self.learning_rate),
            ("l2", self.l2),
            ("clip_norm", self.clip_norm),
        ):
            if not math.isfinite(f) or f < 0 or (f == 0 and name != "l2") or f > 1e6:
                raise InvalidInput(
                    f"{name} must be a finite number in {'[0' if name == 'l2' else '(0'}, 1e6]"
                )
        if self.aggregation not in AGGREGATIONS:
            raise InvalidInput(f"aggregation must be one of {', '.join(AGGREGATIONS)}")
        if not isinstance(self.standardise, bool):
            raise InvalidInput("standardise must be true or false")
        if not 0.0 <= self.validation_fraction <= 0.5:
            raise InvalidInput(
                "validation_fraction must be in [0, 0.5] (0: no validation loss, no early stopping)"
            )
        if not math.isfinite(self.min_delta) or not 0.0 <= self.min_delta <= 1.0:
            raise InvalidInput("min_delta must be in [0, 1]")
        n_params = self.n_params()
        if n_params > MAX_PARAMS:
            raise InvalidInput(f"the model would have {n_params} parameters; at most {MAX_PARAMS}")
        try:
            return SecAggParams(
                n=len(self.participants),
                threshold=self.threshold,
                dim=n_params,
                clip_norm=float(self.clip_norm),
            )
        except InvalidParameters as exc:  # the federation's own terms (a threshold that is not a majority)
            raise InvalidInput(exc.message) from None

    def n_params(self) -> int:
        k = len(self.feature_schema)
        return k + 1 if self.kind == "horizontal_lr" else k * self.hidden + 2 * self.hidden + 1

    def config(self) -> dict[str, Any]:
        return {
            "clip_norm": float(self.clip_norm),
            "learning_rate": float(self.learning_rate),
            "l2": float(self.l2),
            "batch_size": self.batch_size,
            "hidden": self.hidden,
            "seed": self.seed,
            "phase_timeout_s": self.phase_timeout_s,
            "standardise": self.standardise,
            "validation_fraction": float(self.validation_fraction),
            "patience": self.patience,
            "min_delta": float(self.min_delta),
            "aggregation": self.aggregation,
        }


def _enclave_mode(fed: Federation) -> bool:
    return bool(json.loads(fed.config_json).get("aggregation") == "enclave")


def _handle(fed: Federation, round_no: int) -> str:
    return f"fed-{fed.id[-24:]}-{round_no}"


def _weights_bytes(w: np.ndarray[Any, Any]) -> bytes:
    return np.asarray(w, dtype="<f8").tobytes()


def _weights(data: bytes) -> np.ndarray[Any, Any]:
    return np.frombuffer(data, dtype="<f8").astype(np.float64)


class FederatedService:
    def __init__(
        self,
        db: Database,
        ledger: Ledger,
        *,
        registry: Registry | None = None,
        executor: Executor | None = None,
        enclave: Any = None,
    ) -> None:
        self.db = db
        self.ledger = ledger
        self.registry = registry
        self.executor = executor
        self.enclave = enclave
        """``pps.services.enclave.EnclaveService``: runs the ``fedavg_aggregate`` job of enclave-mode federations"""
        """where unmasking expands the banks' masks (``None`` or in-process: here)"""
        self.clock: Callable[[], datetime] = utcnow

    # --- lookups -------------------------------------------------------------------------------------------

    def _load(
        self, session: Session, fed_id: str, org_id: str, *, lock: bool = False
    ) -> tuple[Federation, FederationParticipant]:
        """The federation and the caller's participation; anyone else gets NotFound."""
        part = session.get(FederationParticipant, (fed_id, org_id))
        if part is None:
            raise NotFound(f"no federation {fed_id} with you as a participant")
        query = select(Federation).where(Federation.id == fed_id)
        if lock:
            query = query.with_for_update()
        fed = session.scalars(query).one()
        return fed, part

    def _participants(self, session: Session, fed_id: str) -> list[FederationParticipant]:
        return list(
            session.scalars(
                select(FederationParticipant)
                .where(FederationParticipant.federation_id == fed_id)
                .order_by(FederationParticipant.position)
            )
        )

    def _params(self, fed: Federation, round_no: int) -> SecAggParams:
        config = json.loads(fed.config_json)
        n = len(json.loads(config["participants_order"])) if "participants_order" in config else 0
        k = len(json.loads(fed.feature_schema_json))
        return SecAggParams(
            n=n,
            threshold=fed.threshold,
            dim=fed.n_params,
            clip_norm=config["clip_norm"],
            tail=round_tail(k, round_no, config),
        )

    def _info(self, fed: Federation, round_no: int) -> RoundInfo:
        return RoundInfo(fed.id, round_no, self._params(fed, round_no))

    def _round(self, session: Session, fed: Federation) -> FederationRound | None:
        """The round in progress (or the last one); None while inviting. Round 0 is the statistics round."""
        if fed.state is FederationState.inviting:
            return None
        return session.get(FederationRound, (fed.id, fed.current_round))

    def _server(
        self, session: Session, fed: Federation, rnd: FederationRound, *, before: Stage | None = None
    ) -> SecAggServer:
        """Rebuild the protocol state of a round from the stored messages (after a restart too).

        By default up to the round's current stage, with the messages received in it so far; with ``before``,
        only the stages before that one, each closed (and no message of a later stage is read)."""
        srv = SecAggServer(self._info(fed, rnd.round_no))
        target = STAGE_OF_PHASE.get(rnd.phase, Stage.DONE)
        last = min(int(target), int(Stage.UNMASK)) if before is None else min(int(before), int(target)) - 1
        stored = session.scalars(
            select(FederationMessage)
            .where(
                FederationMessage.federation_id == fed.id,
                FederationMessage.round_no == rnd.round_no,
                FederationMessage.stage <= last,
            )
            .order_by(FederationMessage.stage, FederationMessage.created_at, FederationMessage.bank_org_id)
        ).all()
        for stage in range(last + 1):
            for m in stored:
                if m.stage == stage:
                    srv.receive(m.payload)
            if stage < target:
                srv.close_stage()
        return srv

    def _senders(self, session: Session, fed: Federation, rnd: FederationRound) -> dict[Stage, set[int]]:
        """The positions of the banks that posted each stage's message in this round (no payload is read).

        A stage takes messages only while it is open, so for a closed stage these are the banks it closed with."""
        position = {org: pos for pos, org in enumerate(self._order(fed), start=1)}
        rows = session.execute(
            select(FederationMessage.stage, FederationMessage.bank_org_id).where(
                FederationMessage.federation_id == fed.id, FederationMessage.round_no == rnd.round_no
            )
        ).all()
        out: dict[Stage, set[int]] = {stage: set() for stage in Stage}
        for stage, org in rows:
            out[Stage(stage)].add(position[org])
        return out

    # --- create and accept -----------------------------------------------------------------------------------

    def create(
        self, session: Session, spec: FederationSpec, *, actor: Actor, request_id: str | None = None
    ) -> Federation:
        params = spec.check()
        if actor.org_id not in spec.participants:
            raise InvalidInput("the initiating bank must be one of the participants")
        orgs = session.scalars(select(Organization).where(Organization.id.in_(spec.participants))).all()
        found = {o.id: o for o in orgs}
        for org_id in spec.participants:
            org = found.get(org_id)
            if org is None or org.role is not Role.bank or org.disabled_at is not None:
                raise InvalidInput(f"participant {org_id} is not an active bank")
        now = self.clock()
        order = sorted(spec.participants)
        config = {**spec.config(), "participants_order": json.dumps(order)}
        fed = Federation(
            id=new_id("fed"),
            initiator_org_id=actor.org_id,
            name=spec.name.strip(),
            kind=spec.kind,
            feature_schema_json=json.dumps(list(spec.feature_schema)),
            config_json=json.dumps(config, sort_keys=True),
            n_params=params.dim,
            rounds=spec.rounds,
            threshold=spec.threshold,
            local_epochs=spec.local_epochs,
            state=FederationState.inviting,
            current_round=0,
            created_at=now,
        )
        session.add(fed)
        session.flush()
        for pos, org_id in enumerate(order, start=1):
            mine = org_id == actor.org_id
            session.add(
                FederationParticipant(
                    federation_id=fed.id,
                    bank_org_id=org_id,
                    position=pos,
                    purpose=PURPOSE if mine else None,
                    accepted_at=now if mine else None,
                )
            )
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="federation.create",
                actor=actor,
                objects=(ObjectRef("federation", fed.id),),
                purpose=PURPOSE,
                request_id=request_id,
                detail={
                    "kind": spec.kind,
                    "participants": order,
                    "rounds": spec.rounds,
                    "threshold": spec.threshold,
                    "local_epochs": spec.local_epochs,
                    "n_params": params.dim,
                    "features": len(spec.feature_schema),
                },
            ),
        )
        return fed

    def accept(
        self, session: Session, fed_id: str, *, purpose: str, actor: Actor, request_id: str | None = None
    ) -> Federation:
        assert actor.org_id is not None
        fed, part = self._load(session, fed_id, actor.org_id, lock=True)
        if check_purpose(purpose) != PURPOSE:
            raise InvalidInput(
                f"a bank joins horizontal training for the purpose {PURPOSE!r}, not {purpose!r}"
            )
        if fed.state is not FederationState.inviting:
            raise SecAggStageError(
                f"federation {fed.id} is {fed.state.value}; it no longer takes acceptances"
            )
        if part.accepted_at is not None:
            raise SecAggStageError(f"you already accepted federation {fed.id}")
        part.purpose, part.accepted_at = purpose, self.clock()
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="federation.accept",
                actor=actor,
                objects=(ObjectRef("federation", fed.id),),
                purpose=PURPOSE,
                request_id=request_id,
                detail={"position": part.position},
            ),
        )
        if all(p.accepted_at is not None for p in self._participants(session, fed.id)):
            fed.state = FederationState.running
            spec_kind = MODEL_KINDS[fed.kind]
            config = json.loads(fed.config_json)
            k = len(json.loads(fed.feature_schema_json))
            initial = make_model(spec_kind, k, **model_hyper(fed.kind, config, fed.local_epochs)).get_flat()
            first = 0 if config.get("standardise") else 1  # round 0: the joint feature statistics
            self._start_round(session, fed, first, initial, actor=actor, request_id=request_id)
        return fed

    def _start_round(
        self,
        session: Session,
        fed: Federation,
        round_no: int,
        weights: np.ndarray[Any, Any],
        *,
        actor: Actor,
        request_id: str | None,
    ) -> None:
        now = self.clock()
        timeout = json.loads(fed.config_json)["phase_timeout_s"]
        fed.current_round = round_no
        session.add(
            FederationRound(
                federation_id=fed.id,
                round_no=round_no,
                phase=RoundPhase.masked_input if _enclave_mode(fed) else RoundPhase.advertise_keys,
                global_weights=_weights_bytes(weights),
                phase_deadline=now + timedelta(seconds=timeout),
                started_at=now,
            )
        )
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="federation.round.start",
                actor=actor,
                objects=(ObjectRef("federation", fed.id),),
                purpose=PURPOSE,
                request_id=request_id,
                detail={"round": round_no},
            ),
        )

    # --- rounds --------------------------------------------------------------------------------------------

    def submit(
        self, session: Session, fed_id: str, data: bytes, *, actor: Actor, request_id: str | None = None
    ) -> Federation:
        """Accept one secure-aggregation message from a participant; closes the phase when it is complete."""
        assert actor.org_id is not None
        fed, part = self._load(session, fed_id, actor.org_id, lock=True)
        if _enclave_mode(fed):
            raise SecAggStageError(
                "this federation aggregates in the enclave: provision your update to it and post it to "
                "/v1/federations/{id}/enclave-input"
            )
        mtype = peek_type(data)
        if mtype not in STAGE_OF:
            raise InvalidSecAggMessage(
                f"{mtype.name} is a server message; banks send their own stages' messages"
            )
        rnd = self._running_round(session, fed)
        srv = self._server(session, fed, rnd)
        frame = decode_frame(srv.info, data, mtype)  # round and session first: a replay says so
        if frame.sender != part.position:
            raise SecAggStageError(
                f"the message says it is from bank {frame.sender}; you are bank {part.position} of this federation"
            )
        if self._overdue(rnd):
            raise SecAggStageError(
                "the phase's deadline has passed (late message); it closes with the banks heard from: call advance"
            )
        srv.receive(data)
        entry = self.ledger.append(
            session,
            EntryDraft(
                action="federation.round.submit",
                actor=actor,
                objects=(ObjectRef("federation", fed.id),),
                purpose=PURPOSE,
                request_id=request_id,
                detail={"round": rnd.round_no, "stage": mtype.name.lower(), "bytes": len(data)},
            ),
        )
        session.add(
            FederationMessage(
                federation_id=fed.id,
                round_no=rnd.round_no,
                stage=int(STAGE_OF[mtype]),
                bank_org_id=actor.org_id,
                payload=bytes(data),
                ledger_index=entry.index,
                created_at=self.clock(),
            )
        )
        session.flush()
        if srv.received() == self._expected(srv):
            self._close(session, fed, rnd, srv, actor=actor, request_id=request_id)
        return fed

    def advance(
        self, session: Session, fed_id: str, *, actor: Actor, request_id: str | None = None
    ) -> Federation:
        """Close the current phase with the banks heard from (the others are drop-outs).

        Any participant may, once the phase's deadline has passed. Before it, a phase closes by itself when every
        bank still in it has posted, and the initiator may close it only then: whoever closes a phase early
        chooses the survivors, and closing it on the initiator and one other bank would hand the initiator that
        bank's update. With fewer than ``max(threshold, 3)`` banks left the round is aborted.
        """
        assert actor.org_id is not None
        fed, _ = self._load(session, fed_id, actor.org_id, lock=True)
        rnd = self._running_round(session, fed)
        if _enclave_mode(fed):
            posted = self._senders(session, fed, rnd)[Stage.MASKED_INPUT]
            if not self._overdue(rnd):
                missing = sorted(set(range(1, len(self._order(fed)) + 1)) - posted)
                if missing:
                    order = self._order(fed)
                    raise SecAggStageError(
                        f"the round is open until its deadline {rnd.phase_deadline.isoformat()}: bank(s) "
                        f"{', '.join(order[i - 1] for i in missing)} have not provisioned their update",
                        details={"phase": rnd.phase.value, "waiting_for": [order[i - 1] for i in missing]},
                    )
                if actor.org_id != fed.initiator_org_id:
                    raise Forbidden("only the initiating bank may close a phase before its deadline")
            self._close_enclave(session, fed, rnd, actor=actor, request_id=request_id)
            return fed
        srv = self._server(session, fed, rnd)
        if not self._overdue(rnd):
            missing = sorted(self._expected(srv) - srv.received())
            if missing:
                order = self._order(fed)
                raise SecAggStageError(
                    f"the {rnd.phase.value} phase is open until its deadline "
                    f"{rnd.phase_deadline.isoformat()}: bank(s) {', '.join(order[i - 1] for i in missing)} still "
                    "in the round have not posted; it closes by itself when they have, and after the deadline "
                    "any participant may close it without them",
                    details={"phase": rnd.phase.value, "waiting_for": [order[i - 1] for i in missing]},
                )
            if actor.org_id != fed.initiator_org_id:
                raise Forbidden("only the initiating bank may close a phase before its deadline")
        self._close(session, fed, rnd, srv, actor=actor, request_id=request_id)
        return fed

    # --- enclave mode --------------------------------------------------------------------------------------

    def terms(self, fed: Federation, round_no: int) -> dict[str, Any]:
        """The round's terms as every bank provisions them with its update (the enclave refuses an update made
        for other terms, so no one — the initiator or the host — can loosen the clip for one bank)."""
        p = self._params(fed, round_no)
        return {
            "federation": fed.id,
            "round": round_no,
            "dim": p.dim,
            "clip_norm": p.clip_norm,
            "max_weight": p.max_weight,
            "tail": p.tail,
            "min_banks": p.min_survivors,
        }

    def submit_enclave(
        self,
        session: Session,
        fed_id: str,
        *,
        update: tuple[bytes, bytes],
        terms: tuple[bytes, bytes] | None,
        actor: Actor,
        request_id: str | None = None,
    ) -> Federation:
        """A bank's update, HPKE-encrypted to the enclave under a quote it verified (``(quote_hash, ciphertext)``),
        handed straight to the enclave (slot ``bank<position>``); the initiator also provisions the round's terms
        and the output policy (slot ``terms``). Closes the round when every bank has posted."""
        assert actor.org_id is not None
        fed, part = self._load(session, fed_id, actor.org_id, lock=True)
        if not _enclave_mode(fed):
            raise SecAggStageError("this federation uses secure aggregation: post your messages instead")
        rnd = self._running_round(session, fed)
        if self._overdue(rnd):
            raise SecAggStageError(
                "the round's deadline has passed (late update); it closes with the banks heard from: call advance"
            )
        if part.position in self._senders(session, fed, rnd)[Stage.MASKED_INPUT]:
            raise SecAggStageError(
                f"bank {part.position} already provisioned its update for this round (replay)"
            )
        is_initiator = actor.org_id == fed.initiator_org_id
        if (terms is not None) != is_initiator:
            raise InvalidInput(
                "the initiating bank provisions the round's terms with its update; no other bank does"
            )
        if self.enclave is None:
            raise InvalidInput("this safe-room runs no enclave")
        host = self.enclave.running_host()
        handle = _handle(fed, rnd.round_no)
        receipts: list[dict[str, Any]] = []
        if terms is not None:
            receipts.append(
                host.provision(
                    handle, job=ENCLAVE_JOB, slot="terms", quote_hash=terms[0], ciphertext=terms[1]
                )
            )
            if receipts[0].get("output") != {"release": ["aggregate"], "recipient_key": None}:
                self.enclave.drop(handle)
                raise InvalidInput("the round's output policy must release the plain aggregate only")
        receipts.append(
            host.provision(
                handle,
                job=ENCLAVE_JOB,
                slot=f"bank{part.position}",
                quote_hash=update[0],
                ciphertext=update[1],
            )
        )
        entry = self.ledger.append(
            session,
            EntryDraft(
                action="federation.round.submit",
                actor=actor,
                objects=(ObjectRef("federation", fed.id),),
                purpose=PURPOSE,
                request_id=request_id,
                detail={
                    "round": rnd.round_no,
                    "stage": "enclave_input",
                    "bytes": len(update[1]),
                    "sha256": receipts[-1]["sha256"],
                    "terms": terms is not None,
                },
            ),
        )
        session.add(
            FederationMessage(
                federation_id=fed.id,
                round_no=rnd.round_no,
                stage=int(Stage.MASKED_INPUT),
                bank_org_id=actor.org_id,
                payload=json.dumps({"receipts": receipts, "instance": host.starts}).encode(),
                ledger_index=entry.index,
                created_at=self.clock(),
            )
        )
        session.flush()
        if self._senders(session, fed, rnd)[Stage.MASKED_INPUT] == set(range(1, len(self._order(fed)) + 1)):
            self._close_enclave(session, fed, rnd, actor=actor, request_id=request_id)
        return fed

    def _close_enclave(
        self, session: Session, fed: Federation, rnd: FederationRound, *, actor: Actor, request_id: str | None
    ) -> None:
        """Run the round's ``fedavg_aggregate`` job on what was provisioned; abort if it cannot run."""
        from enclave_sim import errors as ee

        stored = session.scalars(
            select(FederationMessage).where(
                FederationMessage.federation_id == fed.id, FederationMessage.round_no == rnd.round_no
            )
        ).all()
        output = None
        for m in stored:
            for receipt in json.loads(m.payload)["receipts"]:
                if receipt.get("slot") == "terms":
                    output = receipt["output"]
        if output is None or self.enclave is None:
            if self.enclave is not None:
                self.enclave.drop(_handle(fed, rnd.round_no))  # the banks' updates leave the enclave unused
            self._abort(
                session,
                fed,
                rnd,
                "the initiating bank never provisioned the round's terms; nothing was aggregated",
                actor=actor,
                request_id=request_id,
            )
            return
        try:
            _, plain = self.enclave.running_host().run(_handle(fed, rnd.round_no), params={}, output=output)
        except ee.EnclaveError as exc:
            self._abort(
                session,
                fed,
                rnd,
                f"the enclave aggregated nothing: {exc.message}",
                actor=actor,
                request_id=request_id,
            )
            return
        agg = plain["aggregate"]
        if agg["terms"] != self.terms(fed, rnd.round_no):
            self._abort(
                session,
                fed,
                rnd,
                "the enclave aggregated under other terms than the round's",
                actor=actor,
                request_id=request_id,
            )
            return
        total = np.asarray(agg["sum"], dtype=np.float64)
        refused = {self._order(fed)[int(i) - 1]: why for i, why in agg["refused"].items()}
        self._complete(
            session,
            fed,
            rnd,
            total,
            int(agg["weight"]),
            [int(v) for v in agg["tail"]],
            set(agg["banks"]),
            {"aggregation": "enclave", "clipped": int(agg["clipped"]), "refused": sorted(refused)},
            actor=actor,
            request_id=request_id,
        )
        metrics = json.loads(rnd.metrics_json) if rnd.metrics_json else {}
        rnd.metrics_json = json.dumps({**metrics, "clipped": int(agg["clipped"]), "refused": refused})

    def _running_round(self, session: Session, fed: Federation) -> FederationRound:
        if fed.state is FederationState.aborted:
            raise SecAggAborted(f"federation {fed.id} was aborted: {fed.abort_reason}")
        if fed.state is not FederationState.running:
            raise SecAggStageError(f"federation {fed.id} is {fed.state.value}, not running")
        rnd = self._round(session, fed)
        assert rnd is not None
        return rnd

    def _overdue(self, rnd: FederationRound) -> bool:
        return self.clock() >= rnd.phase_deadline

    @staticmethod
    def _expected(srv: SecAggServer) -> set[int]:
        return {
            Stage.ADVERTISE_KEYS: set(range(1, srv.params.n + 1)),
            Stage.SHARE_KEYS: srv.u1,
            Stage.MASKED_INPUT: srv.u2,
            Stage.UNMASK: srv.u3,
        }[srv.stage]

    def _close(
        self,
        session: Session,
        fed: Federation,
        rnd: FederationRound,
        srv: SecAggServer,
        *,
        actor: Actor,
        request_id: str | None,
    ) -> None:
        try:
            stage = srv.close_stage()
            if stage is Stage.DONE:
                total, weight = srv.aggregate(
                    executor=None if self.executor is None or self.executor.in_process else self.executor
                )
        except (SecAggAborted, InvalidSecAggMessage) as exc:
            self._abort(session, fed, rnd, exc.message, actor=actor, request_id=request_id)
            return
        now = self.clock()
        if stage is not Stage.DONE:
            rnd.phase = PHASE_OF_STAGE[stage]
            rnd.phase_deadline = now + timedelta(seconds=json.loads(fed.config_json)["phase_timeout_s"])
            return
        assert srv.tail_total is not None
        self._complete(
            session, fed, rnd, total, weight, srv.tail_total, srv.u3, {}, actor=actor, request_id=request_id
        )

    def _complete(
        self,
        session: Session,
        fed: Federation,
        rnd: FederationRound,
        total: np.ndarray[Any, Any],
        weight: int,
        tail: list[int],
        summed: set[int],
        extra: dict[str, Any],
        *,
        actor: Actor,
        request_id: str | None,
    ) -> None:
        """A round's aggregate is in (``sum w_i x_i``, ``sum w_i``, the tail's sums over the banks ``summed``):
        statistics or the FedAvg step, validation, early stopping; then the next round or the end."""
        now = self.clock()
        order = self._order(fed)
        survivors = [order[i - 1] for i in sorted(summed)]
        dropped = [order[i - 1] for i in range(1, len(order) + 1) if i not in summed]
        detail: dict[str, Any] = {
            "round": rnd.round_no,
            "survivors": survivors,
            "dropped": dropped,
            "total_weight": weight,
            **extra,
        }
        config = json.loads(fed.config_json)
        names = json.loads(fed.feature_schema_json)
        stop: dict[str, Any] | None = None
        limit: dict[str, Any] = {}
        if rnd.round_no == 0:  # federated standardisation: the joint statistics; the bias at the base rate
            try:
                stats = joint_standardisation(tail, len(names))
            except ValueError as exc:
                self._abort(
                    session,
                    fed,
                    rnd,
                    f"the statistics round failed: {exc}",
                    actor=actor,
                    request_id=request_id,
                )
                return
            stats["constant"] = [names[j] for j in stats["constant"]]
            new = with_prior_bias(_weights(rnd.global_weights), stats)
            rnd.metrics_json = json.dumps({"statistics": stats})
            detail.update(statistics=True, rows=stats["rows"], constant_features=stats["constant"])
        else:
            new = _weights(rnd.global_weights) + total / weight
            diverged = self._divergence(session, fed, rnd, total / weight)
            if diverged is None and len(tail) == 3 and tail[1] > 0:
                metrics = {
                    "validation_loss": mean_loss(tail),
                    "validation_rows": tail[1],
                    "validation_positives": tail[2],
                    "prior_loss": prior_loss(tail),
                }
                rnd.metrics_json = json.dumps(metrics)
                detail.update(
                    validation_rows=tail[1], validation_loss_micro=round(1e6 * metrics["validation_loss"])
                )
                diverged, stop = self._early_stop(session, fed, rnd, metrics, config)
            if diverged is None and stop is None and rnd.round_no >= fed.rounds:
                session.flush()
                limit = self._round_limit(session, fed, rnd)
                diverged = limit.pop("underfit", None)
            if diverged is not None:
                self._abort(session, fed, rnd, diverged, actor=actor, request_id=request_id, diverged=True)
                return
        rnd.phase, rnd.ended_at = RoundPhase.done, now
        rnd.result_weights, rnd.total_weight = _weights_bytes(new), weight
        rnd.survivors_json = json.dumps(survivors)
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="federation.round.done",
                actor=actor,
                objects=(ObjectRef("federation", fed.id),),
                purpose=PURPOSE,
                request_id=request_id,
                detail=detail,
            ),
        )
        if stop is not None:
            best = session.get(FederationRound, (fed.id, stop["best_round"]))
            assert best is not None
            self._finish(
                session, fed, _weights(best.global_weights), stop, actor=actor, request_id=request_id
            )
        elif rnd.round_no < fed.rounds:
            self._start_round(session, fed, rnd.round_no + 1, new, actor=actor, request_id=request_id)
        else:
            self._finish(session, fed, new, limit or None, actor=actor, request_id=request_id)

    def _validation(self, session: Session, fed: Federation, upto: int) -> list[tuple[int, dict[str, Any]]]:
        """``(round, metrics)`` of the training rounds up to ``upto`` that measured a validation loss."""
        rows = session.scalars(
            select(FederationRound)
            .where(
                FederationRound.federation_id == fed.id,
                FederationRound.round_no >= 1,
                FederationRound.round_no <= upto,
                FederationRound.metrics_json.is_not(None),
            )
            .order_by(FederationRound.round_no)
        ).all()
        found = [(r.round_no, json.loads(r.metrics_json)) for r in rows if r.metrics_json]
        return [(r, m) for r, m in found if "validation_loss" in m]

    def _early_stop(
        self,
        session: Session,
        fed: Federation,
        rnd: FederationRound,
        metrics: dict[str, Any],
        config: dict[str, Any],
    ) -> tuple[str | None, dict[str, Any] | None]:
        """``(why training diverged, None)`` or ``(None, how it stopped early)`` or ``(None, None)``.

        The loss a round reports is that of the global model it *started from* (the previous round's result),
        measured by every bank on its own validation rows and summed securely. Early stopping: when the loss has
        not improved by ``min_delta`` (relative) for ``patience`` rounds, training stops and the best global model
        is registered (``converged: true``). Divergence: a loss that is not finite, or more than twice the best
        loss seen (plus 0.1), stops training with an error and no model."""
        session.flush()
        history = self._validation(session, fed, rnd.round_no)
        losses = [(r, m["validation_loss"]) for r, m in history]
        loss = metrics["validation_loss"]
        best_round, best = best_so_far(losses, float(config.get("min_delta", 1e-4)))
        if not math.isfinite(loss) or loss > 2.0 * best + 0.1:
            return (
                f"training diverged in round {rnd.round_no}: the securely aggregated validation loss rose to "
                f"{loss:.4g} (best {best:.4g}, round {best_round}); standardise every feature (mean 0, variance 1: "
                "create the federation with standardise=true) and lower the learning rate; no model was registered",
                None,
            )
        patience = int(config.get("patience", 5))
        if not judges(metrics["validation_rows"], metrics["validation_positives"]):
            return None, None  # too few validation positives to stop on: train to the round limit
        if rnd.round_no - best_round >= patience:
            return None, {
                "stopped": "early_stopping",
                "converged": True,
                "best_round": best_round,
                "reason": (
                    f"the validation loss did not improve for {patience} rounds after round {best_round} "
                    f"({best:.4g}); the global model that round started from is registered"
                ),
            }
        return None, None

    def _round_limit(self, session: Session, fed: Federation, rnd: FederationRound) -> dict[str, Any]:
        """How a federation that ran all its rounds ended: ``converged: false``; with ``underfit`` (a reason)
        when the last measured validation loss is no better than predicting the base rate."""
        history = self._validation(session, fed, rnd.round_no)
        outcome: dict[str, Any] = {
            "stopped": "round_limit",
            "converged": False,
            "best_round": None,
            "reason": f"stopped at the round limit ({fed.rounds}) without early stopping: more rounds may help",
        }
        if history and history[-1][0] >= 2:  # a model trained for at least one round was measured
            r, m = history[-1]
            if not judges(m["validation_rows"], m["validation_positives"]):
                outcome["reason"] += (
                    f"; the validation rows hold {m['validation_positives']} positives, too few "
                    f"(< {MIN_VALIDATION_CLASS}) to stop early or judge the model underfit"
                )
            elif m["validation_loss"] >= m["prior_loss"]:
                outcome["underfit"] = (
                    f"training stopped at the round limit ({fed.rounds}) with a model no better than predicting "
                    f"the base rate: validation loss {m['validation_loss']:.4g} against {m['prior_loss']:.4g} for "
                    f"the constant prediction (round {r}). The model is useless as it is: standardise the features "
                    "(standardise=true), raise rounds or the learning rate; no model was registered"
                )
        return outcome

    def _divergence(
        self, session: Session, fed: Federation, rnd: FederationRound, step: np.ndarray[Any, Any]
    ) -> str | None:
        """Why training must stop as divergent, or None: a non-finite average, or (nearly) every update clipped
        for :data:`CLIPPED_ROUNDS` rounds in a row (the safe-room sees only the average, which is enough)."""
        if not np.all(np.isfinite(step)):
            return (
                f"training diverged in round {rnd.round_no}: the averaged update is not finite; standardise every "
                "feature (mean 0, variance 1) and lower the learning rate; no model was registered"
            )
        clip = float(json.loads(fed.config_json)["clip_norm"])
        norms = [float(np.linalg.norm(step))]
        earlier = session.scalars(
            select(FederationRound)
            .where(
                FederationRound.federation_id == fed.id,
                FederationRound.round_no < rnd.round_no,
                FederationRound.phase == RoundPhase.done,
            )
            .order_by(FederationRound.round_no.desc())
            .limit(CLIPPED_ROUNDS - 1)
        ).all()
        for r in earlier:
            if r.result_weights is not None:
                norms.append(float(np.linalg.norm(_weights(r.result_weights) - _weights(r.global_weights))))
        if len(norms) >= CLIPPED_ROUNDS and all(n >= CLIPPED_FRACTION * clip for n in norms):
            return (
                f"training diverged: in rounds {rnd.round_no - CLIPPED_ROUNDS + 1} to {rnd.round_no} every bank's "
                f"update was clipped to clip_norm {clip:g} (averaged update lengths "
                f"{', '.join(f'{n:.3g}' for n in reversed(norms))}): the updates are far larger than clipping "
                "allows — features on raw scales (amounts in currency units) or too large a learning rate. "
                "Standardise every feature (mean 0, variance 1) and lower the learning rate (or raise clip_norm "
                "if it is very small); no model was registered"
            )
        return None

    def _order(self, fed: Federation) -> list[str]:
        order: list[str] = json.loads(json.loads(fed.config_json)["participants_order"])
        return order

    def _abort(
        self,
        session: Session,
        fed: Federation,
        rnd: FederationRound,
        reason: str,
        *,
        actor: Actor,
        request_id: str | None,
        diverged: bool = False,
    ) -> None:
        """End the round and the federation without a model. ``diverged``: training itself failed (divergence,
        or a model no better than the base rate), recorded as ``training_diverged`` in the outcome."""
        now = self.clock()
        rnd.phase, rnd.abort_reason, rnd.ended_at = RoundPhase.aborted, reason, now
        fed.state, fed.abort_reason, fed.ended_at = FederationState.aborted, reason, now
        if diverged:
            fed.outcome_json = json.dumps(
                {
                    "stopped": "diverged",
                    "converged": False,
                    "code": TrainingDiverged.code,
                    "rounds_run": max(0, rnd.round_no),
                    "best_round": None,
                    "reason": reason,
                }
            )
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="federation.round.aborted",
                actor=actor,
                objects=(ObjectRef("federation", fed.id),),
                purpose=PURPOSE,
                request_id=request_id,
                detail={"round": rnd.round_no, "reason": reason[:500]},
            ),
        )

    def _finish(
        self,
        session: Session,
        fed: Federation,
        weights: np.ndarray[Any, Any],
        outcome: dict[str, Any] | None,
        *,
        actor: Actor,
        request_id: str | None,
    ) -> None:
        """Register the model: ``weights`` in the space the banks trained in, folded onto raw features when the
        federation standardised them (the statistics are recorded beside them)."""
        fed.state, fed.ended_at = FederationState.done, self.clock()
        session.flush()
        all_rounds = session.scalars(
            select(FederationRound)
            .where(FederationRound.federation_id == fed.id)
            .order_by(FederationRound.round_no)
        ).all()
        rounds = [r for r in all_rounds if r.round_no >= 1]
        stats = self._statistics(session, fed)
        history = self._validation(session, fed, fed.current_round)
        outcome = {
            **(outcome or {"stopped": "round_limit", "converged": False, "best_round": None}),
            "rounds_run": len(rounds),
        }
        outcome.pop("underfit", None)
        fed.outcome_json = json.dumps(outcome)
        order = self._order(fed)
        dropouts = sorted({o for r in rounds for o in order if o not in json.loads(r.survivors_json or "[]")})
        done = self.ledger.append(
            session,
            EntryDraft(
                action="federation.done",
                actor=actor,
                objects=(ObjectRef("federation", fed.id),),
                purpose=PURPOSE,
                request_id=request_id,
                detail={
                    "rounds": len(rounds),
                    "dropouts": dropouts,
                    "stopped": outcome["stopped"],
                    "converged": bool(outcome["converged"]),
                    "best_round": outcome.get("best_round"),
                },
            ),
        )
        if self.registry is None:
            return
        indices = sorted(
            session.scalars(
                select(LedgerEntryObject.idx).where(
                    LedgerEntryObject.kind == "federation", LedgerEntryObject.object_id == fed.id
                )
            ).all()
        )
        config = json.loads(fed.config_json)
        config.pop("participants_order", None)
        model = federation_model(fed.kind, len(json.loads(fed.feature_schema_json)), config, fed.local_epochs)
        model.set_flat(weights)
        if stats is not None:
            model = fold_standardisation(model, stats)
        artifact = {
            "weights": [float(v) for v in model.get_flat()],
            "kind": fed.kind,
            "config": config,
            "standardisation": stats,
            "weights_on": "raw features" if stats is None else "raw features (standardisation folded in)",
        }
        record = self.registry.register(
            session,
            kind=fed.kind,
            name=fed.name,
            owners=order,
            feature_schema=json.loads(fed.feature_schema_json),
            training={
                "federation_id": fed.id,
                "rounds": len(rounds),
                "local_epochs": fed.local_epochs,
                "threshold": fed.threshold,
                "participants": order,
                "dropouts": dropouts,
                "total_weight_per_round": [r.total_weight for r in rounds],
                "rounds_run": outcome["rounds_run"],
                "stopped": outcome["stopped"],
                "stop_reason": outcome.get("reason"),
                "converged": bool(outcome["converged"]),
                "best_round": outcome.get("best_round"),
                "validation_loss": [{"round": r, "loss": m["validation_loss"]} for r, m in history],
                "standardised": stats is not None,
            },
            evaluation=None,
            artifacts=dict.fromkeys(order, artifact),
            ledger_indices=sorted({*indices, done.index}),
            actor=actor,
            purpose=PURPOSE,
            request_id=request_id,
        )
        fed.model_id = record.id

    def _statistics(self, session: Session, fed: Federation) -> dict[str, Any] | None:
        """The joint feature statistics of round 0, or None (a federation that does not standardise)."""
        r0 = session.get(FederationRound, (fed.id, 0))
        if r0 is None or not r0.metrics_json:
            return None
        stats: dict[str, Any] = json.loads(r0.metrics_json)["statistics"]
        return stats

    # --- views ---------------------------------------------------------------------------------------------

    def list_for(self, session: Session, org_id: str) -> Sequence[Federation]:
        return session.scalars(
            select(Federation)
            .join(FederationParticipant, FederationParticipant.federation_id == Federation.id)
            .where(FederationParticipant.bank_org_id == org_id)
            .order_by(Federation.created_at.desc(), Federation.id)
        ).all()

    def view(self, session: Session, fed_id: str, org_id: str) -> dict[str, Any]:
        """What a participant sees: the federation, its round and phase, the global model, its next input."""
        fed, part = self._load(session, fed_id, org_id)
        return self.describe(session, fed, part)

    def describe(self, session: Session, fed: Federation, part: FederationParticipant) -> dict[str, Any]:
        parts = self._participants(session, fed.id)
        config = json.loads(fed.config_json)
        config.pop("participants_order", None)
        out: dict[str, Any] = {
            "id": fed.id,
            "name": fed.name,
            "kind": fed.kind,
            "initiator_org_id": fed.initiator_org_id,
            "state": fed.state.value,
            "feature_schema": json.loads(fed.feature_schema_json),
            "n_params": fed.n_params,
            "rounds": fed.rounds,
            "threshold": fed.threshold,
            "local_epochs": fed.local_epochs,
            "config": config,
            "participants": [
                {"bank_org_id": p.bank_org_id, "position": p.position, "accepted": p.accepted_at is not None}
                for p in parts
            ],
            "my_position": part.position,
            "current_round": fed.current_round,
            "model_id": fed.model_id,
            "abort_reason": fed.abort_reason,
            "created_at": fed.created_at,
            "round": None,
            "global_weights": None,
            "inbox": None,
            "standardisation": None,
            "validation": [],
            "outcome": json.loads(fed.outcome_json) if fed.outcome_json else None,
        }
        rnd = self._round(session, fed)
        if rnd is None:
            return out
        out["standardisation"] = self._statistics(session, fed)
        out["validation"] = [
            {
                "round": r,
                "loss": m["validation_loss"],
                "prior_loss": m["prior_loss"],
                "rows": m["validation_rows"],
            }
            for r, m in self._validation(session, fed, fed.current_round)
        ]
        out["round"] = {
            "round_no": rnd.round_no,
            "phase": rnd.phase.value,
            "phase_deadline": rnd.phase_deadline,
            "survivors": json.loads(rnd.survivors_json) if rnd.survivors_json else None,
            "total_weight": rnd.total_weight,
            "abort_reason": rnd.abort_reason,
        }
        final = rnd.result_weights if rnd.result_weights is not None else rnd.global_weights
        best = (out["outcome"] or {}).get("best_round")
        if best is not None:  # stopped early: the registered model is the one the best round started from
            kept = session.get(FederationRound, (fed.id, best))
            assert kept is not None
            final = kept.global_weights
        out["global_weights"] = [float(v) for v in _weights(final)]
        stage = STAGE_OF_PHASE.get(rnd.phase) if rnd.phase is not RoundPhase.done else None
        if stage is not None:
            senders = self._senders(session, fed, rnd)
            out["round"]["posted"] = part.position in senders[stage]
            if _enclave_mode(fed):
                out["enclave_terms"] = self.terms(fed, rnd.round_no)
            else:
                out["inbox"] = self._inbox(session, fed, rnd, stage, part.position, senders)
        return out

    def _inbox(
        self,
        session: Session,
        fed: Federation,
        rnd: FederationRound,
        stage: Stage,
        position: int,
        senders: dict[Stage, set[int]],
    ) -> bytes | None:
        """What bank ``position`` needs for ``stage``, built without reading any masked input."""
        if stage is Stage.ADVERTISE_KEYS:
            return None
        if stage is Stage.UNMASK:  # U2 and U3: who posted shares and masked inputs
            info = self._info(fed, rnd.round_no)
            return survivors_frame(info, senders[Stage.SHARE_KEYS], senders[Stage.MASKED_INPUT])
        srv = self._server(session, fed, rnd, before=stage)  # the advertised keys, or those and the shares
        try:
            return srv.outbox(position)
        except SecAggStageError:
            return None  # this bank dropped out of the round earlier
