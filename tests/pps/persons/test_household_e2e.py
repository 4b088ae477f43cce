"""End to end over HTTP: a Haixi herding household onboarded by resident ID number grants separate consent, is
rated, has its rating queried for 农牧贷 by a bank, reads its free reports and access history; bad input is
refused and changes nothing; the ID number appears nowhere in the database, the logs or the ledger export."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from models.households import GRADE_SCORE, HOUSEHOLD_MODEL_FEATURES, generate_households, household_model
from pps.infra.settings import Settings
from pps.infra.storage.tables import Consent, FreeReport, Organization, Person, PersonConsentTerms, Role
from pps.runtime import Runtime
from pps_client import Client
from pps_client._exceptions import Refused
from pps_wire.resident_id import mask_resident_id
from pps_wire.subject_sign import SubjectKey
from protocols.he_scoring import BankScoringKey
from tests.api.web.conftest import csrf_of, log_in
from tests.conftest import OrgFactory, OrgHandle
from tests.helpers import signed_body

PURPOSE = "farm_herding_loan"
ASSESSMENT = {
    "purpose": PURPOSE,
    "activity": "农牧贷 underwriting over household ratings and production",
    "lawful_and_necessary": "the household's separate consent; only the fields of the 农牧贷 data contract",
    "impact_and_risks": "a refused or dearer loan; re-identification if the pseudonym key leaked",
    "measures": "pseudonymised IDs, encryption at rest, per-field separate consent, ledger, free reports",
}


def _upload(client: httpx.Client, table: Any, tmp: Path) -> str:
    table.write_csv(tmp)
    r = client.post("/v1/datasets", json={"name": table.name, "schema": table.schema})
    assert r.status_code == 201, r.text
    ds = r.json()["id"]
    body = (tmp / f"{table.name}.csv").read_bytes()
    r = client.post(f"/v1/datasets/{ds}/versions", params={"format": "csv"}, content=body)
    assert r.status_code == 201, r.text
    return str(ds)


def _count(rt: Runtime, table: Any) -> int:
    with rt.db.transaction(write=False) as s:
        return int(s.execute(select(func.count()).select_from(table)).scalar_one())


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """As in production: encrypted scoring runs only models the enclave approved."""
    return settings.model_copy(update={"unsafe_unapproved_models": False})


@pytest.fixture
def world(make_org: OrgFactory) -> dict[str, OrgHandle]:
    return {
        "admin": make_org(Role.platform_admin, "Qinghai credit platform operator (青信融)"),
        "bureau": make_org(Role.data_provider, "Haixi agriculture and rural affairs bureau"),
        "bank": make_org(Role.bank, "Qinghai Rural Commercial Bank"),
        "auditor": make_org(Role.auditor, "PBoC Xining audit office"),
    }


def test_a_haixi_herding_household_end_to_end(
    runtime: Runtime,
    settings: Settings,
    world: dict[str, OrgHandle],
    http: Callable[..., httpx.Client],
    app: FastAPI,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    data = generate_households(300, 11, months=12)
    ratings = data.ratings.columns
    herding_haixi = [
        i
        for i, (c, t) in enumerate(
            zip(ratings["county"].tolist(), ratings["household_type"].tolist(), strict=True)
        )
        if c.startswith("6328") and t == "herding"
    ]
    row = herding_haixi[0]
    resident_id = str(ratings["resident_id"][row])
    expected_grade = str(ratings["grade"][row])

    admin, bureau, bank = http(world["admin"].token), http(world["bureau"].token), http(world["bank"].token)
    ds_ratings = _upload(bureau, data.ratings, tmp_path)
    _upload(bureau, data.production, tmp_path)

    # --- onboarding: a bad number is refused and creates nothing -------------------------------------------
    orgs = _count(runtime, Organization)
    bad = resident_id[:17] + ("0" if resident_id[17] != "0" else "1")
    r = admin.post("/v1/persons", json={"resident_id": bad, "kind": "household"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_resident_id", r.text
    assert "check character" in r.json()["error"]["message"] and bad not in r.text
    assert _count(runtime, Organization) == orgs and _count(runtime, Person) == 0

    r = admin.post("/v1/persons", json={"resident_id": resident_id, "kind": "household"})
    assert r.status_code == 201, r.text
    person = r.json()
    code = person["code"]
    assert person["id_masked"] == mask_resident_id(resident_id) and resident_id not in r.text
    r = admin.post("/v1/persons", json={"resident_id": resident_id, "kind": "household"})
    assert r.status_code == 409
    # the operator cannot mint the household's credential (issue 24): the household redeems its one-time code
    r = admin.post(f"/v1/orgs/{person['org_id']}/tokens", json={"label": "phone"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "operator_bounded", r.text
    r = http(None).post("/v1/enrol", json={"code": person["enrolment_code"], "label": "phone"})
    assert r.status_code == 201, r.text
    herder_token = r.json()["token"]["token"]
    herder = http(herder_token)
    # its own consent-signing key, made on its phone, enrolled after the real-name check of the person itself
    herder_key = SubjectKey.generate()
    Client(str(herder.base_url), herder_token).keys.enrol(
        herder_key, representative_name="才让", representative_id=resident_id
    )

    scope = [{"dataset_id": ds_ratings, "fields": ["grade", "rated_on", "livestock_units"]}]
    terms: dict[str, Any] = {
        "bank_org_id": world["bank"].id,
        "purpose": PURPOSE,
        "scope": scope,
        "operations": ["score"],
        "valid_until": (datetime.now(UTC) + timedelta(days=90)).isoformat(),
        "granularity": "score",  # the bank decrypts the score itself (issue 17: 农牧贷's default is a grade)
    }

    # --- before consent: the bank learns nothing -------------------------------------------------------------
    r = bank.post("/v1/household-ratings/query", json={"purpose": PURPOSE, "subjects": [code]})
    assert r.status_code == 200 and r.json()[0]["grade"] is None and "no_grant" in r.json()[0]["denied"]

    # --- consent without the separate grants is refused; nothing is stored ------------------------------------
    r = herder.post("/v1/consents", json=terms)
    assert r.status_code == 422 and r.json()["error"]["code"] == "separate_consent_required", r.text
    full = {"provide_to_bank": True, "sensitive_fields": {ds_ratings: ["grade", "livestock_units"]}}
    r = herder.post("/v1/persons/me/consents", json=terms | {"separate": full})
    assert r.status_code == 422 and "impact assessment" in r.json()["error"]["message"]
    r = admin.post("/v1/impact-assessments", json=ASSESSMENT)
    assert r.status_code == 201, r.text
    r = herder.post("/v1/persons/me/consents", json=terms | {"separate": {**full, "provide_to_bank": False}})
    assert r.json()["error"]["code"] == "separate_consent_required" and "Art. 23" in r.text
    r = herder.post(
        "/v1/persons/me/consents",
        json=terms | {"separate": {**full, "sensitive_fields": {ds_ratings: ["grade"]}}},
    )
    assert r.json()["error"]["details"]["missing"] == [f"{ds_ratings}.livestock_units"]
    r = herder.post("/v1/persons/me/consents", json=terms | {"separate": full})
    error = r.json()["error"]
    assert error["code"] == "separate_consent_required" and error["details"]["missing"] == ["art14_warning"]
    assert "第十四条" in error["details"]["warning"]
    assert _count(runtime, Consent) == 0 and _count(runtime, PersonConsentTerms) == 0

    # --- what the portal shows, then the grant with every separate grant -------------------------------------
    r = herder.post("/v1/persons/me/consents/preview", json=terms | {"separate": {"provide_to_bank": False}})
    preview = r.json()
    assert (
        preview["sensitive_fields"] == {ds_ratings: ["grade", "livestock_units"]}
        and preview["impact_assessed"]
    )
    granted = terms | {"separate": {**full, "warning_sha256": preview["warning_sha256"]}}
    r = herder.post("/v1/persons/me/consents", json=granted)  # every separate grant, but unsigned
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_subject_signature", r.text
    r = herder.post(  # signed over other separate grants than those sent
        "/v1/persons/me/consents",
        json={**granted, "signature": signed_body(herder_key, code, terms | {"separate": full})["signature"]},
    )
    assert r.status_code == 422 and "separate" in r.json()["error"]["message"], r.text
    assert _count(runtime, Consent) == 0
    r = herder.post("/v1/persons/me/consents", json=signed_body(herder_key, code, granted))
    assert r.status_code == 201, r.text
    assert r.json()["subject_uscc"] == code

    # --- the bank's authorised rating query: the grade and date, nothing else ---------------------------------
    r = bank.post("/v1/household-ratings/query", json={"purpose": PURPOSE, "subjects": [code]})
    assert r.status_code == 200, r.text
    assert r.json()[0]["grade"] == expected_grade and r.json()[0]["denied"] is None
    # --- encrypted 农牧贷 scoring with a model the enclave approved on the households' features ----------------
    bank_sdk = Client(str(bank.base_url), world["bank"].token)
    catalogue = {f.name: f for f in bank_sdk.scoring.features()}
    assert catalogue["hh_grade_score"].available and catalogue["hh_log_livestock"].available
    key = BankScoringKey.create()
    vendor = runtime.enclave.vendor_public_key
    # the bank's own encryption of a model is refused at the door (settings as in production)
    with pytest.raises(Refused) as refusal:
        bank_sdk.scoring.score(
            key, key.encrypt_model({"hh_grade_score": -0.6}, 0.5), purpose=PURPOSE, subjects=[code]
        )
    assert refusal.value.code == "model_not_approved"
    # a model concentrated on one household feature is refused in the enclave, naming it
    with pytest.raises(Refused) as refusal:
        bank_sdk.scoring.approve(
            key, {"kind": "logistic", "weights": {"hh_log_livestock": 1.0}}, vendor_key=vendor
        )
    assert refusal.value.code == "model_refused" and "hh_log_livestock carries 100%" in str(refusal.value)
    # a model reading an enterprise's and a household's features at once: no subject has both
    with pytest.raises(Refused) as refusal:
        bank_sdk.scoring.approve(
            key,
            {
                "kind": "logistic",
                "weights": {"hh_grade_score": -0.5, "hh_insured": -0.3, "tax_filing_ratio": -1.0},
            },
            vendor_key=vendor,
        )
    assert refusal.value.code == "model_refused" and "one kind of subject" in str(refusal.value)
    # the bank's honest 农牧贷 scorecard (its weight spread over seven features): approved on the households
    spec = household_model(data)
    approval, encrypted = bank_sdk.scoring.approve(key, spec, vendor_key=vendor)
    assert encrypted is not None and approval["verdict"]["approved"], approval
    assert set(approval["features"]) == set(HOUSEHOLD_MODEL_FEATURES)
    assert max(approval["verdict"]["shares"].values()) <= 0.6
    # its consent covers the grade and livestock only: the approved model reads more, so it is not scored
    scored = bank_sdk.scoring.score(key, encrypted, purpose=PURPOSE, subjects=[code])
    assert scored.subjects == [] and scored.not_scored[0].reason == "field_not_covered"
    # a second separate consent for the model's fields (the production survey's income too, after the warning)
    read: dict[str, set[str]] = {}
    for n in spec["weights"]:
        for ds, fs in catalogue[n].datasets.items():
            read.setdefault(ds, set()).update(fs)
    model_scope = [{"dataset_id": ds, "fields": sorted(fs)} for ds, fs in sorted(read.items())]
    # the SDK does what the portal does, signing with the household's own key
    herder_sdk = Client(str(bank.base_url), herder_token, subject_key=herder_key)
    valid_until = datetime.now(UTC) + timedelta(days=90)
    wide = {"purpose": PURPOSE, "scope": model_scope, "operations": ["score"], "valid_until": valid_until}
    shown = herder_sdk.persons.preview(world["bank"].id, granularity="score", **wide)  # type: ignore[arg-type]
    assert shown.warning is not None and "sales_income" in shown.warning and shown.impact_assessed
    consent = herder_sdk.persons.consent(
        world["bank"].id,
        shown=shown,
        provide_to_bank=True,
        granularity="score",
        **wide,  # type: ignore[arg-type]
    )
    assert consent.subject_uscc == code and consent.state == "active"
    scored = bank_sdk.scoring.score(key, encrypted, purpose=PURPOSE, subjects=[code])
    assert scored.subjects == [code], scored.not_scored
    with runtime.db.transaction(write=False) as s:
        table = runtime.features.table(s)
    _found, rows, _ = table.rows([code])
    z_subject = spec["bias"]
    for n, w in spec["weights"].items():
        p = spec["preprocess"][n]
        z_subject += w * (float(table.values[n][rows[0]]) - p["center"]) / p["scale"]
    # the approved model's logits carry noise at its release error (the k-models rule's assumption)
    tolerance = max(1e-3, 5 * float(approval.get("release_error") or 0.0))
    assert scored.raw is not None and abs(scored.raw[0] - z_subject) < tolerance, (tolerance, approval)
    assert table.values["hh_grade_score"][rows[0]] == GRADE_SCORE[expected_grade]

    # --- PIPL Art. 24: the household asks why; the enclave explains from the approved model ---------------------
    decisions = herder_sdk.decisions.list()
    assert [(d.bank_org_id, d.model_digest) for d in decisions] == [
        (world["bank"].id, approval["model_digest"])
    ]
    assert (
        decisions[0].purposes == [PURPOSE]
        and decisions[0].explainable
        and decisions[0].granularity == "score"
    )
    why = herder_sdk.decisions.explain(world["bank"].id, approval["model_digest"])
    assert why.population == "household" and set(why.features) == set(HOUSEHOLD_MODEL_FEATURES)
    assert 1 <= len(why.drivers) <= 3 and all(d.feature in HOUSEHOLD_MODEL_FEATURES for d in why.drivers)
    assert all(round(d.share, 1) == d.share and 0 < d.share <= 1 for d in why.drivers)
    # the drivers are this household's: the features whose contribution is furthest from the households' mean
    with runtime.db.transaction(write=False) as s:
        table = runtime.features.table(s)
    households = [i for i, u in enumerate(table.usccs) if u.startswith("P")]
    phi = {}
    for n, w in spec["weights"].items():
        p = spec["preprocess"][n]
        z = (table.values[n] - p["center"]) / p["scale"] * w
        phi[n] = float(z[rows[0]] - z[households].mean())
    expected = sorted(phi, key=lambda n: -abs(phi[n]))[: len(why.drivers)]
    assert [d.feature for d in why.drivers] == expected
    assert all((d.direction == "raises") == (phi[d.feature] > 0) for d in why.drivers)
    assert abs(why.result["pd"] - 1 / (1 + np.exp(-z_subject))) <= 0.006  # the score's resolution (0.01)
    assert (
        "weights" not in why.model_dump_json()
        and str(spec["weights"]["hh_log_land"]) not in why.model_dump_json()
    )
    # only about a decision that was made, only by the subject
    r = herder.post(
        "/v1/me/decisions/explain", json={"bank_org_id": world["bank"].id, "model_digest": "0" * 64}
    )
    assert r.status_code == 404, r.text
    assert bank.get("/v1/me/decisions").status_code == 403
    # the same in the household's portal, in plain Chinese: the decision, then "为什么？"
    portal = TestClient(app)
    try:
        assert log_in(portal, herder_token).status_code == 303
        home = portal.get("/ui/person")
        assert "银行对我的自动评估" in home.text and "为什么？给我解释" in home.text, home.text
        r = portal.post(
            "/ui/person/decisions/explain",
            data={
                "csrf": csrf_of(home.text),
                "bank_org_id": world["bank"].id,
                "model_digest": approval["model_digest"],
            },
        )
        assert r.status_code == 200, r.text
        assert all(f'data-feature="{d.feature}"' in r.text for d in why.drivers)
        assert "让您的风险变" in r.text and "农牧贷" in r.text
        assert str(spec["weights"]["hh_log_land"]) not in r.text
    finally:
        portal.close()
    # the same data for a purpose the household did not consent to: denied
    r = bank.post("/v1/household-ratings/query", json={"purpose": "loan_underwriting", "subjects": [code]})
    assert r.json()[0]["grade"] is None

    # --- free reports: two a year, the third refused and not counted ------------------------------------------
    for left in (1, 0):
        r = herder.post("/v1/persons/me/report")
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["free_reports_left"] == left
    assert {d["dataset"] for d in report["records"]} == {"household_ratings", "household_production"}
    assert report["records"][0]["rows"][0]["resident_id"] == code  # the stored key is the code
    assert report["assessments"][0]["purpose"] == PURPOSE
    actions = [h["action"] for h in report["history"]]
    assert (
        "person.onboard" in actions and "person.separate_consent" in actions and "policy.release" in actions
    )
    r = herder.post("/v1/persons/me/report")
    assert r.status_code == 403 and r.json()["error"]["code"] == "free_reports_exhausted", r.text
    assert _count(runtime, FreeReport) == 2
    r = herder.get("/v1/persons/me")
    assert r.json()["free_reports_left"] == 0 and r.json()["person"]["code"] == code

    # --- the ID number in clear: nowhere ------------------------------------------------------------------------
    entries: list[Any] = []
    after = None
    auditor = http(world["auditor"].token)
    while True:
        r = auditor.get("/v1/audit/entries", params={"limit": 200} | ({"after": after} if after else {}))
        page = r.json()
        entries.extend(page["items"])
        after = page["next_after"]
        if after is None:
            break
    ledger_text = json.dumps(entries, ensure_ascii=False)
    assert code in ledger_text
    env = {
        "PPS_DATA_DIR": str(settings.data_dir),
        "PPS_DATABASE_URL": settings.resolved_database_url,
        "PPS_SECRET_KEY": settings.secret_key.get_secret_value(),
        "PPS_ENVIRONMENT": "test",
    }
    from pps.cli import app as cli

    export = tmp_path / "export.jsonl"
    result = CliRunner().invoke(cli, ["audit", "export", "--out", str(export), "--subject", code], env=env)
    assert result.exit_code == 0, result.output
    assert code in export.read_text()
    texts = {"ledger (auditor)": ledger_text, "ledger export": export.read_text(), "logs": caplog.text}
    if settings.resolved_database_url.startswith("sqlite"):
        path = settings.resolved_database_url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            texts["database dump"] = "\n".join(conn.iterdump())
        for suffix in ("", "-wal"):
            f = Path(path + suffix)
            if f.exists():
                texts[f"database file{suffix}"] = f.read_bytes().decode("latin-1")
    else:  # PostgreSQL: every text column of every table
        with runtime.db.transaction(write=False) as s:
            rows = []
            for table in Organization.metadata.sorted_tables:
                rows.extend(str(tuple(r)) for r in s.execute(select(table)))
            texts["database dump"] = "\n".join(rows)
    for where, text in texts.items():
        assert resident_id not in text, where
        assert resident_id[6:14] + resident_id[14:17] not in text, where  # nor its birth date and sequence
