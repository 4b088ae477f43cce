"""`pps data synth` and `pps keys` (a provider uploads with `pps-client data upload`: tests/client)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pps.cli import app

runner = CliRunner()


def test_keys_rotate_status_retire(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPS_DATA_DIR", str(tmp_path / "pps"))
    result = runner.invoke(app, ["keys", "status"])  # reads only: a database never set up is not set up here
    assert result.exit_code == 1 and "pps db upgrade" in result.output
    assert not (tmp_path / "pps" / "keys").exists()
    assert runner.invoke(app, ["admin", "bootstrap"]).exit_code == 0
    assert runner.invoke(app, ["keys", "status"]).exit_code == 0
    result = runner.invoke(app, ["keys", "retire", "--below", "2"])
    assert result.exit_code == 1 and "between" in result.output
    result = runner.invoke(app, ["keys", "rotate"])
    assert result.exit_code == 0 and "KEK version 2 is current" in result.output
    result = runner.invoke(app, ["keys", "retire", "--below", "2"])
    assert result.exit_code == 0, result.output
    status = runner.invoke(app, ["keys", "status"]).output
    assert "retired" in status and "current" in status
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 0
