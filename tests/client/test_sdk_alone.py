"""The bank's SDK installs alone: a fresh virtual environment with only ``pip install ./client[he,psi]`` (not
editable) has none of the server's packages, and a bank flow runs from it against a live service — PSI over
the subjects that consented, an encrypted scoring job decrypted by the bank, and the ledger entries of it all
verified against the signed checkpoint with a key pinned out of band."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pps.runtime import Runtime
from tests.pps.services.scoring.conftest import PURPOSE, World, plaintext_logits

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

CLIENT = Path(__file__).resolve().parents[2] / "client"
SERVER_ONLY = ("sqlalchemy", "fastapi", "alembic", "ray", "pps", "api", "enclave_sim", "models", "uvicorn")
WEIGHTS = {"log_sales_mean_last6": -0.4, "tax_filing_ratio": 1.2, "industry_c": 0.3}
BIAS = 0.5

PROBE = textwrap.dedent(
    """
    import importlib.util, json, sys
    names = json.loads(sys.argv[1])
    found = {n: importlib.util.find_spec(n) is not None for n in names}
    where = {n: importlib.util.find_spec(n).origin for n in ("pps_client", "pps_wire", "protocols")}
    print(json.dumps({"found": found, "where": where}))
    """
)

BANK = textwrap.dedent(
    """
    import json, sys

    from pps_client import Client, note_verifier, verify_entry
    from protocols.he_scoring import BankScoringKey

    args = json.loads(open(sys.argv[1], encoding="utf-8").read())
    pinned = note_verifier(args["ledger_key"])  # received out of band, not from the service
    with Client(args["url"], args["token"], timeout=120) as bank:
        found = bank.psi.run(args["customers"], purpose=args["purpose"])
        key = BankScoringKey.create()  # the secret key never leaves this process
        model = key.encrypt_model(args["weights"], args["bias"])
        asked = sorted(found.intersection)
        scored = bank.scoring.score(key, model, purpose=args["purpose"], subjects=asked)
        history = bank.ledger.mine(limit=500)
        verified = [verify_entry(item, pinned) for item in history.items]
        submitted = max((v for v in verified if v.entry.action == "job.submit"), key=lambda v: v.index)
        again = verify_entry(bank.ledger.entry(submitted.index), pinned)  # one entry, fetched on its own
    print(json.dumps({
        "intersection": sorted(found.intersection),
        "server_set_size": found.server_set_size,
        "scored": scored.subjects,
        "probabilities": [float(p) for p in scored.probabilities],
        "not_scored": {n.subject: n.reason for n in scored.not_scored},
        "verified": [[v.index, v.entry.action] for v in verified],
        "checkpoint_size": history.checkpoint.tree_size,
        "job": scored.job_id,
        "submitted": [o.id for o in again.entry.objects],
        "purpose": again.entry.purpose,
    }))
    """
)


def _env() -> dict[str, str]:
    """The process environment without anything that would put this repository on the SDK venv's path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def _run(args: list[str], cwd: Path, timeout: float) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, (
        f"{args[:4]} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


@pytest.fixture(scope="module")
def sdk_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding ``pps-client[he,psi]`` installed from ./client, not editable."""
    root = tmp_path_factory.mktemp("sdk-alone")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], root, 120)
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--quiet", f"{CLIENT}[he,psi]"], root, 1200)
    return python


def test_the_sdk_venv_has_none_of_the_server(sdk_python: Path, tmp_path: Path) -> None:
    out = json.loads(_run([str(sdk_python), "-c", PROBE, json.dumps(SERVER_ONLY)], tmp_path, 60))
    assert not any(out["found"].values()), f"server packages importable beside the SDK: {out['found']}"
    site = str(sdk_python.parent.parent)
    assert all(origin.startswith(site) for origin in out["where"].values()), out[
        "where"
    ]  # installed, not the tree


def test_a_bank_flow_from_the_sdk_alone(
    sdk_python: Path, world: World, runtime: Runtime, base_url: str, tmp_path: Path
) -> None:
    customers = world.consented + world.narrow + world.revoked + world.strangers
    args = tmp_path / "args.json"
    args.write_text(
        json.dumps(
            {
                "url": base_url,
                "token": world.bank.token,
                "ledger_key": runtime.ledger.signer.verifier_key,
                "customers": customers,
                "purpose": PURPOSE,
                "weights": WEIGHTS,
                "bias": BIAS,
            }
        ),
        encoding="utf-8",
    )
    script = tmp_path / "bank.py"
    script.write_text(BANK, encoding="utf-8")
    got = json.loads(_run([str(sdk_python), str(script), str(args)], tmp_path, 600).splitlines()[-1])

    # PSI: exactly the subjects that consented to this bank for this purpose (not the revoked, not strangers)
    assert got["intersection"] == sorted(world.consented + world.narrow)
    assert got["server_set_size"] == len(world.consented) + len(world.narrow)
    # scoring: those whose consent covers the fields the model reads, decrypted by the bank, right to 1e-3
    assert sorted(got["scored"]) == sorted(world.consented)
    assert got["not_scored"] == dict.fromkeys(world.narrow, "field_not_covered")
    expected = 1 / (1 + np.exp(-plaintext_logits(runtime, got["scored"], WEIGHTS, BIAS, {})))
    assert np.max(np.abs(np.array(got["probabilities"]) - expected)) < 1e-3
    # the ledger: every entry the bank made or caused, verified against the signed checkpoint
    actions = [a for _, a in got["verified"]]
    assert actions.count("job.submit") == 2, actions  # the PSI job and the scoring job
    assert all(index < got["checkpoint_size"] for index, _ in got["verified"])
    assert got["job"] in got["submitted"] and got["purpose"] == PURPOSE
