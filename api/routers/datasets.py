"""Datasets: providers create them, upload versions (validated, encrypted at rest) and follow their lineage;
banks discover the catalogue (names, types, units, classes — never values); subjects read their own records.

A provider sees only its own datasets; platform admins and auditors see every dataset's metadata. Nobody
reads another organisation's rows through these routes.
"""

from __future__ import annotations

import io
from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from starlette.concurrency import run_in_threadpool

from api.deps import MAX_INDEX, Caller, PageLimit, RuntimeDep, allow
from api.middleware import current_request_id
from api.routers.audit import entry_out, masked_entry_out
from api.schemas import (
    CatalogColumn,
    CatalogDataset,
    DatasetCreate,
    DatasetPublic,
    EntryOut,
    Page,
    SubjectDataset,
    VersionPublic,
    dataset_public,
    version_public,
)
from pps.data.datasets.ingest import UploadFormat
from pps.errors import InvalidInput, NotFound
from pps.infra.storage.tables import Dataset, Organization, Role
from pps.ledger.entry import EntryDraft, ObjectRef
from pps.ledger.store import EntryFilter
from pps.runtime import Runtime

router = APIRouter(prefix="/v1", tags=["datasets"])

Provider = Annotated[Caller, allow(Role.data_provider)]
MetaReader = Annotated[Caller, allow(Role.data_provider, Role.platform_admin, Role.auditor)]
Subject = Annotated[Caller, allow(Role.subject)]
CatalogReader = Annotated[Caller, allow(Role.bank, Role.platform_admin, Role.auditor)]

UPLOAD_PATH = r"/v1/datasets/[^/]+/versions"


def _visible(rt: Runtime, session: object, caller: Caller, dataset_id: str) -> Dataset:
    ds = rt.datasets.get(session, dataset_id)  # type: ignore[arg-type]
    if caller.role is Role.data_provider and ds.provider_org_id != caller.org_id:
        raise NotFound(f"dataset {dataset_id} does not exist")
    return ds


@router.post("/datasets", status_code=status.HTTP_201_CREATED, summary="declare a dataset and its schema")
def create_dataset(body: DatasetCreate, caller: Provider, rt: RuntimeDep) -> DatasetPublic:
    with rt.db.transaction() as session:
        ds = rt.datasets.create(
            session,
            provider_org_id=caller.org_id,
            name=body.name,
            description=body.description,
            schema=body.schema_,
            actor=caller.actor,
            request_id=current_request_id(),
        )
        return dataset_public(ds)


@router.get("/datasets", summary="datasets (a provider: its own; admins and auditors: all) — metadata only")
def list_datasets(
    caller: MetaReader,
    rt: RuntimeDep,
    limit: PageLimit,
    after: Annotated[str | None, Query(max_length=40)] = None,
) -> Page[DatasetPublic]:
    owner = caller.org_id if caller.role is Role.data_provider else None
    with rt.db.transaction(write=False) as session:
        found = rt.datasets.list_datasets(session, provider_org_id=owner, after=after, limit=limit)
        items = [dataset_public(ds, rt.datasets.versions(session, ds.id)) for ds in found]
    return Page(items=items, next_after=found[-1].id if len(found) == limit else None)


@router.get("/datasets/{dataset_id}", summary="one dataset's metadata and versions")
def get_dataset(dataset_id: str, caller: MetaReader, rt: RuntimeDep) -> DatasetPublic:
    with rt.db.transaction(write=False) as session:
        ds = _visible(rt, session, caller, dataset_id)
        return dataset_public(ds, rt.datasets.versions(session, ds.id))


@router.post(
    "/datasets/{dataset_id}/versions",
    status_code=status.HTTP_201_CREATED,
    summary="upload a new version (the body is the file: CSV, NDJSON or Parquet)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string", "format": "binary"}},
                "application/x-ndjson": {"schema": {"type": "string", "format": "binary"}},
                "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
async def upload_version(
    dataset_id: str,
    request: Request,
    caller: Provider,
    rt: RuntimeDep,
    format: Annotated[UploadFormat, Query(description="csv, ndjson (JSON records, one per line) or parquet")],
) -> VersionPublic:
    body = await request.body()  # held once, in memory; parsed as a stream; never written to disk
    if not body:
        raise InvalidInput("the request body is empty: send the file as the body")
    request_id = current_request_id()

    def store() -> VersionPublic:
        with rt.db.transaction() as session:
            ds = _visible(rt, session, caller, dataset_id)
            version = rt.datasets.upload(
                session,
                ds,
                stream=io.BytesIO(body),
                fmt=format,
                actor=caller.actor,
                request_id=request_id,
                size_bytes=len(body),
            )
            return version_public(version)

    return await run_in_threadpool(store)


