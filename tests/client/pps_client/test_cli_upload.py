"""`pps-client data upload`: a provider uploads the files `pps data synth` wrote, over the API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pps.cli import app as operator_app
from pps.infra.storage.tables import Role
from pps_client import Client
from pps_client.cli import app
from tests.conftest import OrgFactory

runner = CliRunner()


@pytest.mark.slow
def test_synth_then_upload_every_dataset(tmp_path: Path, make_org: OrgFactory, base_url: str) -> None:
    out = tmp_path / "synth"
    result = runner.invoke(
        operator_app, ["data", "synth", "--enterprises", "1500", "--seed", "5", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "default rate" in result.output
    provider = make_org(Role.data_provider, "All providers")
    for name in ("registry", "tax", "social_insurance", "utilities", "procurement", "court"):
        result = runner.invoke(
            app, ["data", "upload", str(out / f"{name}.csv"), "--url", base_url, "--token", provider.token]
        )
        assert result.exit_code == 0, result.output
        assert "uploaded" in result.output
    datasets = {d.name: d for d in Client(base_url, provider.token).datasets.list()}
    registry_rows = sum(1 for _ in (out / "registry.csv").open()) - 1
    assert datasets["registry"].versions[0].rows == registry_rows == 1500
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


def test_an_unreachable_service_is_one_line_and_exit_4(tmp_path: Path) -> None:
    (tmp_path / "fees.schema.json").write_text("{}")
    (tmp_path / "fees.csv").write_text("uscc\n")
    result = runner.invoke(
        app, ["data", "upload", str(tmp_path / "fees.csv"), "--url", "http://127.0.0.1:9", "--token", "pps_x"]
    )
    assert result.exit_code == 4
    assert "cannot reach the PPS service at http://127.0.0.1:9" in result.output
    assert "Traceback" not in result.output
