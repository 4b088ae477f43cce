"""Alembic environment: runs on a connection handed over by ``pps.infra.storage.migrate`` (or, for developers
running ``alembic -c pps/infra/storage/alembic.ini ...``, on the database named by the PPS settings)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from pps.infra.storage.tables import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from pps.infra.settings import get_settings
    from pps.infra.storage.db import make_engine

    engine = make_engine(get_settings().resolved_database_url)
    with engine.connect() as conn:
        _run(conn)
        conn.commit()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `pps db upgrade` against a database")
run_migrations_online()
