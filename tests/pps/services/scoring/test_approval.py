"""Model approval end to end: only a model the enclave approved and encrypted runs; a crafted model is refused
with its reason before any result exists; consent granularity is honoured; disclosures are counted and shown
to the subject. (Settings as in production: ``unsafe_unapproved_models`` off.)"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from models.features import enterprise_features
from pps.infra.settings import Settings
from pps.infra.storage.tables import LedgerEntry, ModelApproval
from pps.runtime import Runtime
from pps_client import Client
from pps_client._exceptions import InvalidRequest, Refused
from protocols.he_scoring import BankScoringKey, Scorecard, ScorecardFeature
from tests.conftest import OrgFactory
from tests.pps.services.scoring.conftest import PURPOSE, Platform, World, _consent

pytestmark = [pytest.mark.db, pytest.mark.slow]

FEATURES = [
    "company_age_years",
    "size_class_ordinal",
    "log_registered_capital",
    "tax_months_filed",
    "tax_filing_ratio",
    "log_sales_mean_last6",
    "sales_trend",
    "sales_yoy_change",
]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"unsafe_unapproved_models": False, "disclosure_budget_models": 1})


def honest_model(platform: Platform, c: float = 1.0, features: list[str] = FEATURES) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression

    from models.features import FEATURE_RESOLUTION

    usccs, raw = enterprise_features(platform.data)
    label_of = dict(
        zip(platform.data.labels.columns["uscc"], platform.data.labels.columns["defaulted"], strict=True)
    )
    y = np.array([label_of[u] for u in usccs], dtype=float)
    cols = []
    for n in features:
        r = FEATURE_RESOLUTION[n]
        cols.append(np.nan_to_num(np.round(raw[n] / r) * r if r > 0 else raw[n]))
    x = np.column_stack(cols)
    mu, sd = x.mean(0), x.std(0)
    lr = LogisticRegression(C=c, max_iter=3000).fit((x - mu) / sd, y)
    return {
        "kind": "logistic",
        "weights": {n: float(w) for n, w in zip(features, lr.coef_[0], strict=True)},
        "bias": float(lr.intercept_[0]),
        "preprocess": {n: {"center": float(mu[j]), "scale": float(sd[j])} for j, n in enumerate(features)},
        "release": {"threshold": 0.1},
    }


def logits(runtime: Runtime, model: dict[str, Any], subjects: list[str]) -> np.ndarray[Any, Any]:
    with runtime.db.transaction(write=False) as s:
        table = runtime.features.table(s)
    _found, rows, _ = table.rows(subjects)
    x = table.matrix(FEATURES, rows)
    z = np.full(len(rows), model["bias"])
    for j, n in enumerate(FEATURES):
        p = model["preprocess"][n]
        z += model["weights"][n] * (np.nan_to_num(x[:, j]) - p["center"]) / p["scale"]
    return z


def test_only_the_approved_model_runs_and_crafted_models_are_refused(
    runtime: Runtime, platform: Platform, world: World, make_org: OrgFactory, base_url: str
) -> None:
    vendor = runtime.enclave.vendor_public_key
    client = Client(base_url, world.bank.token)
    key = BankScoringKey.create()
    policy = client.scoring.model_policy()
    assert policy["policy"]["max_share"] == 0.6 and len(policy["digest"]) == 64

    # a crafted one-hot model: refused in the enclave, naming the feature; nothing approved
    crafted = {"kind": "logistic", "weights": {"log_sales_mean_last6": 1.0}, "bias": 0.0}
    with pytest.raises(Refused) as e:
        client.scoring.approve(key, crafted, vendor_key=vendor)
    assert e.value.code == "model_refused"
    assert "log_sales_mean_last6 carries 100%" in str(e.value)
    with runtime.db.transaction(write=False) as s:
        assert s.scalar(select(ModelApproval.id)) is None
        refusals = s.scalars(select(LedgerEntry).where(LedgerEntry.action == "model.refuse")).all()
        assert len(refusals) == 1

    # an honest model: approved, encrypted by the enclave; the scores are that model's
    model = honest_model(platform)
    approval, encrypted = client.scoring.approve(key, model, vendor_key=vendor)
    assert encrypted is not None and approval["verdict"]["approved"]
    assert set(approval["features"]) == set(FEATURES)
    subjects = world.consented[:12]
    result = client.scoring.score(key, encrypted, purpose=PURPOSE, subjects=subjects)
    assert result.subjects == subjects
    # with noise at the model's release error: the logits say no more than its PD at the score resolution
    with runtime.db.transaction(write=False) as s:
        row = s.get(ModelApproval, approval["id"])
        assert row is not None
        tau = json.loads(row.approval_json)["release_error"]
    assert 0 < tau < 1
    error = np.asarray(result.raw) - logits(runtime, model, subjects)
    assert np.abs(error).max() < 6 * tau and np.std(error) > tau / 4

    # the same weights encrypted by the bank itself, or the approved bytes altered: refused at the door
    own = key.encrypt_model({n: model["weights"][n] / model["preprocess"][n]["scale"] for n in FEATURES}, 0.0)
    with pytest.raises(Refused) as e:
        client.scoring.score(key, own, purpose=PURPOSE, subjects=subjects)
    assert e.value.code == "model_not_approved"
    altered = type(encrypted)(
        encrypted.kind,
        encrypted.context_id,
        encrypted.features,
        (encrypted.ciphertexts[1], encrypted.ciphertexts[0], *encrypted.ciphertexts[2:]),
        packing=encrypted.packing,
    )
    with pytest.raises(Refused) as e:
        client.scoring.score(key, altered, purpose=PURPOSE, subjects=subjects)
    assert e.value.code == "model_not_approved"
    # an approved model under another bank's key is not this bank's
    other = Client(base_url, world.other_bank.token)
    with pytest.raises(Refused):
        other.scoring.score(key, encrypted, purpose=PURPOSE, subjects=subjects)
    with runtime.db.transaction(write=False) as s:
        approve = s.scalars(select(LedgerEntry).where(LedgerEntry.action == "model.approve")).one()
        text = approve.entry.decode()
        assert "weights" not in text and approval["model_digest"] in text


def test_granularity_and_disclosure_budget(
    runtime: Runtime, platform: Platform, world: World, make_org: OrgFactory, base_url: str
) -> None:
    vendor = runtime.enclave.vendor_public_key
    client = Client(base_url, world.bank.token)
    key = BankScoringKey.create()
    usccs = platform.data.registry.columns["uscc"].tolist()
    graded = usccs[100:106]
    scope = [
        {"dataset_id": platform.datasets["tax"], "fields": ["taxable_sales"]},
        {"dataset_id": platform.datasets["registry"], "fields": ["*"]},
    ]
    _consent(runtime, world.bank.id, graded[:3], scope, granularity="grade")
    _consent(runtime, world.bank.id, graded[3:], scope, granularity="decision")
    scored = world.consented[:4]
    model = honest_model(platform)
    approval, encrypted = client.scoring.approve(key, model, vendor_key=vendor)
    assert encrypted is not None

    # the encrypted path releases scores only: grade and decision subjects are left out, with the reason
    result = client.scoring.score(key, encrypted, purpose=PURPOSE, subjects=scored + graded)
    assert result.subjects == scored
    reasons = {r.subject: r.reason for r in result.not_scored}
    assert all(reasons[s] == "granularity" for s in graded)

    # inside the enclave each subject gets what its consent allows, no finer
    out = client.scoring.graded(
        approval["id"], approval["model_digest"], purpose=PURPOSE, vendor_key=vendor, subjects=scored + graded
    )
    assert set(out) == set(scored + graded)
    z = logits(runtime, model, scored + graded)
    pd = 1 / (1 + np.exp(-z))
    for s_, p in zip(scored + graded, pd, strict=True):
        if s_ in graded[:3]:
            assert set(out[s_]) == {"grade", "band"}
            low, high = out[s_]["band"]
            assert low <= p < high
        elif s_ in graded[3:]:
            assert out[s_] == {"decision": "approve" if p < 0.1 else "decline"}
        else:
            assert out[s_] == {"pd": round(round(p / 0.01) * 0.01, 6)}

    # a second, different approved model (on the tax features only: two models on the same features that
    # differ in one weight would isolate that feature, and the k-model rule refuses that): the subjects already
    # reached by one model are over budget (1)
    second = honest_model(platform, features=FEATURES[4:])
    approval_2, encrypted_2 = client.scoring.approve(key, second, vendor_key=vendor)
    assert encrypted_2 is not None and approval_2["model_digest"] != approval["model_digest"]
    fresh = world.consented[20:23]
    result_2 = client.scoring.score(key, encrypted_2, purpose=PURPOSE, subjects=scored + fresh)
    assert result_2.subjects == fresh
    assert {r.subject: r.reason for r in result_2.not_scored} == dict.fromkeys(scored, "disclosure_budget")
    # the same (first) model again costs nothing more
    again = client.scoring.score(key, encrypted, purpose=PURPOSE, subjects=scored)
    assert again.subjects == scored

    # the subject sees who received which model's results about it, and at which granularity
    # (its organisation exists already: it enrolled its consent-signing key to grant; it redeems a code)
    from tests.helpers import token_of_subject

    mine = Client(base_url, token_of_subject(runtime, graded[0])).scoring.disclosures()
    assert mine["budget_models"] == 1
    [row] = mine["disclosures"]
    assert row["bank_org_id"] == world.bank.id and row["granularity"] == "grade"
    assert row["model_digest"] == approval["model_digest"]
    json.dumps(mine)


def test_a_scorecard_is_approved_and_only_the_approved_one_runs(
    runtime: Runtime, platform: Platform, world: World, base_url: str
) -> None:
    """Issue 17: scorecards could not be approved at all. Bins + points are checked in the enclave on the
    platform's distribution; the enclave encrypts the approved card; a crafted card is refused."""
    vendor = runtime.enclave.vendor_public_key
    client = Client(base_url, world.bank.token)
    key = BankScoringKey.create()
    model = honest_model(platform)
    with runtime.db.transaction(write=False) as s:
        table = runtime.features.table(s)
    features = []
    for n in FEATURES:
        x = table.values[n]
        edges = sorted({float(e) for e in np.nanquantile(x, [0.2, 0.4, 0.6, 0.8])})
        mid = [float(np.nanmin(x)), *edges]
        p = model["preprocess"][n]
        points = [round(40 * model["weights"][n] * (m - p["center"]) / p["scale"], 2) for m in mid]
        features.append(
            {
                "name": n,
                "edges": edges,
                "points": points,
                **({"missing_points": 0.0} if np.isnan(x).any() else {}),
            }
        )
    card = {"kind": "scorecard", "base_points": 600.0, "features": features}
    approval, encrypted = client.scoring.approve(key, card, vendor_key=vendor)
    assert encrypted is not None and approval["verdict"]["approved"]
    subjects = world.consented[:8]
    result = client.scoring.score(key, encrypted, purpose=PURPOSE, subjects=subjects)
    _found, rows, _ = table.rows(subjects)
    want = np.full(len(rows), 600.0)
    for f in features:
        x = table.matrix([f["name"]], rows)[:, 0]
        bins = np.searchsorted(np.asarray(f["edges"]), np.nan_to_num(x), side="right")
        want += np.where(np.isnan(x), f.get("missing_points", 0.0), np.asarray(f["points"])[bins])
    np.testing.assert_allclose(np.asarray(result.raw), want, atol=1e-2)
    with pytest.raises(InvalidRequest, match="graded scoring takes a logistic model"):  # points have no PD
        client.scoring.graded(
            approval["id"], approval["model_digest"], purpose=PURPOSE, vendor_key=vendor, subjects=subjects
        )
    # a crafted card (one characteristic, points = the value on the published grid): refused, nothing runs
    x = table.values["log_sales_mean_last6"]
    lo, hi = np.nanquantile(x, [0.1, 0.9])
    edges = [round(float(e), 2) for e in np.arange(lo, hi, 0.05)][:255]
    crafted = {
        "kind": "scorecard",
        "features": [
            {"name": "log_sales_mean_last6", "edges": edges, "points": [0.0, *edges], "missing_points": 0.0}
        ],
    }
    with pytest.raises(Refused) as e:
        client.scoring.approve(key, crafted, vendor_key=vendor)
    assert e.value.code == "model_refused" and "log_sales_mean_last6" in str(e.value)
    own = key.encrypt_scorecard(  # the approved card encrypted by the bank itself: not what was approved
        Scorecard(
            tuple(
                ScorecardFeature(f["name"], tuple(f["edges"]), tuple(f["points"]), f.get("missing_points"))
                for f in features
            ),
            600.0,
        )
    )
    with pytest.raises(Refused) as e:
        client.scoring.score(key, own, purpose=PURPOSE, subjects=subjects)
    assert e.value.code == "model_not_approved"
