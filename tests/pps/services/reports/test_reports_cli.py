"""``pps-client credit``: a bank's report (written and verified) and a portfolio query, against the live API."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from pps_client.cli import app
from tests.pps.services.reports.conftest import World

runner = CliRunner()


def test_credit_report_query_and_verify(world: World, base_url: str, tmp_path: Path) -> None:
    common = ["--url", base_url, "--token", world.bank.token]
    out, html = tmp_path / "r.json", tmp_path / "r.html"
    done = runner.invoke(
        app, ["credit", "report", world.yes.uscc or "", "--out", str(out), "--html", str(html), *common]
    )
    assert done.exit_code == 0, done.output
    assert "tax" in done.output and json.loads(out.read_text())["document"]["subject_uscc"] == world.yes.uscc
    assert "标准化信用信息报告" in html.read_text()
    checked = runner.invoke(app, ["credit", "verify", str(out), *common])
    assert checked.exit_code == 0 and "verified" in checked.output, checked.output
    doc = json.loads(out.read_text())
    doc["note"] = doc["note"].replace('"mode":"masked"', '"mode":"public"', 1)
    out.write_text(json.dumps(doc))
    assert runner.invoke(app, ["credit", "verify", str(out), *common]).exit_code == 3
    subjects = tmp_path / "subjects.txt"
    subjects.write_text(f"{world.yes.uscc}\n{world.no.uscc}\n")
    field = f"{world.datasets['tax']}:taxable_sales"
    q = runner.invoke(app, ["credit", "query", "--subjects", str(subjects), "--field", field, *common])
    assert q.exit_code == 0, q.output
    assert "1 of 2 subjects answered" in q.output and "no_grant" in q.output
