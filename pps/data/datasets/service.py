"""Datasets: create, upload a version (validate, encrypt, store), read back, shred, lineage.

Plaintext never reaches the database or the disk: an upload is parsed from memory, validated, cut into
column chunks, and each chunk is encrypted with the version's data key before it is inserted. The data key
is stored only wrapped by the KMS. Deleting a dataset shreds it: its chunks and wrapped keys are deleted, and
the ledger keeps the record that it existed, who uploaded it and when.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

import numpy as np
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pps.data.datasets import codec
from pps.data.datasets.ingest import (
    CONVERTERS,
    Chunker,
    ConversionError,
    UploadFormat,
    UploadLimits,
    read_chunks,
)
from pps.data.datasets.schema import ColumnType, DatasetSchema
from pps.errors import Conflict, DataIntegrityError, InvalidInput, NotFound, UploadRejected
from pps.infra.kms import KeyEncryptionKeys, WrappedKey, new_data_key
from pps.infra.storage.tables import (
    Dataset,
    DatasetChunk,
    DatasetVersion,
    Person,
    PersonNotice,
    SealedDataset,
    new_id,
    utcnow,
)
from pps.infra.text import check_name, check_text
from pps.ledger.entry import Actor, EntryDraft, ObjectRef
from pps.ledger.store import Ledger

CHUNK_ROWS = 65_536


@dataclass(frozen=True)
class SubjectRecords:
    dataset: Dataset
    version: int
    schema: DatasetSchema
    rows: list[dict[str, Any]]


@dataclass(frozen=True)
class RecordRef:
    """Where one record is in a version: its row, the chunk holding it and the row's position in that chunk."""

    row: int
    chunk: int
    offset: int


@dataclass(frozen=True)
class Correction:
    """What :meth:`DatasetService.correct` made: the new version and the fields whose value changed."""

    version: DatasetVersion
    previous: int
    changed: tuple[str, ...]


