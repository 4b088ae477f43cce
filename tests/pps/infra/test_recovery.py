"""Every long-lived thing reaches a terminal state after a crash (pps.infra.recovery).

A vertical training whose serving process died is failed, with a ledger entry; one held by a live API worker
(this process, another process, another host) is left alone. A federation nobody drives any more is aborted
after ``stale_after``; one still within it is left for its participants to close the protocol's way.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from api.app import create_app
from api.live import running_server
from pps.infra.recovery import HOLDER, holder_alive, recover_long_lived
from pps.infra.settings import Settings
from pps.infra.storage.tables import (
    Federation,
    FederationRound,
    FederationState,
    Role,
    RoundPhase,
    SessionHolder,
    TrainingState,
    VerticalTraining,
    new_id,
    utcnow,
)
from pps.ledger.store import EntryFilter
from pps.ledger.verify import verify_ledger
from pps.runtime import Runtime
from tests.conftest import OrgFactory

pytestmark = pytest.mark.db
STALE = timedelta(hours=24)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def new_training(rt: Runtime, bank_id: str) -> str:
    now = utcnow()
    training = VerticalTraining(
        id=new_id("vt"),
        bank_org_id=bank_id,
        name="t",
        purpose="credit_assessment",
        features_json="[]",
        rows=10,
        state=TrainingState.training,
        epochs_done=1,
        enclave_handle="h",
        enclave_instance=1,
        quote_hash="00" * 32,
        admission_index=0,
        created_at=now,
        updated_at=now,
    )
    with rt.db.transaction() as s:
        s.add(training)
    return training.id


def set_holder(rt: Runtime, training_id: str, runner: str) -> None:
    with rt.db.transaction() as s:
        s.execute(update(SessionHolder).where(SessionHolder.object_id == training_id).values(runner=runner))


def state_of(rt: Runtime, training_id: str) -> tuple[TrainingState, str | None]:
    with rt.db.transaction(write=False) as s:
        row = s.get(VerticalTraining, training_id)
        assert row is not None
        return row.state, row.error


def test_holder_liveness() -> None:
    host = socket.gethostname()
    assert holder_alive(HOLDER)  # this process
    assert not holder_alive(f"{host}:{dead_pid()}:abcd")
    assert not holder_alive(f"{host}:{os.getpid()}:0000")  # this pid under an earlier boot: a predecessor
    assert holder_alive(f"{host}:{os.getppid()}:abcd")  # a live process of this host
    assert holder_alive("elsewhere.example:1:abcd")  # another host's: not ours to judge
    assert not holder_alive(None) and not holder_alive("garbage")


def test_a_training_whose_holder_died_is_failed_and_recorded(runtime: Runtime, make_org: OrgFactory) -> None:
    bank = make_org(Role.bank)
    mine, dead, other_host, predecessor = (new_training(runtime, bank.id) for _ in range(4))
    with runtime.db.transaction(write=False) as s:  # the holder is written with the training, by the hook
        holders = dict(s.execute(select(SessionHolder.object_id, SessionHolder.runner)).all())
    assert holders == dict.fromkeys((mine, dead, other_host, predecessor), HOLDER)
    set_holder(runtime, dead, f"{socket.gethostname()}:{dead_pid()}:beef")
    set_holder(runtime, other_host, "api-2.internal:4242:beef")
    set_holder(runtime, predecessor, f"{socket.gethostname()}:{os.getpid()}:0000")

    result = recover_long_lived(runtime.db, runtime.ledger, stale_after=STALE)
    assert sorted(result.trainings_failed) == sorted([dead, predecessor])
    for training in (dead, predecessor):
        state, error = state_of(runtime, training)
        assert state is TrainingState.failed and error is not None and "process" in error and "ended" in error
    assert state_of(runtime, mine)[0] is TrainingState.training  # held by this live process
    assert state_of(runtime, other_host)[0] is TrainingState.training  # another host's worker
    with runtime.db.transaction(write=False) as s:
        entries = runtime.ledger.entries(s, EntryFilter(action="training.fail"), after=None, limit=10)
        verify_ledger(s, runtime.ledger)
    docs = [json.loads(e.entry) for e in entries]
    assert sorted(d["objects"][0]["id"] for d in docs) == sorted([dead, predecessor])
    assert {d["detail"]["reason"] for d in docs} == {"holder_gone"}
    assert {d["actor"]["role"] for d in docs} == {"service"}
    # idempotent: nothing more to do, no more entries
    assert not recover_long_lived(runtime.db, runtime.ledger, stale_after=STALE)


def test_a_training_without_a_holder_is_failed_once_idle_for_stale_after(
    runtime: Runtime, make_org: OrgFactory
) -> None:
    idle, recent = (new_training(runtime, make_org(Role.bank).id) for _ in range(2))
    with runtime.db.transaction() as s:
        s.execute(SessionHolder.__table__.delete())
        s.execute(
            update(VerticalTraining)
            .where(VerticalTraining.id == idle)
            .values(updated_at=utcnow() - STALE - timedelta(minutes=1))
        )
    assert recover_long_lived(runtime.db, runtime.ledger, stale_after=STALE).trainings_failed == (idle,)
    assert state_of(runtime, recent)[0] is TrainingState.training


def new_federation(rt: Runtime, bank_id: str, *, age: timedelta, round_deadline_age: timedelta | None) -> str:
    now = utcnow()
    fed = Federation(
        id=new_id("fed"),
        initiator_org_id=bank_id,
        name="f",
        kind="logistic",
        feature_schema_json="[]",
        config_json=json.dumps({"phase_timeout_s": 600}),
        n_params=3,
        rounds=2,
        threshold=2,
        local_epochs=1,
        state=FederationState.inviting if round_deadline_age is None else FederationState.running,
        current_round=0 if round_deadline_age is None else 1,
        created_at=now - age,
    )
    with rt.db.transaction() as s:
        s.add(fed)
        s.flush()
        if round_deadline_age is not None:
            s.add(
                FederationRound(
                    federation_id=fed.id,
                    round_no=1,
                    phase=RoundPhase.share_keys,
                    global_weights=b"\0" * 24,
                    phase_deadline=now - round_deadline_age,
                    started_at=now - age,
                )
            )
    return fed.id


def test_abandoned_federations_are_aborted_and_live_ones_left(runtime: Runtime, make_org: OrgFactory) -> None:
    bank = make_org(Role.bank)
    old_invite = new_federation(runtime, bank.id, age=timedelta(hours=30), round_deadline_age=None)
    new_invite = new_federation(runtime, bank.id, age=timedelta(hours=1), round_deadline_age=None)
    stuck = new_federation(runtime, bank.id, age=timedelta(hours=50), round_deadline_age=timedelta(hours=25))
    late = new_federation(runtime, bank.id, age=timedelta(hours=50), round_deadline_age=timedelta(hours=2))
    result = recover_long_lived(runtime.db, runtime.ledger, stale_after=STALE)
    assert sorted(result.federations_aborted) == sorted([old_invite, stuck])
    with runtime.db.transaction(write=False) as s:
        states = {f.id: f for f in s.execute(select(Federation)).scalars()}
        assert states[new_invite].state is FederationState.inviting
        assert states[late].state is FederationState.running  # a late participant may still close the phase
        assert states[stuck].state is FederationState.aborted
        assert "abandoned" in (states[stuck].abort_reason or "")
        rnd = s.get(FederationRound, (stuck, 1))
        assert rnd is not None and rnd.phase is RoundPhase.aborted
        entries = runtime.ledger.entries(
            s, EntryFilter(action="federation.round.aborted"), after=None, limit=10
        )
    assert sorted(json.loads(e.entry)["objects"][0]["id"] for e in entries) == sorted([old_invite, stuck])


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"recovery_interval_seconds": 0.2})


def test_a_live_service_sweeps_the_trainings_of_workers_that_died(
    runtime: Runtime, make_org: OrgFactory
) -> None:
    """Not only at start-up: a worker that keeps running fails what a dead sibling held, on its next sweep."""
    bank = make_org(Role.bank)
    with running_server(create_app(runtime=runtime)):
        mine = new_training(runtime, bank.id)  # held by this (live) process
        orphan = new_training(runtime, bank.id)
        set_holder(runtime, orphan, f"{socket.gethostname()}:{dead_pid()}:beef")
        deadline = time.monotonic() + 20
        while state_of(runtime, orphan)[0] is TrainingState.training and time.monotonic() < deadline:
            time.sleep(0.1)
        assert state_of(runtime, orphan)[0] is TrainingState.failed
        assert state_of(runtime, mine)[0] is TrainingState.training
