"""Chaos: the real service (`pps serve`, a process pool of 2 workers) is killed with SIGKILL at named points —
mid-upload, mid-scoring, as a scoring or PSI job is released, in a burst of consents, mid-KEK-rotation, with a
vertical training held — and restarted; then the invariants are checked:

* every write that was acknowledged (a 2xx answer) is present; nothing half-written is visible (a dataset
  version has all its chunks or does not exist; a job has a result only if it succeeded);
* every job is terminal, and so is every vertical training (through the start-up recovery);
* the ledger verifies (`verify_ledger`), and consents' uses and privacy budgets are within their limits;
* governed state reconciles with the ledger: consents (terms, state, uses), budgets and objections rebuilt from
  the entries equal their rows (`pps.ledger.replay`), so no crash leaves a row and its entry apart;
* no process the killed service started survives it.

Named points are ``PPS_UNSAFE_KILL_AT=commit:<ledger action>`` (``pps.infra.faults``: the process kills itself
right before committing the transaction that appended that entry) or an outside ``kill -9`` once the API shows
the state to kill in. Runs on SQLite (`make test-e2e`) and on PostgreSQL (`.ci/run`, ``-m db`` with
``PPS_TEST_DATABASE_URL``).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import func, select

from pps.data.datasets.ingest import UploadFormat
from pps.data.datasets.schema import DatasetSchema
from pps.infra.settings import Settings
from pps.infra.storage.tables import (
    TERMINAL_JOB_STATES,
    Consent,
    ConsentState,
    Dataset,
    DatasetChunk,
    DatasetVersion,
    Job,
    JobBlob,
    JobState,
    PrivacyBudget,
    Role,
    TrainingState,
    VerticalTraining,
    utcnow,
)
from pps.ledger.entry import OPERATOR
from pps.ledger.replay import Reconciler
from pps.ledger.verify import verify_ledger
from pps.runtime import Runtime
from pps_client import Client
from protocols.he_scoring import BankScoringKey
from tests.chaos.test_process_lifetime import _survivors
from tests.conftest import OrgFactory
from tests.helpers import uscc_for
from tests.pps.data.datasets.conftest import TAX_SCHEMA, tax_rows, to_csv
from tests.pps.services.scoring.conftest import PURPOSE, World, platform, synth_data, world

pytestmark = [pytest.mark.e2e, pytest.mark.db]
__all__ = ["platform", "synth_data", "world"]  # fixtures, used by name

ROOT = Path(__file__).resolve().parents[2]
FEATURES = ("log_sales_mean_last6", "tax_filing_ratio", "company_age_years", "industry_c")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """`pps serve` on the test's database and key directory, started and killed at will."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings = settings
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, kill_at: str | None = None) -> None:
        port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'client'}",
            "PPS_DATA_DIR": str(self.settings.data_dir),
            "PPS_DATABASE_URL": self.settings.resolved_database_url,
            "PPS_SECRET_KEY": self.settings.secret_key.get_secret_value(),
            "PPS_ENVIRONMENT": "test",
            "PPS_CHECKPOINT_INTERVAL_SECONDS": "0",
            "PPS_EXECUTOR_WORKERS": "2",  # a warm process pool: its workers must die with the server
            "PPS_PSI_WORKERS": "1",
            # the crash tests score with a bank-encrypted model, as the in-process fixtures do (tests/conftest.py);
            # the approval path is tested in tests/pps/services/scoring/test_approval.py
            "PPS_UNSAFE_UNAPPROVED_MODELS": "true",
        }
        env.pop(ENV_KILL, None)
        if kill_at:
            env[ENV_KILL] = kill_at
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pps.cli", "serve", "--port", str(port)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text(errors="replace")[-3000:]
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).json().get("status") == "ready":
                    return
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(0.2)
        raise AssertionError(
            "the server did not become ready:\n" + self.log.read_text(errors="replace")[-3000:]
        )

    def children(self) -> set[int]:
        assert self.proc is not None
        try:
            return {c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            return set()

    def kill(self) -> None:
        """SIGKILL from outside; then nothing the server started may survive it."""
        assert self.proc is not None
        children = self.children()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.assert_no_orphans(children)

    def died_by_itself(self, children: set[int], timeout: float = 60) -> None:
        """The server killed itself at its kill point (SIGKILL), and took its children with it."""
        assert self.proc is not None
        assert self.proc.wait(timeout) == -signal.SIGKILL, self.log.read_text(errors="replace")[-3000:]
        self.assert_no_orphans(children)

    @staticmethod
    def assert_no_orphans(children: set[int]) -> None:
        survivors = _survivors(children, 15)
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)
        assert survivors == set(), "processes outlived the killed server"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


