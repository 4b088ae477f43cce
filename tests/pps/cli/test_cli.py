"""The ``pps`` command line, run as a user would (in-process with typer's runner)."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pps.cli import app
from pps.infra.settings import get_settings

runner = CliRunner()

COMMANDS = [
    [],
    ["serve"],
    ["db"],
    ["db", "upgrade"],
    ["db", "current"],
    ["admin"],
    ["admin", "bootstrap"],
    ["admin", "org", "create"],
    ["admin", "org", "list"],
    ["admin", "org", "disable"],
    ["admin", "token", "issue"],
    ["admin", "token", "revoke"],
    ["audit"],
    ["audit", "verify"],
    ["audit", "checkpoint"],
    ["audit", "export"],
    ["audit", "public-key"],
    ["data"],
    ["data", "synth"],
    ["keys"],
    ["keys", "rotate"],
    ["keys", "retire"],
    ["keys", "status"],
]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PPS_DATA_DIR", str(tmp_path / "pps"))
    monkeypatch.delenv("PPS_DATABASE_URL", raising=False)
    return tmp_path / "pps"


def pps(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "pps")
def test_every_command_explains_itself(command: list[str]) -> None:
    code, out = pps(*command, "--help")
    assert code == 0, out
    assert "Usage" in out
    assert len(out.strip().splitlines()) > 4


@pytest.mark.parametrize("command", [["bank"], ["consent"], ["data", "upload"]])
def test_the_banks_and_providers_commands_live_in_the_client(command: list[str]) -> None:
    code, out = pps(*command, "--help")
    assert code != 0 and "No such command" in out


def test_operator_workflow(home: Path) -> None:
    code, out = pps("admin", "bootstrap", "--name", "Operator")
    assert code == 0, out
    token = re.search(r"^(pps_\S+)$", out, re.M)
    assert token, out
    code, out = pps("admin", "bootstrap")
    assert code == 1 and "already exists" in out

    code, out = pps("admin", "org", "create", "Bank A", "--role", "bank", "--token")
    assert code == 1 and "does not mint a bank's token" in out  # the operator never mints a bank's token
    code, out = pps("admin", "org", "create", "Bank A", "--role", "bank")
    assert code == 0 and re.search(r"^enr_\S+$", out, re.M), out  # its one-time enrolment code instead
    bank_id = re.search(r"organisation (org_\w+)", out).group(1)  # type: ignore[union-attr]
    code, out = pps("admin", "token", "issue", bank_id, "--label", "shadow")
    assert code == 1 and "minted only by the organisation itself" in " ".join(out.split())
    code, out = pps("admin", "org", "create", "Tax bureau", "--role", "data_provider", "--token")
    assert code == 0, out
    provider_id = re.search(r"organisation (org_\w+)", out).group(1)  # type: ignore[union-attr]
    token_id = re.search(r"token id: (tok_\w+)", out).group(1)  # type: ignore[union-attr]
    code, out = pps(
        "admin", "org", "create", "Enterprise", "--role", "subject", "--uscc", "91350100M000100Y44"
    )
    assert code == 1 and "check character" in out
    code, out = pps("admin", "org", "list")
    assert code == 0 and "Bank A" in out and "Enterprise" not in out
    code, out = pps("admin", "token", "issue", provider_id, "--label", "batch jobs")
    assert code == 0 and "pps_" in out
    code, out = pps("admin", "token", "revoke", token_id)
    assert code == 0, out
    code, out = pps("admin", "token", "revoke", token_id)
    assert code == 1 and "already revoked" in out
    code, out = pps("admin", "org", "disable", bank_id, "--reason", "licence withdrawn")
    assert code == 0, out
    code, out = pps("admin", "org", "disable", bank_id, "--reason", "again")
    assert code == 1 and "already disabled" in out
    code, out = pps("admin", "token", "issue", "org_missing")
    assert code == 1 and "does not exist" in out


def test_db_commands(home: Path) -> None:
    code, out = pps("db", "upgrade")
    assert code == 0 and "→" in out
    code, out = pps("db", "current")
    assert code == 0 and "(run" not in out


def test_audit_verify_checkpoint_and_tamper(home: Path, tmp_path: Path) -> None:
    assert pps("admin", "bootstrap")[0] == 0
    for i in range(5):
        assert pps("admin", "org", "create", f"Bank {i}", "--role", "data_provider", "--token")[0] == 0
    saved = tmp_path / "seen.note"
    code, out = pps("audit", "checkpoint", "--out", str(saved))
    assert code == 0 and saved.read_text() in out
    assert pps("admin", "org", "create", "Late bank", "--role", "bank")[0] == 0

    code, out = pps("audit", "verify", "--against", str(saved))
    assert code == 0, out
    assert "consistent with saved checkpoint" in out and "19" in out

    code, out = pps("audit", "public-key")
    assert code == 0 and "+" in out.splitlines()[0]

    with sqlite3.connect(home / "pps.db") as db:
        db.execute(
            "UPDATE ledger_entries SET entry = CAST(replace(CAST(entry AS TEXT), 'Bank 3', 'Bank 9') AS BLOB) "
            "WHERE idx = 11"
        )
    code, out = pps("audit", "verify", "--against", str(saved))
    assert code == 3, out
    assert "first bad index 11" in out.replace("\n", " ")


def test_audit_export(home: Path, tmp_path: Path) -> None:
    assert pps("admin", "bootstrap")[0] == 0
    assert (
        pps("admin", "org", "create", "Enterprise", "--role", "subject", "--uscc", "91350100M000100Y43")[0]
        == 0
    )
    out_file = tmp_path / "export.jsonl"
    code, out = pps("audit", "export", "--out", str(out_file), "--subject", "91350100M000100Y43")
    assert code == 0, out
    lines = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert lines[0]["format"] == "pps-audit-export/1"
    assert [line["index"] for line in lines[1:]] == [2, 3]  # onboarded, and its enrolment code issued
    assert not out_file.with_name("export.jsonl.partial").exists()
    # the export itself is on the record
    code, out = pps("audit", "verify")
    assert code == 0 and "entries" in out


def test_verify_after_the_signing_key_was_replaced(home: Path) -> None:
    assert pps("admin", "bootstrap")[0] == 0
    code, out = pps("audit", "public-key")
    old_key = out.splitlines()[0]
    assert pps("audit", "checkpoint")[0] == 0
    (home / "keys" / "ledger-signing-ed25519.pem").unlink()  # lost; a new key is made on the next start
    assert pps("admin", "org", "create", "Bank", "--role", "bank")[0] == 0
    assert pps("audit", "checkpoint")[0] == 0
    code, out = pps("audit", "verify")  # the old checkpoints' key is unknown now: not tampering, not vouched
    assert code == 4 and "unknown signing key" in out
    assert f"pps.local/ledger+{old_key.split('+')[1]}" in "".join(out.split())
    code, out = pps("audit", "verify", "--verifier-key", old_key)
    assert code == 0, out
    assert "checkpoints checked" in out


def test_verify_refuses_a_missing_checkpoint_file(home: Path, tmp_path: Path) -> None:
    code, out = pps("audit", "verify", "--against", str(tmp_path / "nowhere.note"))
    assert code == 2 and "does not exist" in out


def test_verify_save_signs_exactly_what_was_verified(home: Path, tmp_path: Path) -> None:
    assert pps("admin", "bootstrap")[0] == 0
    saved = tmp_path / "verified.note"
    code, out = pps("audit", "verify", "--save", str(saved))
    assert code == 0, out
    lines = saved.read_text(encoding="utf-8").splitlines()
    assert lines[1] == "2" and lines[4].startswith("— ")


@pytest.mark.parametrize(
    ("sql", "bad_index", "what"),
    [
        (
            "UPDATE ledger_entries SET entry = CAST(entry AS TEXT) WHERE idx = 3",
            3,
            "entry holds text, not blob",
        ),
        ("UPDATE ledger_entries SET leaf_hash = hex(leaf_hash) WHERE idx = 4", 4, "leaf_hash holds text"),
        ("UPDATE ledger_entries SET time = 'yesterday' WHERE idx = 2", 2, "time holds text, not a time"),
        ("UPDATE ledger_head SET frontier = hex(frontier)", None, "frontier holds text, not blob"),
        ('UPDATE ledger_nodes SET hash = CAST(hash AS TEXT) WHERE level = 1 AND "index" = 1', 2, "hash"),
    ],
)
def test_verify_names_a_row_whose_cell_type_was_changed(
    home: Path, sql: str, bad_index: int | None, what: str
) -> None:
    """SQLite keeps whatever type is written: a cell made TEXT is reported with its row, never a traceback."""
    assert pps("admin", "bootstrap")[0] == 0
    for i in range(4):
        assert pps("admin", "org", "create", f"Bank {i}", "--role", "bank")[0] == 0
    assert pps("audit", "verify")[0] == 0
    with sqlite3.connect(home / "pps.db") as db:
        db.execute(sql)
    result = runner.invoke(app, ["audit", "verify"])
    out = " ".join(result.output.split())
    assert result.exit_code == 3, out
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "LEDGER INTEGRITY FAILURE" in out and what in out
    assert "its stored type was changed" in out
    assert (
        (f"first bad index {bad_index}" in out) if bad_index is not None else ("first bad index" not in out)
    )


def test_restore_drill_tells_a_restore_without_keys_from_tampering(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/operations.md's drill: back up, restore elsewhere without the key directory → exit 4 ("unknown
    signing key"), nothing written; with the pinned verifier key or the key directory → verified; a copy
    edited as well → exit 3, whatever keys are missing."""
    assert pps("admin", "bootstrap")[0] == 0
    assert pps("admin", "org", "create", "Bank", "--role", "bank")[0] == 0
    saved = tmp_path / "seen.note"
    assert pps("audit", "checkpoint", "--out", str(saved))[0] == 0
    pinned = pps("audit", "public-key")[1].splitlines()[0]
    backup = tmp_path / "backup"
    backup.mkdir()
    with sqlite3.connect(home / "pps.db") as live, sqlite3.connect(backup / "pps.db") as copy:
        live.backup(copy)
    shutil.copytree(home / "keys", backup / "keys")

    bare = tmp_path / "bare"  # the database restored alone
    bare.mkdir()
    shutil.copy(backup / "pps.db", bare / "pps.db")
    monkeypatch.setenv("PPS_DATA_DIR", str(bare))
    get_settings.cache_clear()
    before = sorted(p.name for p in bare.iterdir())
    code, out = pps("audit", "verify", "--against", str(saved))
    assert code == 4, out
    assert "unknown signing key" in out and "LEDGER INTEGRITY FAILURE" not in out
    assert sorted(p.name for p in bare.iterdir()) == before  # no key directory, no key made beside the copy
    code, out = pps("audit", "verify", "--against", str(saved), "--save", str(tmp_path / "new.note"))
    assert code == 1 and "does not exist" in " ".join(out.split())  # signing needs the key: refused, not made
    assert not (bare / "keys").exists() and not (tmp_path / "new.note").exists()
    code, out = pps("audit", "verify", "--against", str(saved), "--verifier-key", pinned)
    assert code == 0 and "consistent with saved checkpoint" in out
    code, out = pps("keys", "status")  # reports the KEK the copy needs and lacks; makes none
    assert code == 1 and "missing" in out, out
    assert sorted(p.name for p in bare.iterdir()) == before

    with sqlite3.connect(bare / "pps.db") as db:  # the same copy, edited: tampering is still tampering
        db.execute(
            "UPDATE ledger_entries SET entry = CAST(replace(CAST(entry AS TEXT), 'Bank', 'Knab') AS BLOB) "
            "WHERE idx = 2"
        )
    code, out = pps("audit", "verify")
    assert code == 3 and "first bad index 2" in " ".join(out.split())

    restored = tmp_path / "restored"  # the database with its key directory
    shutil.copytree(backup, restored)
    monkeypatch.setenv("PPS_DATA_DIR", str(restored))
    get_settings.cache_clear()
    code, out = pps("audit", "verify", "--against", str(saved))
    assert code == 0, out


