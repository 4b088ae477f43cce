"""Engines and transactions.

The request (or CLI command) owns the transaction: services take a :class:`~sqlalchemy.orm.Session`, do their
work, never commit. :meth:`Database.transaction` commits when the block ends without an exception and rolls
back otherwise, so an access and its ledger entry are written together or not at all.

SQLite needs care to serialise writers: a deferred transaction that reads and later writes can fail with
``SQLITE_BUSY`` without waiting. Write transactions therefore start with ``BEGIN IMMEDIATE`` (they take the
write lock up front and wait up to ``busy_timeout`` for it); read transactions use a plain ``BEGIN``.
WAL journaling lets readers proceed while one writer works. On PostgreSQL the ledger serialises appends
with ``SELECT ... FOR UPDATE`` on its head row.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

_BEGIN_OPTION = "pps_sqlite_begin"


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see below)
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute(
            "PRAGMA secure_delete = ON"
        )  # deleted (shredded) pages are overwritten, not left behind
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def make_engine(url: str, *, busy_timeout_ms: int = 30_000, echo: bool = False) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            from pathlib import Path

            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo)
        _configure_sqlite(engine, busy_timeout_ms)
        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True)


class Database:
    """One database: an engine, a read session factory and a write session factory."""

    def __init__(self, url: str, *, busy_timeout_ms: int = 30_000, echo: bool = False) -> None:
        self.url = url
        self.engine = make_engine(url, busy_timeout_ms=busy_timeout_ms, echo=echo)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        write_engine = (
            self.engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"}) if self.is_sqlite else self.engine
        )
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(write_engine, expire_on_commit=False)

    @contextmanager
    def transaction(self, *, write: bool = True, snapshot: bool = False) -> Iterator[Session]:
        """A session whose work commits at the end of the block, or rolls back on any exception.

        ``snapshot=True`` (read-only work that reads many tables, like verifying the ledger) makes every
        statement see the same snapshot: PostgreSQL's default READ COMMITTED takes a new one per statement.
        A SQLite read transaction already sees one snapshot from its first read.
        """
        factory = self._write if write else self._read
        with factory() as session, session.begin():
            if snapshot and not self.is_sqlite:
                session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