ENV_KILL = "PPS_UNSAFE_KILL_AT"


@pytest.fixture
def server(settings: Settings, runtime: Runtime, tmp_path: Path) -> Iterator[Server]:
    srv = Server(settings, tmp_path / "server.log")
    try:
        yield srv
    finally:
        srv.stop()


def wait_terminal(rt: Runtime, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with rt.db.transaction(write=False) as s:
            open_jobs = s.execute(select(Job.id).where(Job.state.not_in(TERMINAL_JOB_STATES))).scalars().all()
        if not open_jobs:
            return
        time.sleep(0.3)
    raise AssertionError(f"jobs not terminal after a restart: {open_jobs}")


def check_invariants(rt: Runtime) -> None:
    """What must hold after any crash and restart (see the module docstring)."""
    wait_terminal(rt)
    with rt.db.transaction(write=False, snapshot=True) as s:
        verify_ledger(s, rt.ledger)
        state = Reconciler(rt.ledger).run(s)
        assert state.ok, [d.describe() for d in state.divergences]
        assert (
            s.execute(
                select(func.count())
                .select_from(VerticalTraining)
                .where(VerticalTraining.state == TrainingState.training)
            ).scalar_one()
            == 0
        )
        results = set(s.execute(select(JobBlob.job_id).where(JobBlob.role == "result")).scalars())
        for job in s.execute(select(Job)).scalars():
            assert job.state in TERMINAL_JOB_STATES
            if job.state is not JobState.succeeded:
                assert job.id not in results, f"job {job.id} is {job.state.value} but has a result"
        for consent in s.execute(select(Consent)).scalars():
            assert consent.uses >= 0 and (consent.max_uses is None or consent.uses <= consent.max_uses)
        for budget in s.execute(select(PrivacyBudget)).scalars():
            assert 0 <= budget.spent_micro <= budget.total_micro
        for version in s.execute(select(DatasetVersion)).scalars():
            chunks = s.execute(
                select(func.count())
                .select_from(DatasetChunk)
                .where(DatasetChunk.dataset_id == version.dataset_id, DatasetChunk.version == version.version)
            ).scalar_one()
            schema = DatasetSchema.model_validate_json(version.schema_json)
            if version.wrapped_dek is not None:  # not shredded: every chunk of every column is there
                assert chunks == version.chunk_count * len(schema.columns), (
                    version.dataset_id,
                    version.version,
                )
        for ds in s.execute(select(Dataset)).scalars():
            if ds.current_version is not None:
                assert s.get(DatasetVersion, (ds.id, ds.current_version)) is not None


# --- upload ---------------------------------------------------------------------------------------------------


def test_kill_during_upload(server: Server, runtime: Runtime, make_org: OrgFactory) -> None:
    provider = make_org(Role.data_provider)
    server.start()
    client = Client(server.url, provider.token)
    ds = client.datasets.create("tax", TAX_SCHEMA, description="")
    assert client.datasets.upload(ds.id, to_csv(tax_rows(50)), fmt="csv").version == 1  # acknowledged
    server.kill()  # right after an acknowledged upload

    server.start(kill_at="commit:dataset.upload")  # the next upload dies with its work done, uncommitted
    children = server.children()
    with pytest.raises(httpx.TransportError):
        httpx.post(
            f"{server.url}/v1/datasets/{ds.id}/versions",
            params={"format": "csv"},
            content=to_csv(tax_rows(3000)),
            headers={"Authorization": f"Bearer {provider.token}", "content-type": "text/csv"},
            timeout=120,
        )
    server.died_by_itself(children)

    server.start()
    meta = Client(server.url, provider.token).datasets.get(ds.id)
    assert [v.rows for v in meta.versions] == [150] and meta.current_version == 1
    # a large upload killed from outside mid-stream: whatever the moment, all of a version or none of it
    big = to_csv(tax_rows(20_000))
    outcome: dict[str, Any] = {}

    def send() -> None:
        try:
            outcome["status"] = httpx.post(
                f"{server.url}/v1/datasets/{ds.id}/versions",
                params={"format": "csv"},
                content=big,
                headers={"Authorization": f"Bearer {provider.token}", "content-type": "text/csv"},
                timeout=120,
            ).status_code
        except httpx.TransportError:
            outcome["status"] = None

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(1.0)
    server.kill()
    sender.join()
    server.start()
    versions = Client(server.url, provider.token).datasets.get(ds.id).versions
    if outcome["status"] == 201:  # acknowledged before the kill: it must be there
        assert [v.rows for v in versions] == [150, 60_000]
    else:
        assert versions[0].rows == 150 and [v.rows for v in versions[1:]] in ([], [60_000])
    check_invariants(runtime)


# --- scoring and PSI ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key() -> BankScoringKey:
    return BankScoringKey.create()


def uses(rt: Runtime, bank_id: str) -> dict[str, int]:
    with rt.db.transaction(write=False) as s:
        rows = s.execute(select(Consent.subject_uscc, Consent.uses).where(Consent.bank_org_id == bank_id))
        return dict(rows.all())


def job_state(rt: Runtime, job_id: str) -> tuple[JobState, str | None]:
    with rt.db.transaction(write=False) as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job.state, job.error_code


def test_kill_during_scoring_and_at_its_release(
    server: Server, runtime: Runtime, world: World, key: BankScoringKey
) -> None:
    model = key.encrypt_model(dict.fromkeys(FEATURES, 0.1), -1.0)
    before = uses(runtime, world.bank.id)
    assert set(before.values()) == {0}

    # 1. killed from outside while the job runs (or, if it was quicker, after it was acknowledged)
    server.start()
    bank = Client(server.url, world.bank.token)
    job = bank.scoring.submit(key, model, purpose=PURPOSE, subjects=world.consented)
    deadline = time.monotonic() + 60
    while bank.jobs.get(job.id).state == "queued" and time.monotonic() < deadline:
        time.sleep(0.02)
    server.kill()
    server.start()
    state, code = job_state(runtime, job.id)
    if state is JobState.succeeded:  # released before the kill: its uses were counted once
        assert set(uses(runtime, world.bank.id).values()) <= {0, 1}
    else:
        assert (state, code) == (JobState.failed, "interrupted")
        assert uses(runtime, world.bank.id) == before  # nothing released, nothing counted
    server.kill()
    counted = uses(runtime, world.bank.id)

    # 2. killed as the result is released: the release, its uses and its ledger entry commit together or not
    server.start(kill_at="commit:job.succeeded")
    children = server.children()
    job = Client(server.url, world.bank.token).scoring.submit(
        key, model, purpose=PURPOSE, subjects=world.consented
    )
    server.died_by_itself(children)
    server.start()
    wait_terminal(runtime)
    assert job_state(runtime, job.id) == (JobState.failed, "interrupted")
    assert uses(runtime, world.bank.id) == counted

    # 3. after the crashes the service works, and counts exactly once
    result = Client(server.url, world.bank.token).scoring.score(
        key, model, purpose=PURPOSE, subjects=world.consented
    )
    assert result.subjects == world.consented
    after = uses(runtime, world.bank.id)
    assert all(after[u] == counted[u] + 1 for u in world.consented)
    check_invariants(runtime)


def test_kill_as_a_psi_job_is_released(server: Server, runtime: Runtime, world: World) -> None:
    server.start(kill_at="commit:job.succeeded")
    children = server.children()
    customers = world.consented[:20] + [uscc_for(900_000 + i) for i in range(20)]
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = Client(server.url, world.bank.token).psi.run(
                customers, purpose=PURPOSE, timeout=60
            )
        except Exception as exc:  # the server died under it
            outcome["error"] = exc

    runner = threading.Thread(target=run)
    runner.start()
    server.died_by_itself(children)
    runner.join(90)
    assert "error" in outcome
    server.start()
    check_invariants(runtime)
    with runtime.db.transaction(write=False) as s:
        psi_jobs = s.execute(select(Job).where(Job.kind == "psi")).scalars().all()
    assert [(j.state, j.error_code) for j in psi_jobs] == [(JobState.failed, "interrupted")]
    result = Client(server.url, world.bank.token).psi.run(customers, purpose=PURPOSE, timeout=120)
    assert sorted(result.intersection) == sorted(world.consented[:20])


# --- consents -------------------------------------------------------------------------------------------------


def test_kill_during_a_consent_burst(server: Server, runtime: Runtime, make_org: OrgFactory) -> None:
    provider = make_org(Role.data_provider)
    with runtime.db.transaction() as s:
        ds = runtime.datasets.create(
            s,
            provider_org_id=provider.id,
            name="tax",
            description="",
            schema=DatasetSchema.model_validate(TAX_SCHEMA),
            actor=OPERATOR,
        )
    bank = make_org(Role.bank)
    subjects = [make_org(Role.subject, uscc=uscc_for(7000 + i)) for i in range(40)]
    server.start()
    acknowledged: dict[str, str] = {}
    lock = threading.Lock()

    def grant(subject_token: str, uscc: str, key: Any) -> None:
        try:
            consent = Client(server.url, subject_token, subject_key=key).consents.grant(
                bank.id,
                purpose=PURPOSE,
                scope={ds.id: ["tax_paid"]},
                operations=["score"],
                granularity="score",
                valid_until=utcnow() + timedelta(days=30),
                max_uses=3,
            )
        except Exception:
            return  # not acknowledged: may or may not exist
        with lock:
            acknowledged[uscc] = consent.id

    children = server.children()
    with ThreadPoolExecutor(8) as pool:
        for sub in subjects:
            pool.submit(grant, sub.token, sub.uscc or "", sub.key)
        deadline = time.monotonic() + 60
        while len(acknowledged) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGKILL)  # mid-burst
    server.proc.wait(30)
    Server.assert_no_orphans(children)
    server.start()
    assert len(acknowledged) >= 10
    with runtime.db.transaction(write=False) as s:
        stored = {c.id: c for c in s.execute(select(Consent).where(Consent.bank_org_id == bank.id)).scalars()}
    for uscc, consent_id in acknowledged.items():  # every acknowledged grant is there, whole
        consent = stored[consent_id]
        assert consent.subject_uscc == uscc and consent.state is ConsentState.active
        assert consent.receipt, "a grant without its signed receipt"
    check_invariants(runtime)


