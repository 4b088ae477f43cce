"""`pps-client score`: a bank scores from the command line; the key stays in its file, the result in a CSV."""

from __future__ import annotations

import csv
import json
import stat
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pps.runtime import Runtime
from pps_client.cli import app
from tests.pps.services.scoring.conftest import PURPOSE, World, plaintext_logits

pytestmark = [pytest.mark.db, pytest.mark.slow]
runner = CliRunner()


def test_bank_score_writes_decrypted_scores_and_reasons(
    world: World, runtime: Runtime, base_url: str, tmp_path: Path
) -> None:
    weights = {"log_sales_mean_last6": -0.4, "tax_filing_ratio": 1.2, "industry_c": 0.3}
    model = tmp_path / "model.json"
    model.write_text(
        json.dumps(
            {
                "kind": "logistic",
                "weights": weights,
                "bias": 0.5,
                "preprocess": {"log_sales_mean_last6": {"center": 11.0, "scale": 2.0}},
            }
        )
    )
    subjects = tmp_path / "applicants.txt"
    asked = world.consented[:6] + world.revoked[:1] + world.strangers[:1]
    subjects.write_text("\n".join(asked) + "\n")
    key, out = tmp_path / "bank.key", tmp_path / "scores.csv"
    args = ["score", str(model), "--purpose", PURPOSE, "--subjects", str(subjects)]
    args += ["--key", str(key), "--out", str(out), "--url", base_url, "--token", world.bank.token]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "scored" in result.output and "1 no_grant" in result.output and "1 revoked" in result.output
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    rows = list(csv.DictReader(out.open()))
    scored = {r["uscc"]: float(r["probability"]) for r in rows if r["probability"]}
    assert list(scored) == world.consented[:6]
    expected = 1 / (
        1
        + np.exp(
            -plaintext_logits(
                runtime, list(scored), weights, 0.5, {"log_sales_mean_last6": {"center": 11.0, "scale": 2.0}}
            )
        )
    )
    assert np.max(np.abs(np.array(list(scored.values())) - expected)) < 1e-3
    assert {r["uscc"]: r["not_scored"] for r in rows if r["not_scored"]} == {
        world.revoked[0]: "revoked",
        world.strangers[0]: "no_grant",
    }
    # the same key file is reused; a model naming an unknown feature is refused with the reason
    model.write_text(json.dumps({"kind": "logistic", "weights": {"favourite_colour": 1.0}}))
    result = runner.invoke(app, args)
    assert result.exit_code != 0 and "favourite_colour" in result.output


def test_a_job_that_scores_nobody_exits_5_with_the_reasons_and_what_to_do(
    world: World, base_url: str, tmp_path: Path
) -> None:
    model = tmp_path / "model.json"
    model.write_text(json.dumps({"kind": "logistic", "weights": {"tax_filing_ratio": 1.0}, "bias": 0.0}))
    subjects = tmp_path / "applicants.txt"
    subjects.write_text("\n".join(world.revoked[:1] + world.strangers[:2]) + "\n")
    out = tmp_path / "scores.csv"
    args = ["score", str(model), "--purpose", PURPOSE, "--subjects", str(subjects)]
    args += ["--key", str(tmp_path / "bank.key"), "--out", str(out), "--url", base_url]
    result = runner.invoke(app, [*args, "--token", world.bank.token])
    assert result.exit_code == 5, result.output
    assert "scored no enterprise" in result.output and "docs/reasons.md" in result.output
    assert "no_grant: the enterprise has given your organisation no consent" in result.output
    assert "revoked: the enterprise revoked its consent" in result.output
    assert len(list(csv.DictReader(out.open()))) == 3  # the CSV still says who and why
