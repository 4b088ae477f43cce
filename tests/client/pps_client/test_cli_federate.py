"""`pps-client federate` and `pps-client join`: three banks' processes train one model from their own CSV files."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from models.fl import non_iid_banks
from pps.infra.storage.tables import Role
from pps_client import Client
from tests.conftest import OrgFactory

pytestmark = [pytest.mark.e2e]
PPS_CLIENT = [sys.executable, "-m", "pps_client.cli"]


def _write(path: Path, names: list[str], x: Any, y: Any) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*names, "defaulted"])
        for row, label in zip(x, y, strict=True):
            w.writerow([*(f"{v:.6f}" for v in row), int(label)])


def _start(args: list[str], env: dict[str, str], token: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*PPS_CLIENT, *args],
        env={**env, "PPS_TOKEN": token},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_three_banks_train_from_the_command_line(base_url: str, make_org: OrgFactory, tmp_path: Path) -> None:
    split = non_iid_banks(900, banks=3, seed=4)
    banks = [make_org(Role.bank, f"CLI bank {i}") for i in range(3)]
    files = []
    for i, b in enumerate(split.banks):
        files.append(tmp_path / f"bank{i}.csv")
        _write(files[-1], split.feature_names, b.x_train, b.y_train)
    env = {**os.environ, "PPS_URL": base_url}
    create = ["federate", str(files[0]), "--label", "defaulted"]
    create += ["--features", ",".join(split.feature_names), "--banks", f"{banks[1].id},{banks[2].id}"]
    first = _start([*create, "--rounds", "2", "--poll", "0.1"], env, banks[0].token)
    with Client(base_url, banks[1].token) as invitee:
        invited: list[Any] = []
        for _ in range(300):
            invited = invitee.federations.list()
            if invited:
                break
            time.sleep(0.1)
        assert invited, "the federation was not created"
        fed_id = invited[0].id
    joiners = [
        _start(
            ["join", fed_id, str(files[i]), "--label", "defaulted", "--poll", "0.1"],
            env,
            banks[i].token,
        )
        for i in (1, 2)
    ]
    for p in (first, *joiners):
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, out + err
        assert "done" in out and "2 of 2" in out and "AUC on your own rows" in out
    # a portfolio without the federation's columns is refused with what is missing; nothing is sent
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    run = subprocess.run(
        [*PPS_CLIENT, "join", fed_id, str(bad), "--label", "defaulted"],
        env={**env, "PPS_TOKEN": banks[1].token},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0 and "needs a 0/1 'defaulted' column" in run.stderr + run.stdout