# --- KEK rotation ---------------------------------------------------------------------------------------------


def pps_cli(settings: Settings, *args: str, kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'client'}",
        "PPS_DATA_DIR": str(settings.data_dir),
        "PPS_DATABASE_URL": settings.resolved_database_url,
        "PPS_SECRET_KEY": settings.secret_key.get_secret_value(),
        "PPS_ENVIRONMENT": "test",
    }
    env.pop(ENV_KILL, None)
    if kill_at:
        env[ENV_KILL] = kill_at
    return subprocess.run(
        [sys.executable, "-m", "pps.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_kill_during_kek_rotation(
    server: Server, runtime: Runtime, settings: Settings, make_org: OrgFactory
) -> None:
    provider = make_org(Role.data_provider)
    rows = tax_rows(200)
    with runtime.db.transaction() as s:
        ds = runtime.datasets.create(
            s,
            provider_org_id=provider.id,
            name="tax",
            description="",
            schema=DatasetSchema.model_validate(TAX_SCHEMA),
            actor=OPERATOR,
        )
        for _ in range(3):
            runtime.datasets.upload(
                s, ds, stream=io.BytesIO(to_csv(rows)), fmt=UploadFormat.csv, actor=OPERATOR
            )

    def read_all(rt: Runtime) -> list[Any]:
        with rt.db.transaction(write=False) as s:
            return [
                rt.datasets.read_columns(s, v, ["tax_paid"])["tax_paid"].values.tolist()
                for v in s.execute(select(DatasetVersion).order_by(DatasetVersion.version)).scalars()
            ]

    expected = read_all(runtime)
    killed = pps_cli(settings, "keys", "rotate", kill_at="commit:keys.rewrap")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    status = pps_cli(settings, "keys", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    server.start()  # the service opens every key it needs (canaries) and is ready
    fresh = Runtime.build(settings)
    try:
        assert read_all(fresh) == expected  # the data keys are wrapped by a KEK that exists: all readable
    finally:
        fresh.close()
    server.kill()
    assert pps_cli(settings, "keys", "rotate").returncode == 0  # and rotation completes afterwards
    fresh = Runtime.build(settings)
    try:
        assert read_all(fresh) == expected
    finally:
        fresh.close()
    check_invariants(runtime)


# --- vertical training (through the recovery) ------------------------------------------------------------------

HOLD_A_TRAINING = """
import sys, time
from pps.infra.settings import get_settings
from pps.runtime import Runtime
from tests.pps.infra.test_recovery import new_training
rt = Runtime.build(get_settings())
print(new_training(rt, sys.argv[1]), flush=True)
time.sleep(600)
"""


def test_a_training_whose_server_was_killed_is_failed_at_restart(
    server: Server, runtime: Runtime, settings: Settings, make_org: OrgFactory
) -> None:
    bank = make_org(Role.bank)
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'client'}",
        "PPS_DATA_DIR": str(settings.data_dir),
        "PPS_DATABASE_URL": settings.resolved_database_url,
        "PPS_SECRET_KEY": settings.secret_key.get_secret_value(),
        "PPS_ENVIRONMENT": "test",
    }
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_TRAINING, bank.id], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    training_id = holder.stdout.readline().strip()
    assert training_id.startswith("vt")
    server.start()  # a second worker starting meanwhile leaves a live worker's training alone
    with runtime.db.transaction(write=False) as s:
        row = s.get(VerticalTraining, training_id)
        assert row is not None and row.state is TrainingState.training
    server.kill()
    holder.send_signal(signal.SIGKILL)  # the worker that held it dies
    holder.wait(30)
    server.start()  # its start-up recovery fails the training
    with runtime.db.transaction(write=False) as s:
        row = s.get(VerticalTraining, training_id)
        assert row is not None and row.state is TrainingState.failed and "ended" in (row.error or "")
    response = httpx.get(
        f"{server.url}/v1/training/vertical/{training_id}",
        headers={"Authorization": f"Bearer {bank.token}"},
        timeout=10,
    )
    assert response.status_code == 200 and response.json()["state"] == "failed"
    check_invariants(runtime)


def test_the_kill_points_are_off_unless_named() -> None:
    from pps.infra import faults

    assert os.environ.get(ENV_KILL) is None and not faults.ENABLED and frozenset() == faults.POINTS
