"""Persisted jobs: heavy computations (PSI, batch scoring, training) that must not hold a request open.

Life of a job::

    submit ──► queued ──► running ──► succeeded      (result stored and released in one transaction)
                  │           ├──────► failed         (with a machine-readable code and a message)
                  └───────────┴──────► cancelled      (on request; checked between steps)

* A job is stored (with its input) in the submitting request's transaction before anything runs, and its
  submission is a ledger entry: an accepted job is never lost.
* A handler computes; it cannot release anything itself. It returns a result and a ``finalize`` step that
  runs in the same transaction that stores the result — that is where the policy engine re-checks consent
  and the release is written to the ledger. A crash before that commit leaves no result and no release.
* On start-up, jobs left ``running`` by a crashed process are marked failed (``interrupted``) and ``queued``
  ones are queued again. Results are kept until ``expires_at`` and can be deleted earlier by their owner.
* Only the owner can read a result; platform admins and auditors see job metadata, never results.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from pps.errors import Conflict, Gone, InvalidInput, JobCancelled, NotFound, translate
from pps.infra.storage.db import Database
from pps.infra.storage.tables import TERMINAL_JOB_STATES, Job, JobBlob, JobState, new_id, utcnow
from pps.ledger.entry import Actor, EntryDraft, ObjectRef, Release
from pps.ledger.store import Ledger

log = logging.getLogger("pps.infra.jobs")

PROGRESS_INTERVAL_S = 0.5
RUNNER = f"{socket.gethostname()}:{os.getpid()}"


def _runner_alive(runner: str | None) -> bool:
    if not runner or ":" not in runner:
        return False
    host, _, pid = runner.rpartition(":")
    if host != socket.gethostname():
        return True  # another host's worker: not ours to judge
    if not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False  # this process is starting up: whatever it "ran" before is gone
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class JobContext:
    """What a handler sees of its job."""

    job_id: str
    owner_org_id: str
    purpose: str | None
    params: dict[str, Any]
    input: bytes | None
    _report: Callable[[int, int], None]
    _cancelled: Callable[[], bool]

    def progress(self, done: int, total: int) -> None:
        """Report progress; raises :class:`JobCancelled` if cancellation was requested meanwhile."""
        self._report(done, total)
        if self._cancelled():
            raise JobCancelled(f"job {self.job_id} was cancelled")


@dataclass
class JobOutcome:
    result: bytes
    media_type: str
    finalize: Callable[[Session], dict[str, Any]]
    """Runs in the transaction that stores the result: re-check policy, write the release entries; returns
    the summary the owner may read. Raising here fails the job and releases nothing."""
    released_what: str = "result"


Handler = Callable[[JobContext], JobOutcome]


@dataclass
class JobService:
    db: Database
    ledger: Ledger
    workers: int = 2
    result_ttl: timedelta = timedelta(days=7)
    handlers: dict[str, Handler] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    # --- lifecycle -----------------------------------------------------------------------------------

    def register(self, kind: str, handler: Handler) -> None:
        self.handlers[kind] = handler

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="pps-job")
            return self._pool

    def enqueue(self, job_id: str) -> None:
        """Run a committed job in the background."""
        self._executor().submit(self.run, job_id)

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=wait)
                self._pool = None

    def recover(self) -> tuple[int, int]:
        """After a (re)start: fail the jobs whose process died (they cannot resume), queue the queued ones.

        A running job counts as dead if its runner is this host and that process no longer exists (or no
        runner was recorded); jobs run by live processes — other API workers — are left alone.
        """
        with self.db.transaction() as s:
            running = list(s.execute(select(Job).where(Job.state == JobState.running)).scalars())
            interrupted = [j for j in running if not _runner_alive(j.runner)]
            for job in interrupted:
                self._finish(
                    s,
                    job,
                    JobState.failed,
                    code="interrupted",
                    message="the service restarted while this job ran; nothing was released — submit it again",
                )
            queued = list(s.execute(select(Job.id).where(Job.state == JobState.queued)).scalars())
        for job_id in queued:
            self.enqueue(job_id)
        return len(interrupted), len(queued)

    # --- submission ----------------------------------------------------------------------------------

    def submit(
        self,
        session: Session,
        *,
        kind: str,
        actor: Actor,
        purpose: str | None,
        params: dict[str, Any],
        input_blob: bytes | None = None,
        input_media_type: str = "application/octet-stream",
        subjects: tuple[str, ...] = (),
        consent_ids: tuple[str, ...] = (),
        progress_total: int = 0,
        request_id: str | None = None,
    ) -> Job:
        """Persist a job (queued) in the caller's transaction; call :meth:`enqueue` after the commit."""
        if kind not in self.handlers:
            raise InvalidInput(f"unknown job kind {kind!r}")
        if actor.org_id is None:
            raise InvalidInput("a job belongs to an organisation")
        now = utcnow()
        job = Job(
            id=new_id("job"),
            kind=kind,
            owner_org_id=actor.org_id,
            purpose=purpose,
            state=JobState.queued,
            params_json=json.dumps(params, sort_keys=True),
            progress_done=0,
            progress_total=progress_total,
            cancel_requested=False,
            request_id=request_id,
            created_at=now,
            expires_at=now + self.result_ttl,
        )
        session.add(job)
        if input_blob is not None:
            session.add(JobBlob(job_id=job.id, role="input", media_type=input_media_type, payload=input_blob))
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="job.submit",
                actor=actor,
                objects=(ObjectRef("job", job.id),),
                subjects=subjects,
                purpose=purpose,
                consent_ids=consent_ids,
                request_id=request_id,
                detail={"kind": kind, "params": params},
            ),
        )
        return job

    # --- running -------------------------------------------------------------------------------------

    def run(self, job_id: str) -> None:
        """Run one job to a terminal state (called on an executor thread, or directly in tests)."""
        with self.db.transaction() as s:
            job = s.get(Job, job_id, with_for_update=True)  # two workers may pick up the same queued job
            if job is None or job.state is not JobState.queued:
                return
            if job.cancel_requested:
                self._finish(s, job, JobState.cancelled)
                return
            job.state = JobState.running
            job.started_at = utcnow()
            job.runner = RUNNER
            blob = s.get(JobBlob, (job_id, "input"))
            ctx = JobContext(
                job_id=job.id,
                owner_org_id=job.owner_org_id,
                purpose=job.purpose,
                params=json.loads(job.params_json),
                input=bytes(blob.payload) if blob else None,
                _report=self._reporter(job.id),
                _cancelled=self._cancel_checker(job.id),
            )
            handler = self.handlers[job.kind]
        try:
            outcome = handler(ctx)
            with self.db.transaction() as s:  # the result and its release commit together, or neither
                job = s.get(Job, job_id)
                if job is None:
                    return
                if job.cancel_requested:
                    raise JobCancelled(f"job {job_id} was cancelled")
                summary = outcome.finalize(s)
                s.add(
                    JobBlob(
                        job_id=job_id, role="result", media_type=outcome.media_type, payload=outcome.result
                    )
                )
                job.summary_json = json.dumps(summary, sort_keys=True)
                job.progress_done = job.progress_total
                self._finish(s, job, JobState.succeeded, released=outcome.released_what)
        except JobCancelled:
            self._end(job_id, JobState.cancelled)
        except Exception as exc:
            error = translate(exc)  # a PPSError, or a protocol or enclave error raised on purpose
            if error is not None:
                self._end(job_id, JobState.failed, code=error.code, message=error.message)
                return
            log.exception("job %s failed", job_id)
            self._end(
                job_id, JobState.failed, code="internal_error", message="the job failed; nothing was released"
            )

    def _end(
        self, job_id: str, state: JobState, *, code: str | None = None, message: str | None = None
    ) -> None:
        with self.db.transaction() as s:
            job = s.get(Job, job_id)
            if job is not None and job.state not in TERMINAL_JOB_STATES:
                self._finish(s, job, state, code=code, message=message)

    def _finish(
        self,
        s: Session,
        job: Job,
        state: JobState,
        *,
        code: str | None = None,
        message: str | None = None,
        released: str | None = None,
    ) -> None:
        job.state = state
        job.finished_at = utcnow()
        job.error_code, job.error_message = code, message
        s.flush()
        self.ledger.append(
            s,
            EntryDraft(
                action=f"job.{state.value}",
                actor=Actor(None, "service", "job"),
                objects=(ObjectRef("job", job.id),),
                purpose=job.purpose,
                released=(Release(to=job.owner_org_id, what=f"{job.kind}:{released}"),) if released else (),
                detail={"kind": job.kind, **({"error": code} if code else {})},
            ),
        )

    def _reporter(self, job_id: str) -> Callable[[int, int], None]:
        last = [0.0]

        def report(done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] < PROGRESS_INTERVAL_S and done < total:
                return
            last[0] = now
            with self.db.transaction() as s:
                s.execute(
                    update(Job).where(Job.id == job_id).values(progress_done=done, progress_total=total)
                )

        return report

    def _cancel_checker(self, job_id: str) -> Callable[[], bool]:
        last = [0.0, False]

        def cancelled() -> bool:
            now = time.monotonic()
            if now - float(last[0]) >= PROGRESS_INTERVAL_S:
                with self.db.transaction(write=False) as s:
                    last[1] = bool(
                        s.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar_one()
                    )
                last[0] = now
            return bool(last[1])

        return cancelled

    # --- owner actions -------------------------------------------------------------------------------

    def get(self, session: Session, job_id: str) -> Job:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"job {job_id} does not exist")
        return job

    def list_jobs(
        self, session: Session, *, owner_org_id: str | None, after: str | None = None, limit: int = 50
    ) -> list[Job]:
        query = select(Job).order_by(Job.id).limit(limit)
        if owner_org_id is not None:
            query = query.where(Job.owner_org_id == owner_org_id)
        if after is not None:
            query = query.where(Job.id > after)
        return list(session.execute(query).scalars())

    def cancel(self, session: Session, job: Job, *, actor: Actor, request_id: str | None = None) -> Job:
        if job.state in TERMINAL_JOB_STATES:
            raise Conflict(f"job {job.id} has already {job.state.value}")
        job.cancel_requested = True
        if job.state is JobState.queued:
            self._finish(session, job, JobState.cancelled)
        session.flush()
        return job

    def result(self, session: Session, job: Job, *, now: datetime | None = None) -> JobBlob:
        now = now or utcnow()
        if job.state is not JobState.succeeded:
            raise Conflict(f"job {job.id} is {job.state.value}; a result exists only once it has succeeded")
        if job.result_deleted_at is not None:
            raise Gone(f"the result of job {job.id} was deleted at {job.result_deleted_at.isoformat()}")
        if job.expires_at <= now:
            raise Gone(f"the result of job {job.id} expired at {job.expires_at.isoformat()}")
        blob = session.get(JobBlob, (job.id, "result"))
        if blob is None:
            raise Gone(f"the result of job {job.id} is no longer stored")
        return blob

    def delete_result(
        self, session: Session, job: Job, *, actor: Actor, request_id: str | None = None
    ) -> Job:
        if job.result_deleted_at is not None:
            raise Gone(f"the result of job {job.id} was already deleted")
        session.execute(delete(JobBlob).where(JobBlob.job_id == job.id))
        job.result_deleted_at = utcnow()
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="job.result.delete",
                actor=actor,
                objects=(ObjectRef("job", job.id),),
                request_id=request_id,
                detail={"kind": job.kind},
            ),
        )
        return job

    def purge_expired(self, session: Session, *, now: datetime | None = None) -> int:
        """Delete the inputs and results of jobs past their expiry; returns how many jobs were purged."""
        now = now or utcnow()
        expired = list(
            session.execute(
                select(Job.id).where(Job.expires_at <= now, Job.result_deleted_at.is_(None))
            ).scalars()
        )
        if expired:
            session.execute(delete(JobBlob).where(JobBlob.job_id.in_(expired)))
            session.execute(update(Job).where(Job.id.in_(expired)).values(result_deleted_at=now))
        return len(expired)
