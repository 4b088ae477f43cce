"""Migrations are the schema: the migrated database equals the ORM metadata, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select

from pps.infra.storage import migrate
from pps.infra.storage.db import Database
from pps.infra.storage.tables import Base, LedgerHead

pytestmark = pytest.mark.db


def test_migrated_schema_matches_metadata(database_url: str) -> None:
    db = Database(database_url)
    try:
        migrate.upgrade(db.engine)
        with db.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, Base.metadata)
        assert diff == [], f"migrations and tables.py disagree: {diff}"
        assert migrate.is_up_to_date(db.engine)
    finally:
        db.dispose()


def test_upgrade_is_idempotent_and_seeds_the_ledger_head(database_url: str) -> None:
    db = Database(database_url)
    try:
        assert migrate.current_revision(db.engine) is None
        migrate.upgrade(db.engine)
        migrate.upgrade(db.engine)
        assert migrate.current_revision(db.engine) == migrate.head_revision()
        with db.transaction(write=False) as session:
            head = session.execute(select(LedgerHead)).scalars().all()
        assert [(h.id, h.size, h.frontier) for h in head] == [(1, 0, b"")]
        tables = set(inspect(db.engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
    finally:
        db.dispose()
