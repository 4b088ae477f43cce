"""Persisted jobs: every job ends in a terminal state; results are released only with their finalize step."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from pps.errors import Conflict, Gone, InvalidInput
from pps.infra.jobs import JobContext, JobOutcome
from pps.infra.storage.tables import Job, JobState, Role, utcnow
from pps.ledger.entry import Actor
from pps.runtime import Runtime
from tests.conftest import OrgFactory, OrgHandle

pytestmark = pytest.mark.db


def digest_handler(ctx: JobContext) -> JobOutcome:
    """A real little job: hash the input in steps, reporting progress; fail on request."""
    if ctx.params.get("fail") == "input":
        raise InvalidInput("the input is not acceptable")
    if ctx.params.get("fail") == "crash":
        raise RuntimeError("boom")
    data = ctx.input or b""
    h = hashlib.sha256()
    steps = max(1, len(data) // 1000)
    for i in range(steps):
        h.update(data[i * 1000 : (i + 1) * 1000])
        ctx.progress(i + 1, steps)

    def finalize(session: Session) -> dict[str, Any]:
        if ctx.params.get("fail") == "release":
            raise InvalidInput("consent was revoked meanwhile")
        return {"bytes": len(data)}

    return JobOutcome(
        result=h.digest(), media_type="application/octet-stream", finalize=finalize, released_what="digest"
    )


@pytest.fixture
def jobs_rt(runtime: Runtime) -> Runtime:
    runtime.jobs.register("digest", digest_handler)
    return runtime


def submit(
    rt: Runtime, owner: OrgHandle, params: dict[str, Any] | None = None, data: bytes = b"x" * 5000
) -> str:
    with rt.db.transaction() as s:
        job = rt.jobs.submit(
            s,
            kind="digest",
            actor=Actor(owner.id, owner.role.value),
            purpose=None,
            params=params or {},
            input_blob=data,
        )
        return job.id


def state(rt: Runtime, job_id: str) -> Job:
    with rt.db.transaction(write=False) as s:
        return rt.jobs.get(s, job_id)


def test_a_job_runs_to_success_and_its_result_is_released_once(
    jobs_rt: Runtime, make_org: OrgFactory
) -> None:
    bank = make_org(Role.bank)
    job_id = submit(jobs_rt, bank)
    assert state(jobs_rt, job_id).state is JobState.queued
    jobs_rt.jobs.run(job_id)
    job = state(jobs_rt, job_id)
    assert job.state is JobState.succeeded and job.progress_done == job.progress_total == 5
    with jobs_rt.db.transaction(write=False) as s:
        assert bytes(jobs_rt.jobs.result(s, job).payload) == hashlib.sha256(b"x" * 5000).digest()
        tail = [
            jobs_rt.ledger.entry(s, i).entry
            for i in range(jobs_rt.ledger.size(s) - 2, jobs_rt.ledger.size(s))
        ]
    assert b'"action":"job.submit"' in tail[0]
    assert b'"action":"job.succeeded"' in tail[1] and b'"what":"digest:digest"' in tail[1]
    jobs_rt.jobs.run(job_id)  # running it again does nothing
    assert state(jobs_rt, job_id).finished_at == job.finished_at


@pytest.mark.parametrize(
    ("fail", "code"), [("input", "invalid_input"), ("crash", "internal_error"), ("release", "invalid_input")]
)
def test_failures_end_the_job_and_release_nothing(
    jobs_rt: Runtime, make_org: OrgFactory, fail: str, code: str
) -> None:
    bank = make_org(Role.bank)
    job_id = submit(jobs_rt, bank, {"fail": fail})
    jobs_rt.jobs.run(job_id)
    job = state(jobs_rt, job_id)
    assert job.state is JobState.failed and job.error_code == code
    with jobs_rt.db.transaction(write=False) as s, pytest.raises(Conflict):
        jobs_rt.jobs.result(s, job)


def test_cancel_before_and_during_the_run(jobs_rt: Runtime, make_org: OrgFactory) -> None:
    bank = make_org(Role.bank)
    queued = submit(jobs_rt, bank)
    with jobs_rt.db.transaction() as s:
        jobs_rt.jobs.cancel(s, jobs_rt.jobs.get(s, queued), actor=Actor(bank.id, "bank"))
    assert state(jobs_rt, queued).state is JobState.cancelled
    with jobs_rt.db.transaction() as s, pytest.raises(Conflict):
        jobs_rt.jobs.cancel(s, jobs_rt.jobs.get(s, queued), actor=Actor(bank.id, "bank"))

    running = submit(jobs_rt, bank)

    def cancelling_handler(ctx: JobContext) -> JobOutcome:
        with jobs_rt.db.transaction() as s:
            s.execute(update(Job).where(Job.id == ctx.job_id).values(cancel_requested=True))
        import time

        time.sleep(0.6)  # past the cancellation polling interval
        ctx.progress(1, 2)
        raise AssertionError("progress should have raised JobCancelled")

    jobs_rt.jobs.register("digest", cancelling_handler)
    jobs_rt.jobs.run(running)
    assert state(jobs_rt, running).state is JobState.cancelled


def test_results_expire_and_can_be_deleted(jobs_rt: Runtime, make_org: OrgFactory) -> None:
    bank = make_org(Role.bank)
    job_id = submit(jobs_rt, bank)
    jobs_rt.jobs.run(job_id)
    with jobs_rt.db.transaction(write=False) as s:
        job = jobs_rt.jobs.get(s, job_id)
        with pytest.raises(Gone, match="expired"):
            jobs_rt.jobs.result(s, job, now=utcnow() + timedelta(days=8))
    with jobs_rt.db.transaction() as s:
        jobs_rt.jobs.delete_result(s, jobs_rt.jobs.get(s, job_id), actor=Actor(bank.id, "bank"))
    with jobs_rt.db.transaction(write=False) as s, pytest.raises(Gone, match="deleted"):
        jobs_rt.jobs.result(s, jobs_rt.jobs.get(s, job_id))
    other = submit(jobs_rt, bank)
    jobs_rt.jobs.run(other)
    with jobs_rt.db.transaction() as s:
        assert jobs_rt.jobs.purge_expired(s, now=utcnow() + timedelta(days=8)) == 1


def test_after_a_crash_running_jobs_fail_and_queued_ones_run(jobs_rt: Runtime, make_org: OrgFactory) -> None:
    bank = make_org(Role.bank)
    was_running, was_queued = submit(jobs_rt, bank), submit(jobs_rt, bank)
    with jobs_rt.db.transaction() as s:
        s.execute(update(Job).where(Job.id == was_running).values(state=JobState.running))
    assert jobs_rt.jobs.recover() == (1, 1)
    jobs_rt.jobs.shutdown(wait=True)
    assert state(jobs_rt, was_running).state is JobState.failed
    assert state(jobs_rt, was_running).error_code == "interrupted"
    assert state(jobs_rt, was_queued).state is JobState.succeeded


def test_recovery_leaves_jobs_of_live_workers_alone(jobs_rt: Runtime, make_org: OrgFactory) -> None:
    import socket

    bank = make_org(Role.bank)
    live, dead = submit(jobs_rt, bank), submit(jobs_rt, bank)
    host = socket.gethostname()
    with jobs_rt.db.transaction() as s:  # pid 1 always exists; 2**22 + 7 does not
        s.execute(update(Job).where(Job.id == live).values(state=JobState.running, runner=f"{host}:1"))
        s.execute(
            update(Job).where(Job.id == dead).values(state=JobState.running, runner=f"{host}:{2**22 + 7}")
        )
    assert jobs_rt.jobs.recover() == (1, 0)
    assert state(jobs_rt, live).state is JobState.running
    assert state(jobs_rt, dead).error_code == "interrupted"


def test_jobs_over_the_api(jobs_rt: Runtime, make_org: OrgFactory, http: Callable[..., httpx.Client]) -> None:
    bank, other_bank = make_org(Role.bank), make_org(Role.bank)
    admin = make_org(Role.platform_admin)
    job_id = submit(jobs_rt, bank)
    jobs_rt.jobs.run(job_id)
    mine = http(bank.token)
    got = mine.get(f"/v1/jobs/{job_id}").json()
    assert got["state"] == "succeeded" and got["summary"] == {"bytes": 5000} and got["result_available"]
    assert mine.get(f"/v1/jobs/{job_id}/result").content == hashlib.sha256(b"x" * 5000).digest()
    assert http(other_bank.token).get(f"/v1/jobs/{job_id}").status_code == 404
    assert http(other_bank.token).get(f"/v1/jobs/{job_id}/result").status_code == 404
    assert http(admin.token).get(f"/v1/jobs/{job_id}").status_code == 200  # metadata
    assert http(admin.token).get(f"/v1/jobs/{job_id}/result").status_code == 403  # never results
    assert [j["id"] for j in mine.get("/v1/jobs").json()["items"]] == [job_id]
    assert http(other_bank.token).get("/v1/jobs").json()["items"] == []
    assert mine.delete(f"/v1/jobs/{job_id}/result").status_code == 200
    assert mine.get(f"/v1/jobs/{job_id}/result").status_code == 410
    assert mine.post(f"/v1/jobs/{job_id}/cancel").status_code == 409


def test_unknown_kind_is_refused(jobs_rt: Runtime, make_org: OrgFactory) -> None:
    bank = make_org(Role.bank)
    with pytest.raises(InvalidInput), jobs_rt.db.transaction() as s:
        jobs_rt.jobs.submit(s, kind="mine-bitcoin", actor=Actor(bank.id, "bank"), purpose=None, params={})
