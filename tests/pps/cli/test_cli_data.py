"""`pps data synth` then `pps data upload` of every provider dataset to a live service; `pps keys`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pps.cli import app
from pps.client import PPSClient
from pps.infra.storage.tables import Role
from pps.runtime import Runtime
from tests.conftest import OrgFactory

runner = CliRunner()


@pytest.mark.slow
def test_synth_then_upload_every_dataset(
    tmp_path: Path, make_org: OrgFactory, base_url: str, runtime: Runtime
) -> None:
    out = tmp_path / "synth"
    result = runner.invoke(app, ["data", "synth", "--enterprises", "1500", "--seed", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "default rate" in result.output
    provider = make_org(Role.data_provider, "All providers")
    for name in ("registry", "tax", "social_insurance", "utilities", "procurement", "court"):
        result = runner.invoke(
            app, ["data", "upload", str(out / f"{name}.csv"), "--url", base_url, "--token", provider.token]
        )
        assert result.exit_code == 0, result.output
        assert "uploaded" in result.output
    datasets = {d["name"]: d for d in PPSClient(base_url, provider.token).list_datasets()}
    registry_rows = sum(1 for _ in (out / "registry.csv").open()) - 1
    assert datasets["registry"]["versions"][0]["rows"] == registry_rows == 1500
    assert set(datasets) == {"registry", "tax", "social_insurance", "utilities", "procurement", "court"}


def test_upload_shows_the_problems_and_stores_nothing(
    tmp_path: Path, make_org: OrgFactory, base_url: str
) -> None:
    provider = make_org(Role.data_provider)
    schema = {
        "subject_key": "uscc",
        "columns": [
            {"name": "uscc", "type": "uscc", "sensitivity": "C1"},
            {"name": "amount", "type": "float", "sensitivity": "C2"},
        ],
    }
    (tmp_path / "fees.schema.json").write_text(json.dumps(schema))
    (tmp_path / "fees.csv").write_text("uscc,amount\n91350100M000100Y43,1\n91350100M000100Y40,x\n")
    result = runner.invoke(
        app, ["data", "upload", str(tmp_path / "fees.csv"), "--url", base_url, "--token", provider.token]
    )
    assert result.exit_code == 1
    assert "nothing was stored" in result.output and "check character" in result.output
    result = runner.invoke(app, ["data", "upload", str(tmp_path / "fees.csv"), "--url", base_url])
    assert result.exit_code == 1 and "token" in result.output


def test_keys_rotate_status_retire(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPS_DATA_DIR", str(tmp_path / "pps"))
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