@router.delete("/datasets/{dataset_id}", summary="delete a dataset (crypto-shred every version)")
def delete_dataset(dataset_id: str, caller: Provider, rt: RuntimeDep) -> DatasetPublic:
    with rt.db.transaction() as session:
        ds = _visible(rt, session, caller, dataset_id)
        rt.datasets.delete(session, ds, actor=caller.actor, request_id=current_request_id())
        return dataset_public(ds, rt.datasets.versions(session, ds.id))


@router.get("/datasets/{dataset_id}/lineage", summary="every ledger entry about this dataset")
def lineage(
    dataset_id: str,
    caller: MetaReader,
    rt: RuntimeDep,
    limit: PageLimit,
    after: Annotated[int | None, Query(ge=-1, le=MAX_INDEX)] = None,
) -> Page[EntryOut]:
    with rt.db.transaction(write=False) as session:
        ds = rt.datasets.get(session, dataset_id, include_deleted=True)
        if caller.role is Role.data_provider and ds.provider_org_id != caller.org_id:
            raise NotFound(f"dataset {dataset_id} does not exist")
        found = rt.ledger.entries(session, EntryFilter(object=("dataset", ds.id)), after=after, limit=limit)
    rt.reads.note(  # where the data went, read page by page: noted, written in batches
        actor=caller.actor,
        what="dataset.lineage",
        objects=(ObjectRef("dataset", ds.id),),
        request_id=current_request_id(),
    )
    items = [entry_out(e) if caller.sees_everything else masked_entry_out(e, caller) for e in found]
    return Page(items=items, next_after=found[-1].index if len(found) == limit else None)


@router.get("/catalog", summary="what data the safe-room holds: datasets and columns, never values")
def catalog(caller: CatalogReader, rt: RuntimeDep) -> list[CatalogDataset]:
    out = []
    with rt.db.transaction(write=False) as session:
        providers = {
            o.id: o.name for o in session.query(Organization).filter(Organization.role == Role.data_provider)
        }
        for ds in rt.datasets.list_datasets(session, limit=10_000):
            schema = rt.datasets.schema_of_dataset(ds)
            version = rt.datasets.current(session, ds)
            out.append(
                CatalogDataset(
                    id=ds.id,
                    name=ds.name,
                    description=ds.description,
                    provider=providers.get(ds.provider_org_id, ds.provider_org_id),
                    rows=version.row_count if version else None,
                    subject_key=schema.subject_key,
                    period_key=schema.period_key,
                    record_key=schema.record_key,
                    columns=[CatalogColumn(**c.model_dump(mode="json")) for c in schema.columns],
                )
            )
    return out


@router.get("/me/records", summary="an enterprise's own records in every dataset (free self-query)")
def my_records(caller: Subject, rt: RuntimeDep) -> list[SubjectDataset]:
    if caller.uscc is None:  # subjects always carry one (a database constraint)
        raise NotFound("this organisation has no USCC")
    with rt.db.transaction(write=False) as session:  # decrypting happens outside the write lock
        found = rt.datasets.records_of(session, caller.uscc)
        providers = {
            o.id: o.name for o in session.query(Organization).filter(Organization.role == Role.data_provider)
        }
    with rt.db.transaction() as session:  # no entry, no answer: the rows are returned only after this commits
        rt.ledger.append(
            session,
            EntryDraft(
                action="subject.self_query",
                actor=caller.actor,
                objects=tuple(ObjectRef("dataset", r.dataset.id) for r in found),
                subjects=(caller.uscc,),
                request_id=current_request_id(),
                detail={"datasets": len(found), "rows": sum(len(r.rows) for r in found)},
            ),
        )
    return [
        SubjectDataset(
            dataset_id=r.dataset.id,
            dataset=r.dataset.name,
            provider=providers.get(r.dataset.provider_org_id, r.dataset.provider_org_id),
            version=r.version,
            columns=[CatalogColumn(**c.model_dump(mode="json")) for c in r.schema.columns],
            rows=r.rows,
        )
        for r in found
    ]
