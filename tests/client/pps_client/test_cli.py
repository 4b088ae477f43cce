"""The ``pps-client`` command line: every command explains itself; failures are one clear line and an exit code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    ["consent", "grant"],
    ["consent", "approve"],
    ["consent", "revoke"],
    ["enrol"],
    ["keys"],
    ["keys", "generate"],
    ["keys", "enrol"],
    ["keys", "list"],
    ["keys", "revoke"],
    ["consent", "verify-receipt"],
    ["train-vertical"],
    ["federate"],
    ["join"],
    ["models"],
    ["report"],
    ["data"],
    ["data", "upload"],
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


def test_an_enterprise_enrols_and_signs_consent_from_the_command_line(
    tmp_path: Path, base_url: str, runtime: Any
) -> None:
    """Issue 24: the enterprise's first token from its enrolment code, its key made here (SM2), enrolled after
    the real-name step, and a grant signed locally; the platform never sees the private key."""
    import re

    from pps.infra.storage.tables import Role
    from pps.ledger.entry import OPERATOR
    from pps_client import Client
    from tests.helpers import REPRESENTATIVE_ID, uscc_for
    from tests.pps.data.datasets.conftest import TAX_SCHEMA

    with runtime.db.transaction() as session:
        org = runtime.identity.create_org(
            session, name="Enterprise", role=Role.subject, uscc=uscc_for(555), actor=OPERATOR
        )
        code = runtime.identity.issue_enrolment_code(session, org=org, actor=OPERATOR).secret
        bank = runtime.identity.create_org(session, name="Bank A", role=Role.bank, uscc=None, actor=OPERATOR)
        provider = runtime.identity.create_org(
            session, name="Tax", role=Role.data_provider, uscc=None, actor=OPERATOR
        )
        provider_token = runtime.identity.issue_token(
            session, org=provider, label="t", ttl=__import__("datetime").timedelta(days=1), actor=OPERATOR
        ).secret
    ds = Client(base_url, provider_token).datasets.create("tax", TAX_SCHEMA).id
    enrolled = runner.invoke(app, ["enrol", code, "--url", base_url])
    assert enrolled.exit_code == 0, enrolled.output
    token = re.search(r"^(pps_\S+)$", enrolled.output, re.M).group(1)  # type: ignore[union-attr]
    again = runner.invoke(app, ["enrol", code, "--url", base_url])
    assert again.exit_code == 1 and "was used at" in again.output
    key = tmp_path / "enterprise.key"
    assert runner.invoke(app, ["keys", "generate", "--out", str(key), "--algorithm", "sm2"]).exit_code == 0
    common = ["--url", base_url, "--token", token, "--key", str(key)]
    made = runner.invoke(
        app,
        [
            "keys",
            "enrol",
            *common,
            "--representative-name",
            "Li Wei",
            "--representative-id",
            REPRESENTATIVE_ID,
        ],
    )
    assert made.exit_code == 0 and "enrolled key sk_" in made.output, made.output
    granted = runner.invoke(
        app,
        [
            "consent", "grant", bank.id, *common, "--purpose", "loan_underwriting", "--dataset", ds,
            "--fields", "tax_paid", "--valid-until", "2099-01-01T00:00:00Z",
        ],
    )  # fmt: skip
    assert granted.exit_code == 1 and "three years" in granted.output  # the terms are checked first
    granted = runner.invoke(
        app,
        [
            "consent", "grant", bank.id, *common, "--purpose", "loan_underwriting", "--dataset", ds,
            "--fields", "tax_paid", "--valid-until", "2027-06-01T00:00:00Z",
        ],
    )  # fmt: skip
    assert granted.exit_code == 0 and "signed with sk_" in " ".join(granted.output.split()), granted.output
    consent_id = re.search(r"granted (cns_\w+)", granted.output).group(1)  # type: ignore[union-attr]
    revoked = runner.invoke(app, ["consent", "revoke", consent_id, *common])
    assert revoked.exit_code == 0, revoked.output
