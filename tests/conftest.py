"""Shared fixtures.

Databases: every test that needs one gets its own. By default that is a fresh SQLite file; when
``PPS_TEST_DATABASE_URL`` names a PostgreSQL database (as in ``.ci/run``), tests get a fresh schema there
instead (selected with ``search_path``) that is dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from api.app import create_app
from api.live import running_server
from pps.infra.settings import Settings, get_settings
from pps.infra.storage.tables import Role
from pps.ledger.entry import OPERATOR
from pps.runtime import Runtime
from tests.helpers import subject_key

VECTORS = Path(__file__).resolve().parent / "vectors"
"""Test vectors vendored into the repository with their licences (``tests/vectors/*/LICENSE``)."""
PG_URL = os.environ.get("PPS_TEST_DATABASE_URL")


@pytest.fixture(autouse=True)
def _no_cached_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database for one test."""
    if not PG_URL:
        yield f"sqlite:///{tmp_path / 'pps.db'}"
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        environment="test",
        secret_key="test-secret-key-that-is-long-enough-0123456789",
        checkpoint_interval_seconds=0,
        read_flush_seconds=0,  # noted reads are written when a test flushes them (or at shutdown)
        psi_workers=1,  # prepare PSI setups in-process: small sets, no spawn start-up in tests
        unsafe_small_paillier_keys=True,  # vertical trainings with 1024-bit keys (one test refuses them)
        unsafe_unapproved_models=True,  # the HE mechanics tests; tests/pps/services/scoring/test_approval.py turns it off
    )


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime.build(settings)
    yield rt
    rt.close()


@dataclass
class OrgHandle:
    id: str
    name: str
    role: Role
    uscc: str | None
    token: str
    token_id: str
    key: Any = None
    """a subject's own consent-signing key (pps_wire.subject_sign.SubjectKey), enrolled"""


class OrgFactory:
    """Creates organisations as the operator onboards them, each redeeming its one-time enrolment code for its
    first token; a subject also enrols its own consent-signing key (after the simulated real-name step)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.count = 0

    def __call__(self, role: Role, name: str | None = None, uscc: str | None = None) -> OrgHandle:
        from tests.helpers import uscc_for

        self.count += 1
        name = name or f"{role.value} {self.count}"
        if role is Role.subject and uscc is None:
            uscc = uscc_for(self.count)
        with self.rt.db.transaction() as session:
            org = self.rt.identity.create_org(session, name=name, role=role, uscc=uscc, actor=OPERATOR)
            code = self.rt.identity.issue_enrolment_code(session, org=org, actor=OPERATOR)
            _, issued = self.rt.identity.redeem_enrolment_code(
                session, code=code.secret, label="test", ttl=timedelta(days=1)
            )
            key = subject_key(self.rt, session, uscc) if role is Role.subject and uscc else None
        return OrgHandle(org.id, org.name, org.role, org.uscc, issued.secret, issued.token.id, key)


@pytest.fixture
def make_org(runtime: Runtime) -> OrgFactory:
    return OrgFactory(runtime)


# --- the API on a real socket -------------------------------------------------------------------------


@pytest.fixture
def app(runtime: Runtime) -> FastAPI:
    return create_app(runtime=runtime)


@pytest.fixture
def base_url(app: FastAPI) -> Iterator[str]:
    with running_server(app) as url:
        yield url


@pytest.fixture
def http(base_url: str) -> Callable[..., httpx.Client]:
    """``http(token)`` → an httpx client for the live server, authenticated with ``token`` if given."""
    clients: list[httpx.Client] = []

    def make(token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=base_url, headers=headers, timeout=30)
        clients.append(client)
        return client

    yield make  # type: ignore[misc]
    for c in clients:
        c.close()
