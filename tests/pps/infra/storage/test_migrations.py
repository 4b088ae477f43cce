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


def test_field_grades_migration_grades_existing_datasets(database_url: str) -> None:
    """0015: a schema stored before JR/T 0197 levels gets them derived from its JR/T 0171 classes."""
    import json
    from datetime import UTC, datetime

    from sqlalchemy import text

    from pps.data.datasets.schema import DatasetSchema

    old = {
        "dataset": "tax",
        "subject_key": "uscc",
        "period_key": None,
        "record_key": None,
        "columns": [
            {"name": "uscc", "type": "uscc", "unit": None, "description": "", "sensitivity": "C1"},
            {"name": "tax_paid", "type": "float", "unit": "CNY", "description": "", "sensitivity": "C2"},
            {"name": "case_id", "type": "string", "unit": None, "description": "", "sensitivity": "C3"},
            {"name": "x", "type": "float", "unit": None, "description": "", "sensitivity": "C2", "level": 5},
        ],
    }
    db = Database(database_url)
    try:
        migrate.upgrade(db.engine, "0016_persons")
        now = datetime.now(UTC)
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO organizations (id, name, role, uscc, created_at) "
                    "VALUES ('org_p', 'provider', 'data_provider', NULL, :t)"
                ),
                {"t": now},
            )
            conn.execute(
                text(
                    "INSERT INTO datasets (id, provider_org_id, name, description, schema_json, created_at, "
                    "platform_aggregates) VALUES ('ds_1', 'org_p', 'tax', '', :s, :t, false)"
                ),
                {"s": json.dumps(old), "t": now},
            )
        migrate.upgrade(db.engine)
        with db.engine.connect() as conn:
            stored = conn.execute(text("SELECT schema_json FROM datasets WHERE id = 'ds_1'")).scalar_one()
        schema = DatasetSchema.model_validate_json(stored)
        assert [c.level for c in schema.columns] == [2, 3, 4, 5]
        assert [c.important for c in schema.columns] == [False] * 4
        assert [c.never_released for c in schema.columns] == [False, False, True, True]
        migrate.upgrade(db.engine)  # idempotent
        migrate_down = __import__("alembic.command", fromlist=["downgrade"]).downgrade
        cfg = migrate.alembic_config()
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            migrate_down(cfg, "0016_persons")
        with db.engine.connect() as conn:
            back = json.loads(
                conn.execute(text("SELECT schema_json FROM datasets WHERE id = 'ds_1'")).scalar_one()
            )
        assert back["columns"][:3] == old["columns"][:3] and back["columns"][3]["level"] == 5
    finally:
        db.dispose()


def test_disclosure_modes_migration_writes_the_implicit_modes(database_url: str) -> None:
    """0020: every column of a stored schema gets the disclosure mode it had implicitly; none becomes public."""
    import json
    from datetime import UTC, datetime

    from sqlalchemy import text

    from pps.data.datasets.schema import DatasetSchema

    old = {
        "dataset": "tax",
        "subject_key": "uscc",
        "period_key": None,
        "record_key": None,
        "columns": [
            {"name": "uscc", "type": "uscc", "unit": None, "description": "", "sensitivity": "C1", "level": 2},
            {"name": "tax_paid", "type": "float", "unit": "CNY", "description": "", "sensitivity": "C2", "level": 3},
            {"name": "case_id", "type": "string", "unit": None, "description": "", "sensitivity": "C3", "level": 4},
            {"name": "x", "type": "float", "unit": None, "description": "", "sensitivity": "C1", "level": 5},
            {"name": "y", "type": "float", "unit": None, "description": "", "sensitivity": "C1", "level": 2,
             "disclosure": "aggregate_only"},
        ],
    }  # fmt: skip
    db = Database(database_url)
    try:
        migrate.upgrade(db.engine, "0019_federated_validation")
        now = datetime.now(UTC)
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO organizations (id, name, role, uscc, created_at) "
                    "VALUES ('org_p', 'provider', 'data_provider', NULL, :t)"
                ),
                {"t": now},
            )
            conn.execute(
                text(
                    "INSERT INTO datasets (id, provider_org_id, name, description, schema_json, created_at, "
                    "platform_aggregates) VALUES ('ds_1', 'org_p', 'tax', '', :s, :t, false)"
                ),
                {"s": json.dumps(old), "t": now},
            )
        migrate.upgrade(db.engine)
        with db.engine.connect() as conn:
            stored = conn.execute(text("SELECT schema_json FROM datasets WHERE id = 'ds_1'")).scalar_one()
        schema = DatasetSchema.model_validate_json(stored)
        assert [c.disclosure for c in schema.columns] == [
            "masked",
            "compute_only",
            "never",
            "never",
            "aggregate_only",
        ]
        migrate_down = __import__("alembic.command", fromlist=["downgrade"]).downgrade
        cfg = migrate.alembic_config()
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            migrate_down(cfg, "0019_federated_validation")
        with db.engine.connect() as conn:
            back = json.loads(
                conn.execute(text("SELECT schema_json FROM datasets WHERE id = 'ds_1'")).scalar_one()
            )
            tables = inspect(conn).get_table_names()
        assert back["columns"] == old["columns"] and "disclosure_documents" not in tables
    finally:
        db.dispose()
