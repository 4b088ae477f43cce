"""`pps serve` starts the real service (migrations applied at start-up), and tokens are stored only hashed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pps.infra.storage.tables import Role
from pps.runtime import Runtime
from tests.conftest import OrgFactory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.e2e
def test_pps_serve_starts_a_ready_service(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PPS_DATA_DIR": str(tmp_path / "served"), "PPS_CHECKPOINT_INTERVAL_SECONDS": "0"}
    env.pop("PPS_DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pps.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert ready is not None, proc.stdout.read() if proc.stdout else ""
        assert ready.json()["status"] == "ready"
        docs = httpx.get(f"http://127.0.0.1:{port}/openapi.json").json()
        assert "/v1/audit/checkpoint" in docs["paths"]
        assert (tmp_path / "served" / "pps.db").exists()
        assert (tmp_path / "served" / "keys" / "ledger-signing-ed25519.pem").stat().st_mode & 0o077 == 0
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_tokens_are_stored_only_as_keyed_hashes(
    runtime: Runtime, make_org: OrgFactory, settings: object
) -> None:
    org = make_org(Role.bank)
    runtime.db.engine.dispose()  # flush the WAL into the file
    db_file = Path(runtime.settings.resolved_database_url.removeprefix("sqlite:///"))
    if not db_file.exists():
        pytest.skip("only meaningful for the embedded SQLite file")
    raw = db_file.read_bytes() + b"".join(p.read_bytes() for p in db_file.parent.glob("pps.db-*"))
    secret_part = org.token.removeprefix("pps_").encode()
    assert secret_part not in raw
    assert org.token_id.encode() in raw
