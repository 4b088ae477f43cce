"""Encrypted scoring as a service: consent-shaped feature matrix, results only the bank opens, release rules."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import numpy as np
import pytest

from models.features import FEATURE_RESOLUTION
from pps.errors import InvalidInput
from pps.infra.storage.tables import Consent, Job, Role
from pps.runtime import Runtime
from pps_client import Client, NotFound, RateLimited, ReleaseVerificationError
from protocols.he_scoring import BankScoringKey, EncryptedModelMessage, Scorecard, ScorecardFeature
from tests.conftest import OrgFactory
from tests.helpers import token_of_subject, uscc_for
from tests.pps.services.scoring.conftest import PURPOSE, SUBJECT, Platform, World, plaintext_logits

pytestmark = [pytest.mark.db, pytest.mark.slow]

FEATURES = (
    "log_sales_mean_last6",
    "tax_filing_ratio",
    "tax_months_since_last_filing",
    "company_age_years",
    "log_registered_capital",
    "industry_c",
)
PREPROCESS = {
    "log_sales_mean_last6": {"center": 11.0, "scale": 2.0},
    "company_age_years": {"center": 8.0, "scale": 5.0, "clip": [0.0, 30.0]},
    "log_registered_capital": {"center": 5.0, "scale": 2.0},
}


@pytest.fixture(scope="module")
def key() -> BankScoringKey:
    return BankScoringKey.create()


def random_model(seed: int = 1) -> tuple[dict[str, float], float]:
    rng = np.random.default_rng(seed)
    return {n: float(rng.normal(0, 0.6)) for n in FEATURES}, -1.2


def test_the_bank_scores_its_consented_subjects_as_plaintext_would(
    world: World, runtime: Runtime, base_url: str, key: BankScoringKey
) -> None:
    weights, bias = random_model()
    model = key.encrypt_model(weights, bias)
    bank = Client(base_url, world.bank.token)
    asked = world.consented + world.narrow + world.revoked + world.strangers
    result = bank.scoring.score(key, model, purpose=PURPOSE, subjects=asked, preprocess=PREPROCESS)
    assert result.subjects == world.consented, result.not_scored[:3]
    expected = 1 / (1 + np.exp(-plaintext_logits(runtime, world.consented, weights, bias, PREPROCESS)))
    assert np.max(np.abs(result.probabilities - expected)) < 1e-3
    reasons = {r.subject: r.reason for r in result.not_scored}
    assert reasons == {
        **dict.fromkeys(world.narrow, "field_not_covered"),
        **dict.fromkeys(world.revoked, "revoked"),
        **dict.fromkeys(world.strangers, "no_grant"),
    }
    assert result.header.resolution["log_sales_mean_last6"] == FEATURE_RESOLUTION["log_sales_mean_last6"]
    with runtime.db.transaction(write=False) as s:
        used = {c.subject_uscc: c.uses for c in s.query(Consent).filter(Consent.bank_org_id == world.bank.id)}
    assert all(used[u] == 1 for u in world.consented) and all(used[u] == 0 for u in world.narrow)


def test_a_scorecard_is_scored_bin_by_bin(
    world: World, runtime: Runtime, base_url: str, key: BankScoringKey
) -> None:
    card = Scorecard(
        (
            ScorecardFeature("log_sales_mean_last6", (9.0, 11.0, 13.0), (-20.0, 5.0, 15.0, 30.0)),
            ScorecardFeature("tax_months_since_last_filing", (1.0, 3.0), (25.0, 0.0, -40.0)),
            ScorecardFeature("industry_c", (0.5,), (0.0, 12.0)),
        ),
        base_points=600.0,
    )
    model = key.encrypt_scorecard(card)
    result = Client(base_url, world.bank.token).scoring.score(key, model, purpose=PURPOSE, subjects=None)
    assert sorted(result.subjects) == sorted(world.consented)  # "all consented": the consent decides
    assert result.probabilities is None
    with runtime.db.transaction(write=False) as s:
        table = runtime.features.table(s)
    _, rows, _ = table.rows(result.subjects)
    expected = card.points(table.matrix(card.feature_names, rows))
    assert np.max(np.abs(result.raw - expected)) < 1e-3


def test_a_revocation_between_admission_and_release_takes_the_subject_out(
    world: World, runtime: Runtime, base_url: str, key: BankScoringKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights, bias = random_model(2)
    model = key.encrypt_model(weights, bias)
    victim = world.consented[3]
    evaluate = runtime.scoring._evaluate
    calls = []

    def evaluate_then_revoke(*args: Any, **kwargs: Any) -> Any:
        out = evaluate(*args, **kwargs)
        if not calls:
            with runtime.db.transaction() as s:
                runtime.consents.revoke(s, s.get(Consent, world.consent_ids[victim]), actor=SUBJECT)
        calls.append(1)
        return out

    monkeypatch.setattr(runtime.scoring, "_evaluate", evaluate_then_revoke)
    result = Client(base_url, world.bank.token).scoring.score(
        key, model, purpose=PURPOSE, subjects=world.consented[:10]
    )
    assert victim not in result.subjects and len(result.subjects) == 9
    assert next(r for r in result.not_scored if r.subject == victim).reason == "revoked"
    expected = plaintext_logits(runtime, result.subjects, weights, bias, {})
    assert np.max(np.abs(result.raw - expected)) < 1e-3  # the rest re-scored without it, still right
    with runtime.db.transaction(write=False) as s:
        assert s.get(Consent, world.consent_ids[victim]).uses == 0  # nothing spent: nothing released


def test_only_the_bank_reads_its_result_and_subjects_see_the_release(
    world: World, base_url: str, key: BankScoringKey, runtime: Runtime
) -> None:
    weights, bias = random_model(3)
    model = key.encrypt_model(weights, bias)
    bank = Client(base_url, world.bank.token)
    job = bank.scoring.submit(key, model, purpose=PURPOSE, subjects=world.consented[:5])
    bank.jobs.wait(job.id)
    other = Client(base_url, world.other_bank.token)
    with pytest.raises(NotFound, match="does not exist"):
        other.jobs.result(job.id)
    # (the subject's organisation exists: it enrolled its consent-signing key to grant)
    history = Client(base_url, token_of_subject(runtime, world.consented[0])).ledger.mine().items
    released = [i.entry for i in history if i.entry["action"] == "policy.release"]
    assert released and released[-1]["released"] == [{"to": world.bank.id, "what": "score:logistic"}]
    assert released[-1]["subjects"] == [world.consented[0]]  # redacted to itself


def test_the_safe_room_never_holds_a_key_that_opens_the_result(
    world: World, base_url: str, key: BankScoringKey
) -> None:
    weights, bias = random_model(4)
    model = key.encrypt_model(weights, bias)
    bank = Client(base_url, world.bank.token)
    job = bank.scoring.submit(key, model, purpose=PURPOSE, subjects=world.consented[:5])
    bank.jobs.wait(job.id)
    stranger_key = BankScoringKey.create()
    with pytest.raises(ReleaseVerificationError, match="another context"):
        bank.scoring.result(job.id, stranger_key)


# --- bad input: a clear 4xx, nothing stored -------------------------------------------------------------------


def _body(key: BankScoringKey, model: EncryptedModelMessage | bytes, **over: Any) -> dict[str, Any]:
    blob = model if isinstance(model, bytes) else model.to_bytes()
    body = {
        "purpose": PURPOSE,
        "subjects": [uscc_for(1)],
        "context": base64.b64encode(key.public_context_bytes()).decode(),
        "model": base64.b64encode(blob).decode(),
    }
    return body | over


def _jobs(rt: Runtime) -> int:
    with rt.db.transaction(write=False) as s:
        return s.query(Job).count()


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("garbage_context", "invalid_he_context"),
        ("secret_context", "he_context_has_secret_key"),
        ("garbage_model", "invalid_ciphertext"),
        ("foreign_model", "ciphertext_from_another_context"),
        ("unknown_feature", "invalid_input"),
        ("c3_feature", "invalid_input"),
        ("unknown_purpose", "invalid_input"),
        ("bad_uscc", "invalid_uscc"),
        ("bad_preprocess", "invalid_input"),
        ("not_base64", "invalid_input"),
    ],
)
def test_bad_requests_are_refused_and_store_nothing(
    world: World, runtime: Runtime, base_url: str, key: BankScoringKey, case: str, code: str
) -> None:
    good = key.encrypt_model({"log_sales_mean_last6": 1.0}, 0.0)
    body: dict[str, Any]
    if case == "garbage_context":
        body = _body(key, good, context=base64.b64encode(b"\x08\x01" + bytes(200)).decode())
    elif case == "secret_context":
        body = _body(key, good, context=base64.b64encode(key.secret_context_bytes()).decode())
    elif case == "garbage_model":
        body = _body(key, b"PPHE" + bytes(64))
    elif case == "foreign_model":
        body = _body(key, BankScoringKey.create().encrypt_model({"log_sales_mean_last6": 1.0}, 0.0))
    elif case == "unknown_feature":
        body = _body(key, key.encrypt_model({"favourite_colour": 1.0}, 0.0))
    elif case == "c3_feature":
        body = _body(key, key.encrypt_model({"log_court_amount_defendant": 1.0}, 0.0))
    elif case == "unknown_purpose":
        body = _body(key, good, purpose="curiosity")
    elif case == "bad_uscc":
        body = _body(key, good, subjects=["91320500MA1X000000"])
    elif case == "bad_preprocess":
        body = _body(key, good, preprocess={"industry_c": {"center": 1.0}})
    else:
        body = _body(key, good) | {"model": "%%%"}
    before = _jobs(runtime)
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {world.bank.token}"}) as c:
        response = c.post("/v1/scoring", json=body, timeout=60)
        assert response.status_code in (400, 413, 422), response.text
        assert response.json()["error"]["code"] == code, response.text
        assert c.get("/v1/features").status_code == 200  # alive
    assert _jobs(runtime) == before


def test_only_banks_submit_and_the_rate_limit_holds(
    world: World, runtime: Runtime, base_url: str, key: BankScoringKey, make_org: OrgFactory
) -> None:
    model = key.encrypt_model({"log_sales_mean_last6": 1.0}, 0.0)
    provider = make_org(Role.data_provider)
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {provider.token}"}) as c:
        assert c.post("/v1/scoring", json=_body(key, model), timeout=60).status_code == 403
    runtime.scoring.jobs_per_hour = 2
    bank = Client(base_url, world.bank.token)
    for _ in range(2):
        bank.scoring.submit(key, model, purpose=PURPOSE, subjects=world.consented[:2])
    with pytest.raises(RateLimited, match="per hour") as limited:
        bank.scoring.submit(key, model, purpose=PURPOSE, subjects=world.consented[:2])
    assert limited.value.retry_after is not None and limited.value.retry_after > 0
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {world.bank.token}"}) as c:
        response = c.post("/v1/scoring", json=_body(key, model), timeout=60)
        assert response.status_code == 429 and int(response.headers["Retry-After"]) > 0
    # the other bank has its own allowance
    Client(base_url, world.other_bank.token).scoring.submit(key, model, purpose=PURPOSE, subjects=None)


def test_the_feature_catalogue_is_discoverable_without_values(world: World, base_url: str) -> None:
    items = Client(base_url, world.bank.token).scoring.features()
    names = {i.name: i for i in items}
    assert names["log_sales_mean_last6"].available and names["log_sales_mean_last6"].unit == "log1p(CNY)"
    assert not names["log_court_amount_defendant"].available
    assert all(i.kind and i.resolution is not None and isinstance(i.datasets, dict) for i in items)


def test_direct_check_refuses_duplicates_and_empty_lists(runtime: Runtime, platform: Platform) -> None:
    key = BankScoringKey.create()
    model = key.encrypt_model({"log_sales_mean_last6": 1.0}, 0.0).to_bytes()
    ctx = key.public_context_bytes()
    u = platform.data.registry.columns["uscc"][0]
    with pytest.raises(InvalidInput, match="once"):
        runtime.scoring.check(purpose=PURPOSE, subjects=[u, u], context=ctx, model=model)
    with pytest.raises(InvalidInput, match="at least one"):
        runtime.scoring.check(purpose=PURPOSE, subjects=[], context=ctx, model=model)
