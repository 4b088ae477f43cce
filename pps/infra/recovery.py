"""Every long-lived thing reaches a terminal state after a crash: the recovery of what jobs do not cover.

Jobs recover themselves (:meth:`pps.infra.jobs.JobService.recover`: a job whose runner died is failed, queued
jobs run again; enclave jobs are jobs). Two other kinds of long-lived thing outlive a request:

* **vertical trainings** (``VerticalTraining``): the live state — the host half's weights, the enclave's
  Paillier key — is in the memory of the serving process that started it. If that process dies, the session
  can never continue; before this module it stayed ``training`` until the bank happened to call again.
  :func:`recover_long_lived` fails every training whose *holder* process is gone, with a ``training.fail``
  ledger entry naming the reason. The holder is recorded (``session_holders``) by an ORM hook in the very
  transaction that creates the training row, so the training service needs no change. Trainings held by
  another live API worker are left alone; a training with no holder recorded (made before this table
  existed) is failed once it has been idle for ``stale_after``.
* **federations** (``Federation``): their state is in the database, so a restart does not end them — the
  next participant's call continues the round. A federation nobody drives any more, though, would wait
  forever: one still inviting ``stale_after`` after it was created, or one whose current phase's deadline
  passed ``stale_after`` ago without any participant closing it, is aborted (``federation.round.aborted``,
  actor ``service``). Within ``stale_after`` a late participant still closes the phase the protocol's way.

The app runs it at start-up (beside ``JobService.recover``) and then every ``PPS_RECOVERY_INTERVAL_SECONDS``,
so a worker that died is cleaned up by the survivors too; ``pps`` commands never run it.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, event, insert, select
from sqlalchemy.orm import Mapper

from pps.infra.storage.db import Database
from pps.infra.storage.tables import (
    Federation,
    FederationRound,
    FederationState,
    RoundPhase,
    SessionHolder,
    TrainingState,
    VerticalTraining,
    utcnow,
)
from pps.ledger.entry import Actor, EntryDraft, ObjectRef
from pps.ledger.store import Ledger

log = logging.getLogger("pps.infra.recovery")

RECOVERY = Actor(None, "service", "recovery")
TRAINING = "vertical_training"
HOLDER = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
"""This process, as a holder: ``host:pid:boot`` (``boot`` tells a restarted process from its predecessor when
the pid repeats, as pid 1 does in every container start)."""


def holder_alive(runner: str | None) -> bool:
    """Is the process that ``runner`` names alive? This process is; another host's is not ours to judge (it
    is assumed alive); a process of this host is alive if its pid exists and is not this process's pid
    under another boot (a predecessor)."""
    if runner == HOLDER:
        return True
    if not runner or runner.count(":") < 2:
        return False
    host, pid, _boot = runner.rsplit(":", 2)
    if host != socket.gethostname():
        return True
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _record_holder(
    _mapper: Mapper[VerticalTraining], connection: Connection, target: VerticalTraining
) -> None:
    connection.execute(
        insert(SessionHolder).values(kind=TRAINING, object_id=target.id, runner=HOLDER, created_at=utcnow())
    )


if not event.contains(VerticalTraining, "after_insert", _record_holder):
    event.listen(VerticalTraining, "after_insert", _record_holder)


@dataclass(frozen=True)
class Recovered:
    trainings_failed: tuple[str, ...]
    federations_aborted: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.trainings_failed or self.federations_aborted)


def recover_long_lived(
    db: Database, ledger: Ledger, *, stale_after: timedelta, now: datetime | None = None
) -> Recovered:
    """Fail the trainings no live process holds and abort the federations nobody drives (module docstring).
    Safe to run in several API workers at once: each row is changed only while it is still non-terminal,
    under the database's row lock, with one ledger entry."""
    now = now or utcnow()
    failed: list[str] = []
    with db.transaction() as s:
        rows = s.execute(
            select(VerticalTraining, SessionHolder.runner)
            .outerjoin(
                SessionHolder,
                and_(SessionHolder.kind == TRAINING, SessionHolder.object_id == VerticalTraining.id),
            )
            .where(VerticalTraining.state == TrainingState.training)
            .order_by(VerticalTraining.id)
            .with_for_update(of=VerticalTraining)
        ).all()
        for training, holder in rows:
            runner: str | None = holder  # None: no holder row (an outer join)
            if runner is None:  # made before holders were recorded, or by a path the hook does not see:
                if now - training.updated_at < stale_after:  # judged by its idleness instead
                    continue
            elif holder_alive(runner):
                continue
            why = (
                "the serving process that held this training's live state ended (a crash or restart); "
                "its state is gone and nothing was registered — start it again"
            )
            training.state, training.error, training.updated_at = TrainingState.failed, why, now
            ledger.append(
                s,
                EntryDraft(
                    action="training.fail",
                    actor=RECOVERY,
                    objects=(ObjectRef("training", training.id),),
                    purpose=training.purpose,
                    detail={"kind": "vertical_lr", "reason": "holder_gone", "epochs": training.epochs_done},
                ),
                now=now,
            )
            failed.append(training.id)
    aborted: list[str] = []
    with db.transaction() as s:
        federations = (
            s.execute(
                select(Federation)
                .where(Federation.state.in_((FederationState.inviting, FederationState.running)))
                .order_by(Federation.id)
                .with_for_update()
            )
            .scalars()
            .all()
        )
        for fed in federations:
            rnd = (
                s.get(FederationRound, (fed.id, fed.current_round))
                if fed.state is FederationState.running
                else None
            )
            if fed.state is FederationState.inviting or rnd is None:
                since, what = fed.created_at, "was still inviting"
            else:
                since, what = (
                    rnd.phase_deadline,
                    f"round {rnd.round_no} passed its {rnd.phase.value} deadline",
                )
            if now - since < stale_after:
                continue
            reason = (
                f"abandoned: the federation {what} at {since.isoformat()} and no participant drove it on "
                f"within {stale_after}; aborted by the service, no model registered"
            )
            if rnd is not None and rnd.phase not in (RoundPhase.done, RoundPhase.aborted):
                rnd.phase, rnd.abort_reason, rnd.ended_at = RoundPhase.aborted, reason, now
            fed.state, fed.abort_reason, fed.ended_at = FederationState.aborted, reason, now
            s.flush()
            ledger.append(
                s,
                EntryDraft(
                    action="federation.round.aborted",
                    actor=RECOVERY,
                    objects=(ObjectRef("federation", fed.id),),
                    purpose="joint_model_training",  # pps.services.federated.PURPOSE
                    detail={"round": fed.current_round, "reason": reason[:500]},
                ),
                now=now,
            )
            aborted.append(fed.id)
    result = Recovered(tuple(failed), tuple(aborted))
    if result:
        log.warning(
            "recovery: %d training(s) failed (holder gone), %d federation(s) aborted (abandoned)",
            len(failed),
            len(aborted),
        )
    return result
