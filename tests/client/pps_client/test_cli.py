"""The ``pps-client`` command line: every command explains itself; failures are one clear line and an exit code."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pps_client.cli import EXIT_UNREACHABLE, app

runner = CliRunner()

COMMANDS = [
    [],
    ["psi"],
    ["score"],
    ["aggregate"],
    ["budget"],
    ["consent"],
    ["consent", "request"],
    ["consent", "verify-receipt"],
    ["train-vertical"],
    ["federate"],
    ["join"],
    ["models"],
    ["report"],
    ["data"],
    ["data", "upload"],
    ["credit"],
    ["credit", "report"],
    ["credit", "query"],
    ["credit", "verify"],
]

UNREACHABLE = "http://127.0.0.1:9"


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "pps-client")
def test_every_command_explains_itself(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    assert len(result.output.strip().splitlines()) > 4


@pytest.mark.parametrize(
    "command",
    [
        ["models", "--token", "pps_x"],
        ["budget", "--token", "pps_x"],
        ["report", "mdl_x", "--token", "pps_x"],
        ["aggregate", "count", "--token", "pps_x"],
        ["psi", "{customers}", "--purpose", "loan_underwriting", "--token", "pps_x"],
        ["consent", "verify-receipt", "{receipt}"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_an_unreachable_service_is_one_clear_line(command: list[str], tmp_path: Path) -> None:
    customers, receipt = tmp_path / "customers.txt", tmp_path / "receipt.note"
    customers.write_text("91350100M000100Y43\n")
    receipt.write_text("not a receipt\n")
    args = [a.format(customers=customers, receipt=receipt) for a in command]
    result = runner.invoke(app, [*args, "--url", UNREACHABLE])
    assert result.exit_code == EXIT_UNREACHABLE, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [
        f"error: cannot reach the PPS service at {UNREACHABLE} (connection refused): check that it is running "
        "and that the URL (--url / PPS_URL) is right"
    ]


def test_a_missing_token_is_refused_before_anything_is_sent() -> None:
    result = runner.invoke(app, ["models", "--url", UNREACHABLE])
    assert result.exit_code == 1 and "--token" in result.output
