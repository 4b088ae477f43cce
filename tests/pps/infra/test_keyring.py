"""Keys fail closed: a KEK that the stored data needs and that is missing, truncated or not itself stops the
service at start, turns /readyz to 503 with the reason, and is never silently replaced."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from pps.cli import app as cli
from pps.cli import console as cli_console
from pps.data.datasets.schema import DatasetSchema
from pps.errors import ConfigurationError, Conflict, KeyUnavailable
from pps.infra import keyring
from pps.infra.settings import Settings
from pps.infra.storage.tables import KekCanary, ModelArtifact, Role
from pps.ledger.entry import OPERATOR, Actor
from pps.runtime import Runtime
from tests.conftest import OrgFactory
from tests.pps.data.datasets.conftest import TAX_SCHEMA
from tests.pps.data.datasets.test_at_rest import make


def _kek(settings: Settings, version: int) -> Path:
    return settings.resolved_key_dir / "kek" / f"v{version:04d}.key"


@pytest.fixture
def with_data(runtime: Runtime, make_org: OrgFactory) -> None:
    """One uploaded dataset version: a data key wrapped under KEK version 1."""
    make(runtime, make_org, DatasetSchema.model_validate(TAX_SCHEMA))


def test_a_new_deployment_makes_version_one_with_its_canary(runtime: Runtime) -> None:
    assert runtime.kms.versions() == [1]
    with runtime.db.transaction(write=False) as s:
        assert [c.version for c in s.execute(select(KekCanary)).scalars()] == [1]
        assert keyring.problems(s, runtime.kms, runtime.key_holders) == []


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        ("delete", "no key-encryption key"),
        ("truncate", "damaged"),
        ("substitute", "does not match its canary"),
    ],
)
@pytest.mark.usefixtures("with_data")
def test_a_damaged_key_stops_the_service_and_is_never_replaced(
    runtime: Runtime, settings: Settings, damage: str, named: str
) -> None:
    runtime.close()
    path = _kek(settings, 1)
    if damage == "delete":
        path.unlink()
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:16])
    else:
        path.write_bytes(os.urandom(32))
    before = sorted(p.name for p in path.parent.iterdir())
    with pytest.raises((ConfigurationError, KeyUnavailable), match=named):
        Runtime.build(settings).close()
    assert sorted(p.name for p in path.parent.iterdir()) == before  # nothing made in its place


@pytest.mark.usefixtures("with_data")
def test_readyz_turns_503_naming_the_version_when_a_key_goes_missing(
    runtime: Runtime, settings: Settings, http
) -> None:
    client: httpx.Client = http()
    assert client.get("/readyz").json()["checks"]["keys"] == "ok"
    saved = _kek(settings, 1).read_bytes()
    _kek(settings, 1).unlink()
    answer = client.get("/readyz")
    assert answer.status_code == 503 and "KEK version 1: missing" in answer.json()["checks"]["keys"]
    _kek(settings, 1).write_bytes(saved)  # the backup comes back: ready again
    assert client.get("/readyz").status_code == 200


@pytest.mark.usefixtures("with_data")
def test_a_version_number_is_never_given_twice(runtime: Runtime) -> None:
    with runtime.db.transaction() as s:
        assert (
            keyring.rotate(s, runtime.kms, runtime.key_holders, runtime.ledger, actor=OPERATOR).version == 2
        )
    _kek(runtime.settings, 2).unlink()  # the newest file lost: its number stays used
    with runtime.db.transaction() as s:
        assert "KEK version 2: missing" in " ".join(keyring.problems(s, runtime.kms, runtime.key_holders))
        assert runtime.kms.rotate(after=2) == 3


def test_rotation_and_retirement_cover_model_parts(runtime: Runtime, make_org: OrgFactory) -> None:
    """The model registry's sealed parts are data keys too: rotation re-wraps them, retirement counts them."""
    bank = make_org(Role.bank)
    with runtime.db.transaction() as s:
        runtime.models.register(
            s,
            kind="horizontal_lr",
            name="m",
            owners=[bank.id],
            feature_schema=["a"],
            training={},
            artifacts={bank.id: {"w": [1.0]}},
            ledger_indices=[],
            actor=Actor(bank.id, "bank"),
        )
    with runtime.db.transaction() as s:
        rotation = keyring.rotate(s, runtime.kms, runtime.key_holders, runtime.ledger, actor=OPERATOR)
        assert rotation.rewrapped == 1
        assert {a.kek_version for a in s.execute(select(ModelArtifact)).scalars()} == {rotation.version}
    with runtime.db.transaction() as s:
        keyring.retire_below(s, runtime.kms, runtime.key_holders, runtime.ledger, 2, actor=OPERATOR)
    with runtime.db.transaction() as s:
        s.get(
            ModelArtifact, (s.execute(select(ModelArtifact.model_id)).scalar_one(), bank.id)
        ).kek_version = 1  # type: ignore[union-attr]
    with runtime.db.transaction() as s, pytest.raises(Conflict, match="still wrapped"):
        keyring.retire_below(s, runtime.kms, runtime.key_holders, runtime.ledger, 3, actor=OPERATOR)


@pytest.mark.usefixtures("with_data")
def test_keys_status_names_the_fault_and_exits_non_zero(
    runtime: Runtime, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime.close()
    monkeypatch.setenv("PPS_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("PPS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("PPS_KEY_DIR", str(settings.resolved_key_dir))
    monkeypatch.setattr(cli_console, "width", 200)
    ok = CliRunner().invoke(cli, ["keys", "status"])
    assert ok.exit_code == 0 and "current" in ok.output, ok.output
    _kek(settings, 1).write_bytes(os.urandom(32))
    bad = CliRunner().invoke(cli, ["keys", "status"])
    assert bad.exit_code == 1 and "does not match its canary" in bad.output, bad.output