class DatasetService:
    def __init__(
        self,
        ledger: Ledger,
        kms: KeyEncryptionKeys,
        *,
        chunk_rows: int = CHUNK_ROWS,
        limits: UploadLimits | None = None,
        pseudonymize: Callable[[str], str] | None = None,
    ) -> None:
        self.limits = limits or UploadLimits()
        self.pseudonymize = pseudonymize
        """resident ID number -> person code, for ``resident_id`` subject keys (``pps.identity.persons``)"""
        self.ledger = ledger
        self.kms = kms
        self.chunk_rows = chunk_rows

    # --- datasets ------------------------------------------------------------------------------------

    def create(
        self,
        session: Session,
        *,
        provider_org_id: str,
        name: str,
        description: str,
        schema: DatasetSchema,
        actor: Actor,
        request_id: str | None = None,
    ) -> Dataset:
        name = name.strip()
        if not name:
            raise InvalidInput("a dataset needs a name")
        check_name(name, "the dataset name")
        check_text(description, "the dataset description")
        exists = session.execute(
            select(Dataset.id).where(Dataset.provider_org_id == provider_org_id, Dataset.name == name)
        ).first()
        if exists:
            raise Conflict(
                f"you already have a dataset named {name!r} ({exists[0]}); upload a new version to it"
            )
        ds = Dataset(
            id=new_id("ds"),
            provider_org_id=provider_org_id,
            name=name,
            description=description,
            schema_json=schema.model_dump_json(),
            current_version=None,
            created_at=utcnow(),
        )
        session.add(ds)
        try:
            session.flush()
        except IntegrityError as exc:
            raise Conflict(f"you already have a dataset named {name!r}") from exc
        self.ledger.append(
            session,
            EntryDraft(
                action="dataset.create",
                actor=actor,
                objects=(ObjectRef("dataset", ds.id), ObjectRef("org", provider_org_id)),
                request_id=request_id,
                detail={
                    "name": name,
                    "columns": [c.name for c in schema.columns],
                    "classes": {c.name: c.sensitivity.value for c in schema.columns},
                },
            ),
        )
        return ds

    def get(self, session: Session, dataset_id: str, *, include_deleted: bool = False) -> Dataset:
        ds = session.get(Dataset, dataset_id)
        if ds is None or (ds.deleted_at is not None and not include_deleted):
            raise NotFound(f"dataset {dataset_id} does not exist")
        return ds

    def get_by_name(self, session: Session, provider_org_id: str, name: str) -> Dataset | None:
        return session.execute(
            select(Dataset).where(
                Dataset.provider_org_id == provider_org_id, Dataset.name == name, Dataset.deleted_at.is_(None)
            )
        ).scalar_one_or_none()

    def list_datasets(
        self,
        session: Session,
        *,
        provider_org_id: str | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> list[Dataset]:
        query = select(Dataset).where(Dataset.deleted_at.is_(None)).order_by(Dataset.id).limit(limit)
        if provider_org_id is not None:
            query = query.where(Dataset.provider_org_id == provider_org_id)
        if after is not None:
            query = query.where(Dataset.id > after)
        return list(session.execute(query).scalars())

    def versions(self, session: Session, dataset_id: str) -> list[DatasetVersion]:
        return list(
            session.execute(
                select(DatasetVersion)
                .where(DatasetVersion.dataset_id == dataset_id)
                .order_by(DatasetVersion.version)
            ).scalars()
        )

    def current(self, session: Session, ds: Dataset) -> DatasetVersion | None:
        if ds.current_version is None:
            return None
        return session.get(DatasetVersion, (ds.id, ds.current_version))

    # --- upload --------------------------------------------------------------------------------------

    def upload(
        self,
        session: Session,
        ds: Dataset,
        *,
        stream: IO[bytes],
        fmt: UploadFormat,
        actor: Actor,
        request_id: str | None = None,
        size_bytes: int | None = None,
        now: datetime | None = None,
    ) -> DatasetVersion:
        """Validate and store a new version in the caller's transaction; nothing is stored if it is refused."""
        if ds.deleted_at is not None:
            raise Conflict(f"dataset {ds.id} was deleted")
        if (
            session.get(SealedDataset, ds.id) is not None
        ):  # pps.services.sealed: the provider keeps plaintext away
            raise Conflict(
                f"dataset {ds.id} is sealed: it takes only columns encrypted under the enclave's context "
                "(POST /v1/sealed/datasets), never a plaintext upload"
            )
        # one upload per dataset at a time: the version number is max + 1
        session.execute(select(Dataset.id).where(Dataset.id == ds.id).with_for_update())
        schema = DatasetSchema.model_validate_json(ds.schema_json)
        now = now or utcnow()
        number = self._next_version(session, ds.id)
        dek = new_data_key()
        wrapped = self.kms.wrap(dek, codec.dek_aad(ds.id, number))
        version = DatasetVersion(
            dataset_id=ds.id,
            version=number,
            schema_json=ds.schema_json,
            format=fmt.value,
            row_count=0,
            chunk_rows=self.chunk_rows,
            chunk_count=0,
            kek_version=wrapped.kek_version,
            wrapped_dek=wrapped.blob,
            created_at=now,
        )
        session.add(version)
        session.flush()
        chunker = Chunker(
            schema, chunk_rows=self.chunk_rows, limits=self.limits, pseudonymize=self.pseudonymize
        )
        conn = session.connection()
        types = {c.name: c.type for c in schema.columns}
        chunk_index = 0
        persons_named: set[str] = set()
        persons_keyed = types[schema.subject_key] is ColumnType.resident_id
        needs_notice = schema.negative and persons_keyed
        for chunk in read_chunks(stream, fmt, chunker):
            rows = len(chunk[schema.subject_key])
            if persons_keyed:
                persons_named.update(chunk[schema.subject_key])
            else:  # individual businesses (92...) that may have been erased as persons
                persons_named.update(k for k in chunk[schema.subject_key] if str(k)[:2] == "92")
            conn.execute(
                insert(DatasetChunk),
                [
                    {
                        "dataset_id": ds.id,
                        "version": number,
                        "column": name,
                        "chunk": chunk_index,
                        "ciphertext": codec.seal(
                            dek,
                            codec.chunk_aad(ds.id, number, name, chunk_index, rows),
                            codec.encode(types[name], values),
                        ),
                    }
                    for name, values in chunk.items()
                ],
            )
            chunk_index += 1
        if persons_named:
            self._check_erased(session, persons_named)
        if persons_named and needs_notice:
            self._check_notices(session, ds, persons_named, now)
        version.row_count = chunker.rows
        version.chunk_count = chunk_index
        ds.current_version = number
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="dataset.upload",
                actor=actor,
                objects=(ObjectRef("dataset", ds.id), ObjectRef("dataset_version", f"{ds.id}@{number}")),
                request_id=request_id,
                detail={
                    "version": number,
                    "rows": chunker.rows,
                    "format": fmt.value,
                    "bytes": size_bytes,
                    "kek_version": wrapped.kek_version,
                },
            ),
            now=now,
        )
        return version

    @staticmethod
    def _check_erased(session: Session, codes: set[str]) -> None:
        """No rows about a person who had its data erased (PIPL Art. 47): the provider must drop them."""
        erased = sorted(  # few persons erase: intersect here rather than bind every code of the upload
            codes & set(session.scalars(select(Person.code).where(Person.erased_at.is_not(None))))
        )
        if erased:
            raise UploadRejected(
                f"upload refused, nothing stored: {len(erased)} person(s) in it asked for their data to be "
                "deleted (PIPL Art. 47); remove their rows and upload again",
                details={"erased_persons": erased[:50], "count": len(erased)},
            )

    def _check_notices(self, session: Session, ds: Dataset, codes: set[str], now: datetime) -> None:
        """Negative information about a person only after the provider told that person (Art. 15)."""
        noticed = set(
            session.execute(
                select(PersonNotice.subject_code).where(
                    PersonNotice.provider_org_id == ds.provider_org_id,
                    PersonNotice.dataset_id == ds.id,
                    PersonNotice.created_at <= now,
                )
            ).scalars()
        )
        missing = sorted(codes - noticed)
        if missing:
            raise UploadRejected(
                f"upload refused, nothing stored: {len(missing)} person(s) in this negative-information dataset "
                "were not given notice before it is supplied (征信业管理条例 Art. 15); give notice first with "
                "POST /v1/persons/notices",
                details={"persons_without_notice": missing[:50], "count": len(missing)},
            )

    # --- reading -------------------------------------------------------------------------------------

    def _dek(self, version: DatasetVersion) -> bytes:
        if version.wrapped_dek is None or version.kek_version is None:
            raise NotFound(f"dataset version {version.dataset_id}@{version.version} was shredded")
        return self.kms.unwrap(
            WrappedKey(version.kek_version, version.wrapped_dek),
            codec.dek_aad(version.dataset_id, version.version),
        )

    def _next_version(self, session: Session, dataset_id: str) -> int:
        """max + 1; the caller holds the dataset row's lock, so two new versions never get one number."""
        latest = session.execute(
            select(func.max(DatasetVersion.version)).where(DatasetVersion.dataset_id == dataset_id)
        ).scalar_one()
        return int(latest or 0) + 1

    def read_columns(
        self, session: Session, version: DatasetVersion, columns: Iterable[str]
    ) -> dict[str, codec.Column]:
        """Decrypt whole columns of a version (all chunks, in order)."""
        schema = DatasetSchema.model_validate_json(version.schema_json)
        wanted = list(dict.fromkeys(columns))
        for name in wanted:
            schema.column(name)  # KeyError for unknown columns is a programming error
        dek = self._dek(version)
        out: dict[str, codec.Column] = {}
        for name in wanted:
            parts = self._chunks(session, version, name, dek, range(version.chunk_count))
            out[name] = codec.Column(
                np.concatenate([p.values for p in parts]) if parts else np.empty(0),
                np.concatenate([p.valid for p in parts]) if parts else np.empty(0, dtype=bool),
            )
        return out

    def _chunks(
        self, session: Session, version: DatasetVersion, column: str, dek: bytes, indices: Iterable[int]
    ) -> list[codec.Column]:
        wanted = list(indices)
        rows = session.execute(
            select(DatasetChunk.chunk, DatasetChunk.ciphertext)
            .where(
                DatasetChunk.dataset_id == version.dataset_id,
                DatasetChunk.version == version.version,
                DatasetChunk.column == column,
                DatasetChunk.chunk.in_(wanted),
            )
            .order_by(DatasetChunk.chunk)
        ).all()
        if [r.chunk for r in rows] != wanted:
            raise DataIntegrityError(
                f"chunks of {version.dataset_id}@{version.version} column {column} are missing"
            )
        out = []
        for index, blob in rows:
            n = min(version.chunk_rows, version.row_count - index * version.chunk_rows)
            aad = codec.chunk_aad(version.dataset_id, version.version, column, index, n)
            out.append(codec.decode(codec.open_sealed(dek, aad, bytes(blob))))
        return out

    def records_of(self, session: Session, uscc: str) -> list[SubjectRecords]:
        """Every row about one subject in the current version of every live dataset (its own view)."""
        found = []
        for ds in session.execute(
            select(Dataset).where(Dataset.deleted_at.is_(None), Dataset.current_version.is_not(None))
        ).scalars():
            version = self.current(session, ds)
            if version is None or version.wrapped_dek is None:
                continue
            rows_out = self.rows_of(session, version, uscc)
            if rows_out:
                schema = DatasetSchema.model_validate_json(version.schema_json)
                found.append(SubjectRecords(ds, version.version, schema, rows_out))
        return found

    def rows_of(self, session: Session, version: DatasetVersion, uscc: str) -> list[dict[str, Any]]:
        """Every row about one subject in one version, every column (decrypted only where the subject's rows are)."""
        return self.rows_of_many(session, version, [uscc]).get(uscc, [])

    def rows_of_many(
        self, session: Session, version: DatasetVersion, usccs: Iterable[str]
    ) -> dict[str, list[dict[str, Any]]]:
        """Every row about each of ``usccs`` in one version, every column: the subject key column is decrypted
        once, the other columns only in the chunks holding those subjects' rows."""
        wanted = np.asarray(sorted(set(usccs)), dtype=object)
        schema = DatasetSchema.model_validate_json(version.schema_json)
        dek = self._dek(version)
        keys = self._chunks(session, version, schema.subject_key, dek, range(version.chunk_count))
        hits = {i: np.nonzero(np.isin(k.values, wanted))[0] for i, k in enumerate(keys)}
        hits = {i: rows for i, rows in hits.items() if len(rows)}
        out: dict[str, list[dict[str, Any]]] = {}
        if not hits:
            return out
        columns = {c.name: self._chunks(session, version, c.name, dek, sorted(hits)) for c in schema.columns}
        for pos, chunk_index in enumerate(sorted(hits)):
            for r in hits[chunk_index]:
                row = {name: _py(parts[pos], int(r)) for name, parts in columns.items()}
                out.setdefault(str(row[schema.subject_key]), []).append(row)
        return out

    # --- single records and corrections (pps.governance.objections) ---------------------------------------------

    def locate(
        self, session: Session, version: DatasetVersion, uscc: str, key: str | None
    ) -> RecordRef | None:
        """Where the record ``(uscc, key)`` is in ``version`` (``key``: the period or record key value, None for
        a dataset keyed by the subject alone), or None."""
        schema = DatasetSchema.model_validate_json(version.schema_json)
        extra = schema.period_key or schema.record_key
        if (extra is None) != (key is None):
            return None
        dek = self._dek(version)
        subjects = self._chunks(session, version, schema.subject_key, dek, range(version.chunk_count))
        for index, part in enumerate(subjects):
            hits = [int(h) for h in np.nonzero(part.values == uscc)[0]]
            if hits and extra is not None:
                keys = self._chunks(session, version, extra, dek, [index])[0]
                hits = [h for h in hits if keys.valid[h] and keys.values[h] == key]
            if hits:
                return RecordRef(index * version.chunk_rows + hits[0], index, hits[0])
        return None

    def record(self, session: Session, version: DatasetVersion, where: RecordRef) -> dict[str, Any]:
        """The values of one located record (for its subject's own view and for comparing a correction)."""
        schema = DatasetSchema.model_validate_json(version.schema_json)
        dek = self._dek(version)
        return {
            c.name: _py(self._chunks(session, version, c.name, dek, [where.chunk])[0], where.offset)
            for c in schema.columns
        }

    def correct(
        self,
        session: Session,
        ds: Dataset,
        *,
        uscc: str,
        key: str | None,
        values: Mapping[str, Any],
        actor: Actor,
        objects: Sequence[ObjectRef] = (),
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> Correction:
        """A new version: the current one with one record's fields replaced by ``values``, under a new data key.

        Every chunk is opened with the old data key and sealed again under the new one (with the new version
        in its associated data); only the chunks holding the record are decoded and changed. The old versions
        stay as they are. ``values`` are checked against the schema's types (``InvalidInput`` naming the
        field); key fields cannot be changed; a correction that changes nothing is refused. Nothing is written
        unless everything checks; the caller's transaction holds the new version and its ledger entry.
        """
        if ds.deleted_at is not None:
            raise NotFound(f"dataset {ds.id} was deleted")
        session.execute(select(Dataset.id).where(Dataset.id == ds.id).with_for_update())
        session.refresh(ds)
        old = self.current(session, ds)
        if old is None or old.wrapped_dek is None:
            raise Conflict(f"dataset {ds.id} has no readable current version to correct")
        schema = DatasetSchema.model_validate_json(old.schema_json)
        typed = check_values(schema, values)
        where = self.locate(session, old, uscc, key)
        if where is None:
            raise Conflict(
                f"the record is not in the current version {old.version} of dataset {ds.id} (replaced since?)"
            )
        before = self.record(session, old, where)
        changed = tuple(sorted(name for name, v in typed.items() if before[name] != v))
        if not changed:
            raise InvalidInput("the corrected values equal the current ones: nothing would change")
        now = now or utcnow()
        number = self._next_version(session, ds.id)
        old_dek = self._dek(old)
        dek = new_data_key()
        wrapped = self.kms.wrap(dek, codec.dek_aad(ds.id, number))
        version = DatasetVersion(
            dataset_id=ds.id,
            version=number,
            schema_json=old.schema_json,
            format="correction",
            row_count=old.row_count,
            chunk_rows=old.chunk_rows,
            chunk_count=old.chunk_count,
            kek_version=wrapped.kek_version,
            wrapped_dek=wrapped.blob,
            created_at=now,
        )
        session.add(version)
        session.flush()
        types = {c.name: c.type for c in schema.columns}
        conn = session.connection()
        for column in types:
            rows = session.execute(
                select(DatasetChunk.chunk, DatasetChunk.ciphertext)
                .where(
                    DatasetChunk.dataset_id == ds.id,
                    DatasetChunk.version == old.version,
                    DatasetChunk.column == column,
                )
                .order_by(DatasetChunk.chunk)
            ).all()
            if [r.chunk for r in rows] != list(range(old.chunk_count)):
                raise DataIntegrityError(f"chunks of {ds.id}@{old.version} column {column} are missing")
            sealed = []
            for index, blob in rows:
                n = min(old.chunk_rows, old.row_count - index * old.chunk_rows)
                plain = codec.open_sealed(
                    old_dek, codec.chunk_aad(ds.id, old.version, column, index, n), bytes(blob)
                )
                if index == where.chunk and column in typed:
                    part = codec.decode(plain)
                    patched = [_py(part, i) for i in range(n)]
                    patched[where.offset] = typed[column]
                    plain = codec.encode(types[column], patched)
                sealed.append(
                    {
                        "dataset_id": ds.id,
                        "version": number,
                        "column": column,
                        "chunk": index,
                        "ciphertext": codec.seal(
                            dek, codec.chunk_aad(ds.id, number, column, index, n), plain
                        ),
                    }
                )
            if sealed:
                conn.execute(insert(DatasetChunk), sealed)
        ds.current_version = number
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="dataset.correct",
                actor=actor,
                objects=(
                    ObjectRef("dataset", ds.id),
                    ObjectRef("dataset_version", f"{ds.id}@{old.version}"),
                    ObjectRef("dataset_version", f"{ds.id}@{number}"),
                    *objects,
                ),
                subjects=(uscc,),
                request_id=request_id,
                detail={
                    "from_version": old.version,
                    "version": number,
                    "rows": old.row_count,
                    "rows_changed": 1,
                    "fields": list(changed),
                    "kek_version": wrapped.kek_version,
                },
            ),
            now=now,
        )
        return Correction(version, old.version, changed)

    # --- erasure of one subject (PIPL Art. 47) ---------------------------------------------------------

    def erase_subject(
        self,
        session: Session,
        ds: Dataset,
        code: str,
        *,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> tuple[int, list[int]] | None:
        """Delete every row of subject ``code`` from dataset ``ds``: ``(rows removed, versions shredded)``, or
        None when no readable version holds it.

        Data keys are per version, not per subject, so the subject's rows cannot be shredded alone: the current
        version is copied without them into a new version under a new data key, then every version that held
        them (the old current one included) is crypto-shredded — its chunks and wrapped key deleted, as
        :meth:`delete` does for a whole dataset. Versions without the subject stay. The ledger entry
        ``dataset.erase_subject`` names the subject (its pseudonymous code), the versions and the counts.
        """
        if ds.deleted_at is not None or session.get(SealedDataset, ds.id) is not None:
            return None
        session.execute(select(Dataset.id).where(Dataset.id == ds.id).with_for_update())
        session.refresh(ds)
        key = DatasetSchema.model_validate_json(ds.schema_json).subject_key
        holding = []
        for v in self.versions(session, ds.id):
            if v.wrapped_dek is None:
                continue
            keys = np.asarray(self.read_columns(session, v, [key])[key].values, dtype=object)
            if bool((keys == code).any()):
                holding.append(v)
        if not holding:
            return None
        now = now or utcnow()
        current = self.current(session, ds)
        removed = 0
        detail: dict[str, Any] = {}
        if current is not None and any(v.version == current.version for v in holding):
            schema = DatasetSchema.model_validate_json(current.schema_json)
            types = {c.name: c.type for c in schema.columns}
            cols = self.read_columns(session, current, list(types))
            keep = np.flatnonzero(np.asarray(cols[key].values, dtype=object) != code)
            removed = current.row_count - len(keep)
            number = self._next_version(session, ds.id)
            dek = new_data_key()
            wrapped = self.kms.wrap(dek, codec.dek_aad(ds.id, number))
            size = current.chunk_rows
            chunks = (len(keep) + size - 1) // size
            version = DatasetVersion(
                dataset_id=ds.id,
                version=number,
                schema_json=current.schema_json,
                format="erasure",
                row_count=len(keep),
                chunk_rows=size,
                chunk_count=chunks,
                kek_version=wrapped.kek_version,
                wrapped_dek=wrapped.blob,
                created_at=now,
            )
            session.add(version)
            session.flush()
            conn = session.connection()
            for index in range(chunks):
                part = keep[index * size : (index + 1) * size]
                conn.execute(
                    insert(DatasetChunk),
                    [
                        {
                            "dataset_id": ds.id,
                            "version": number,
                            "column": name,
                            "chunk": index,
                            "ciphertext": codec.seal(
                                dek,
                                codec.chunk_aad(ds.id, number, name, index, len(part)),
                                codec.encode(types[name], [_py(cols[name], int(i)) for i in part]),
                            ),
                        }
                        for name in types
                    ],
                )
            ds.current_version = number
            detail = {"from_version": current.version, "version": number, "kek_version": wrapped.kek_version}
        shredded = sorted(v.version for v in holding)
        session.execute(
            delete(DatasetChunk).where(DatasetChunk.dataset_id == ds.id, DatasetChunk.version.in_(shredded))
        )
        session.execute(
            update(DatasetVersion)
            .where(DatasetVersion.dataset_id == ds.id, DatasetVersion.version.in_(shredded))
            .values(wrapped_dek=None, kek_version=None, shredded_at=now)
        )
        session.flush()
        for v in holding:
            session.expire(v)
        self.ledger.append(
            session,
            EntryDraft(
                action="dataset.erase_subject",
                actor=actor,
                objects=(ObjectRef("dataset", ds.id),),
                subjects=(code,),
                request_id=request_id,
                detail={**detail, "rows_removed": removed, "versions_shredded": shredded},
            ),
            now=now,
        )
        return removed, shredded

    # --- shredding and keys --------------------------------------------------------------------------

    def delete(
        self, session: Session, ds: Dataset, *, actor: Actor, request_id: str | None = None
    ) -> Dataset:
        """Crypto-shred every version: chunks and wrapped data keys go; the ledger keeps the history."""
        if ds.deleted_at is not None:
            raise Conflict(f"dataset {ds.id} was already deleted")
        now = utcnow()
        session.execute(delete(DatasetChunk).where(DatasetChunk.dataset_id == ds.id))
        session.execute(
            update(DatasetVersion)
            .where(DatasetVersion.dataset_id == ds.id)
            .values(wrapped_dek=None, kek_version=None, shredded_at=now)
        )
        ds.deleted_at = now
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="dataset.delete",
                actor=actor,
                objects=(ObjectRef("dataset", ds.id),),
                request_id=request_id,
                detail={"name": ds.name},
            ),
            now=now,
        )
        return ds

    def rewrap_all(self, session: Session) -> dict[int, int]:
        """Re-wrap every live data key under the current KEK (no data is decrypted); returns how many keys
        moved from each older version (:func:`pps.infra.keyring.rotate` records the total)."""
        target = self.kms.current_version
        rows = session.execute(
            select(DatasetVersion).where(
                DatasetVersion.wrapped_dek.is_not(None), DatasetVersion.kek_version != target
            )
        ).scalars()
        moved: dict[int, int] = {}
        for v in rows:
            if v.wrapped_dek is None or v.kek_version is None:  # shredded meanwhile
                continue
            aad = codec.dek_aad(v.dataset_id, v.version)
            dek = self.kms.unwrap(WrappedKey(v.kek_version, v.wrapped_dek), aad)
            new = self.kms.wrap(dek, aad)
            moved[v.kek_version] = moved.get(v.kek_version, 0) + 1
            v.kek_version, v.wrapped_dek = new.kek_version, new.blob
        session.flush()
        return moved

    def lock_data_keys(self, session: Session) -> None:
        """Wait for uploads in flight and keep new ones out until the caller commits (PostgreSQL).

        A retirement must count *every* wrapped data key, including one an upload is about to commit.
        SQLite needs nothing: a write transaction already excludes every other writer.
        """
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("LOCK TABLE dataset_versions IN SHARE MODE"))

    def keys_by_kek_version(self, session: Session) -> dict[int, int]:
        rows = session.execute(
            select(DatasetVersion.kek_version, func.count())
            .where(DatasetVersion.wrapped_dek.is_not(None))
            .group_by(DatasetVersion.kek_version)
        ).all()
        return {int(v): int(n) for v, n in rows if v is not None}

    def schema_of_dataset(self, ds: Dataset) -> DatasetSchema:
        return DatasetSchema.model_validate_json(ds.schema_json)


def _py(col: codec.Column, i: int) -> Any:
    if not col.valid[i]:
        return None
    v = col.values[i]
    return v.item() if isinstance(v, np.generic) else v


def check_values(schema: DatasetSchema, values: Mapping[str, Any]) -> dict[str, Any]:
    """Check values for non-key fields against the schema's types (JSON values: no text conversion).

    ``None`` clears a value. Raises :class:`InvalidInput` naming the first field that is unknown, a key or of
    the wrong type.
    """
    if not values:
        raise InvalidInput("give at least one field and its value")
    keys = set(schema.key_columns)
    out: dict[str, Any] = {}
    for name, value in values.items():
        try:
            ctype = schema.column(name).type
        except KeyError:
            raise InvalidInput(f"the dataset has no field {name!r}") from None
        if name in keys:
            raise InvalidInput(f"{name!r} is a key field: it identifies the record and cannot be corrected")
        if value is None:
            out[name] = None
            continue
        try:
            out[name] = CONVERTERS[ctype](value, False)
        except ConversionError as exc:
            raise InvalidInput(f"{name}: {exc} (the field is of type {ctype.value})") from None
    return out
