"""Encryption at rest: no plaintext on disk, chunks and keys bound to their place, KEK rotation and retirement."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from sqlalchemy import text, update

from pps.data.datasets.ingest import UploadFormat
from pps.data.datasets.schema import DatasetSchema
from pps.errors import DataIntegrityError, KeyUnavailable
from pps.infra import keyring
from pps.infra.storage.tables import Dataset, DatasetVersion, Role
from pps.ledger.entry import OPERATOR
from pps.runtime import Runtime
from tests.conftest import OrgFactory
from tests.pps.data.datasets.conftest import tax_rows, to_csv

SENTINEL_TEXT = "SENTINEL-7f3a9c-备注"
SENTINEL_NUMBER = 987654321.125


def make(
    runtime: Runtime, make_org: OrgFactory, schema: DatasetSchema, *, chunk_rows: int = 50
) -> tuple[Dataset, DatasetVersion]:
    runtime.datasets.chunk_rows = chunk_rows
    provider = make_org(Role.data_provider)
    rows = tax_rows(60, months=2)
    rows[7]["note"] = SENTINEL_TEXT
    rows[8]["tax_paid"] = SENTINEL_NUMBER
    with runtime.db.transaction() as s:
        ds = runtime.datasets.create(
            s, provider_org_id=provider.id, name="tax", description="", schema=schema, actor=OPERATOR
        )
        v = runtime.datasets.upload(
            s, ds, stream=io.BytesIO(to_csv(rows)), fmt=UploadFormat.csv, actor=OPERATOR
        )
    return ds, v


def all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def test_no_plaintext_reaches_the_disk(
    runtime: Runtime, make_org: OrgFactory, tax_schema: DatasetSchema, tmp_path: Path
) -> None:
    make(runtime, make_org, tax_schema)
    runtime.db.engine.dispose()  # close connections so that the WAL is checkpointed into the file
    blob = all_bytes(tmp_path)
    assert SENTINEL_TEXT.encode() not in blob
    assert SENTINEL_TEXT.encode("utf-16-le") not in blob
    import struct

    assert struct.pack("<d", SENTINEL_NUMBER) not in blob
    assert b"SENTINEL" not in blob


@pytest.mark.db
def test_swapped_chunks_do_not_decrypt(
    runtime: Runtime, make_org: OrgFactory, tax_schema: DatasetSchema
) -> None:
    _ds, v = make(runtime, make_org, tax_schema)
    with runtime.db.engine.begin() as c:
        a = c.execute(
            text("SELECT ciphertext FROM dataset_chunks WHERE \"column\" = 'note' AND chunk = 0")
        ).scalar_one()
        b = c.execute(
            text("SELECT ciphertext FROM dataset_chunks WHERE \"column\" = 'note' AND chunk = 1")
        ).scalar_one()
        c.execute(
            text("UPDATE dataset_chunks SET ciphertext = :b WHERE \"column\" = 'note' AND chunk = 0"),
            {"b": b},
        )
        c.execute(
            text("UPDATE dataset_chunks SET ciphertext = :a WHERE \"column\" = 'note' AND chunk = 1"),
            {"a": a},
        )
    with runtime.db.transaction(write=False) as s, pytest.raises(DataIntegrityError):
        runtime.datasets.read_columns(s, v, ["note"])
    with runtime.db.transaction(write=False) as s:  # other columns are untouched
        assert len(runtime.datasets.read_columns(s, v, ["tax_paid"])["tax_paid"]) == 120


@pytest.mark.db
def test_a_column_chunk_moved_to_another_column_does_not_decrypt(
    runtime: Runtime, make_org: OrgFactory, tax_schema: DatasetSchema
) -> None:
    _ds, v = make(runtime, make_org, tax_schema)
    with runtime.db.engine.begin() as c:
        note = c.execute(
            text("SELECT ciphertext FROM dataset_chunks WHERE \"column\" = 'note' AND chunk = 0")
        ).scalar_one()
        c.execute(
            text("UPDATE dataset_chunks SET ciphertext = :n WHERE \"column\" = 'month' AND chunk = 0"),
            {"n": note},
        )
    with runtime.db.transaction(write=False) as s, pytest.raises(DataIntegrityError):
        runtime.datasets.read_columns(s, v, ["month"])


@pytest.mark.db
def test_a_data_key_moved_to_another_version_does_not_open(
    runtime: Runtime, make_org: OrgFactory, tax_schema: DatasetSchema
) -> None:
    ds, v1 = make(runtime, make_org, tax_schema)
    with runtime.db.transaction() as s:
        v2 = runtime.datasets.upload(
            s,
            runtime.datasets.get(s, ds.id),
            stream=io.BytesIO(to_csv(tax_rows(3))),
            fmt=UploadFormat.csv,
            actor=OPERATOR,
        )
        s.execute(
            update(DatasetVersion)
            .where(DatasetVersion.dataset_id == ds.id, DatasetVersion.version == 2)
            .values(wrapped_dek=v1.wrapped_dek)
        )
    with runtime.db.transaction(write=False) as s, pytest.raises(KeyUnavailable):
        runtime.datasets.read_columns(s, s.get(DatasetVersion, (ds.id, v2.version)), ["uscc"])


@pytest.mark.db
def test_rotation_rewraps_without_touching_data_and_retirement_is_guarded(
    runtime: Runtime, make_org: OrgFactory, tax_schema: DatasetSchema
) -> None:
    ds, _v = make(runtime, make_org, tax_schema)
    with runtime.db.transaction(write=False) as s:
        chunks_before = s.execute(
            text('SELECT ciphertext FROM dataset_chunks ORDER BY "column", chunk')
        ).all()
        old_wrapped = s.get(DatasetVersion, (ds.id, 1)).wrapped_dek  # type: ignore[union-attr]
    assert runtime.kms.current_version == 1
    with pytest.raises(ValueError, match="between"):
        runtime.kms.retire_below(2)
    with runtime.db.transaction() as s:
        done = keyring.rotate(s, runtime.kms, runtime.key_holders, runtime.ledger, actor=OPERATOR)
    assert (done.version, done.rewrapped, done.from_versions) == (2, 1, (1,))
    with runtime.db.transaction(write=False) as s:
        row = s.get(DatasetVersion, (ds.id, 1))
        assert row is not None and row.kek_version == 2 and row.wrapped_dek != old_wrapped
        assert (
            s.execute(text('SELECT ciphertext FROM dataset_chunks ORDER BY "column", chunk')).all()
            == chunks_before
        )
        assert runtime.datasets.keys_by_kek_version(s) == {2: 1}
        notes = runtime.datasets.read_columns(s, row, ["note"])["note"]
    assert SENTINEL_TEXT in list(notes.values)
    runtime.kms.retire_below(2)
    from pps.data.datasets import codec
    from pps.infra.kms import WrappedKey

    with pytest.raises(KeyUnavailable, match="retired"):
        runtime.kms.unwrap(WrappedKey(1, old_wrapped), codec.dek_aad(ds.id, 1))  # type: ignore[arg-type]


@pytest.mark.db
def test_delete_shreds_every_version(
    runtime: Runtime, make_org: OrgFactory, tax_schema: DatasetSchema
) -> None:
    ds, _v = make(runtime, make_org, tax_schema)
    with runtime.db.transaction() as s:
        runtime.datasets.delete(s, runtime.datasets.get(s, ds.id), actor=OPERATOR)
    with runtime.db.transaction(write=False) as s:
        assert s.execute(text("SELECT count(*) FROM dataset_chunks")).scalar_one() == 0
        row = s.get(DatasetVersion, (ds.id, 1))
        assert row is not None and row.wrapped_dek is None and row.shredded_at is not None
        assert runtime.datasets.records_of(s, tax_rows(1)[0]["uscc"]) == []
        last = runtime.ledger.entry(s, runtime.ledger.size(s) - 1)
    assert b'"action":"dataset.delete"' in last.entry


def test_kms_files_are_private(runtime: Runtime) -> None:
    for p in (runtime.settings.resolved_key_dir / "kek").glob("v*.key"):
        assert p.stat().st_mode & 0o077 == 0
