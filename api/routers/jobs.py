"""Jobs: their owners follow, cancel, fetch and delete them; admins and auditors see their metadata only.

A job's result is for the organisation that submitted it and nobody else — not even a platform admin.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from api.deps import Caller, PageLimit, RuntimeDep, allow
from api.middleware import current_request_id
from api.schemas import JobPublic, Page, job_public
from pps.errors import NotFound
from pps.infra.storage.tables import Job, Role
from pps.ledger.entry import ObjectRef

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

Owner = Annotated[Caller, allow(Role.bank, Role.data_provider, Role.subject)]
Viewer = Annotated[Caller, allow()]


def _visible(job: Job, caller: Caller) -> Job:
    if job.owner_org_id != caller.org_id and not caller.sees_everything:
        raise NotFound(f"job {job.id} does not exist")
    return job


def _owned(job: Job, caller: Caller) -> Job:
    if job.owner_org_id != caller.org_id:
        raise NotFound(f"job {job.id} does not exist")
    return job


@router.get("", summary="jobs: your own (admins and auditors: all, metadata only)")
def list_jobs(
    caller: Viewer,
    rt: RuntimeDep,
    limit: PageLimit,
    after: Annotated[str | None, Query(max_length=40)] = None,
) -> Page[JobPublic]:
    with rt.db.transaction(write=False) as session:
        found = rt.jobs.list_jobs(
            session, owner_org_id=None if caller.sees_everything else caller.org_id, after=after, limit=limit
        )
        items = [job_public(j) for j in found]
    return Page(items=items, next_after=found[-1].id if len(found) == limit else None)


@router.get("/{job_id}", summary="one job: state, progress, summary")
def get_job(job_id: str, caller: Viewer, rt: RuntimeDep) -> JobPublic:
    with rt.db.transaction(write=False) as session:
        return job_public(_visible(rt.jobs.get(session, job_id), caller))


@router.post("/{job_id}/cancel", summary="cancel a job that has not finished")
def cancel_job(job_id: str, caller: Owner, rt: RuntimeDep) -> JobPublic:
    with rt.db.transaction() as session:
        job = rt.jobs.cancel(
            session,
            _owned(rt.jobs.get(session, job_id), caller),
            actor=caller.actor,
            request_id=current_request_id(),
        )
        return job_public(job)


@router.get(
    "/{job_id}/result",
    summary="the job's result (its owner only)",
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def job_result(job_id: str, caller: Owner, rt: RuntimeDep) -> Response:
    with rt.db.transaction() as session:  # no entry, no download: the bytes leave after the entry commits
        job = _owned(rt.jobs.get(session, job_id), caller)
        blob = rt.jobs.result(session, job)
        rt.reads.record(
            session,
            actor=caller.actor,
            action="read.job_result",
            objects=(ObjectRef("job", job.id),),
            # whom the result is about (its release entries named them): the read shows in their history
            subjects=rt.ledger.subjects_of(session, ("job", job.id), "policy.release"),
            request_id=current_request_id(),
            detail={"kind": job.kind, "media_type": blob.media_type, "bytes": len(blob.payload)},
        )
        payload, media_type = bytes(blob.payload), blob.media_type
    return Response(payload, media_type=media_type)


@router.delete("/{job_id}/result", summary="delete the job's result now")
def delete_result(job_id: str, caller: Owner, rt: RuntimeDep) -> JobPublic:
    with rt.db.transaction() as session:
        job = rt.jobs.delete_result(
            session,
            _owned(rt.jobs.get(session, job_id), caller),
            actor=caller.actor,
            request_id=current_request_id(),
        )
        return job_public(job)