def test_verify_state_names_each_row_edited_outside_the_service(home: Path) -> None:
    """``pps audit verify --state`` rebuilds budgets (and consents, objections) from the entries: a budget raised
    and reset by SQL is named, column by column, with exit 5; the ledger itself still verifies (exit 0 alone)."""
    assert pps("admin", "bootstrap")[0] == 0
    code, out = pps("admin", "org", "create", "Bank A", "--role", "bank")
    bank_id = re.search(r"organisation (org_\w+)", out).group(1)  # type: ignore[union-attr]
    assert pps("admin", "budget", "set", bank_id, "2")[0] == 0
    code, out = pps("audit", "verify", "--state")
    assert code == 0 and "DIVERGES" not in out, out
    with sqlite3.connect(home / "pps.db") as db:
        db.execute("UPDATE privacy_budgets SET total_micro = 50000000 WHERE bank_org_id = ?", (bank_id,))
    code, out = pps("audit", "verify")
    assert code == 0, out  # the ledger's own rows are intact: only --state looks at governed state
    code, out = pps("audit", "verify", "--state")
    flat = " ".join(out.split())
    assert code == 5, out
    assert "GOVERNED STATE DIVERGES FROM THE LEDGER" in flat and "privacy_budgets" in flat
    assert f"privacy_budgets {bank_id}: total_micro is 50000000 in the table, 2000000 by the ledger" in flat
