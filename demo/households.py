"""Demo step: a Haixi herding household on the platform (issue 19).

A herding household in Ulan county (Haixi) is onboarded by its resident ID number; the agriculture bureau
uploads household ratings and production keyed by ID number (pseudonymised on arrival); the household is
refused a consent without its separate grants, then — with the one-time code the township office handed it and
the key it enrolled on its phone (issue 24) — grants one after reading the Art. 14 warning, signed; Bank A's
authorised 农牧贷 rating query gets its grade; a household model Bank A encrypted itself is refused, the enclave
approves Bank A's 农牧贷 scorecard on the households' features, and the approved model scores the household over
the granted fields only; the household asks why (PIPL Art. 24) and the enclave names the features that mattered
most; the household reads two free reports (a third is refused)
and its access history; the ID number is nowhere in the database or the ledger.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console

from models.households import generate_households, household_model
from pps_client import APIError, Client
from pps_wire.resident_id import mask_resident_id
from pps_wire.subject_sign import SubjectKey, action_document, signed_action
from protocols.he_scoring import BankScoringKey

PURPOSE = "farm_herding_loan"


class _Checks(Protocol):
    def check(self, what: str, ok: bool, detail: str = "") -> None: ...


def _call(client: httpx.Client, method: str, path: str, **kw: Any) -> httpx.Response:
    return client.request(method, path, **kw)


def _signed(key: SubjectKey, code: str, terms: dict[str, Any], separate: dict[str, Any]) -> dict[str, Any]:
    """The grant's body with the household's signature over its terms and separate grants."""
    doc = action_document(
        action="grant",
        subject=code,
        bank=terms["bank_org_id"],
        purpose=terms["purpose"],
        scope=terms["scope"],
        operations=terms["operations"],
        valid_until=datetime.fromisoformat(terms["valid_until"]),
        granularity=terms.get("granularity"),
        separate=separate,
    )
    return terms | {"separate": separate, "signature": signed_action(key, doc)}


def run_household_step(
    url: str,
    admin_token: str,
    bank_token: str,
    bank_id: str,
    db_path: Path,
    checks: _Checks,
    console: Console,
    vendor_key: Ed25519PublicKey,
) -> None:
    data = generate_households(500, 19, months=12)
    cols = data.ratings.columns
    row = next(
        i
        for i, (c, t) in enumerate(zip(cols["county"].tolist(), cols["household_type"].tolist(), strict=True))
        if c.startswith("6328") and t == "herding"
    )
    resident_id, grade = str(cols["resident_id"][row]), str(cols["grade"][row])
    with (
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=60) as admin,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {bank_token}"}, timeout=60) as bank,
    ):
        bureau_org = admin.post(
            "/v1/orgs", json={"name": "Haixi Agriculture and Rural Affairs Bureau", "role": "data_provider"}
        ).json()
        bureau_token = admin.post(f"/v1/orgs/{bureau_org['id']}/tokens", json={"label": "demo"}).json()[
            "token"
        ]
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {bureau_token}"}, timeout=120
        ) as bureau:
            ids = {}
            for table in data.provider_tables():
                ds = bureau.post("/v1/datasets", json={"name": table.name, "schema": table.schema}).json()
                ids[table.name] = ds["id"]
                out = db_path.parent / "households"
                table.write_csv(out)
                body = (out / f"{table.name}.csv").read_bytes()
                r = bureau.post(f"/v1/datasets/{ds['id']}/versions", params={"format": "csv"}, content=body)
                (out / f"{table.name}.csv").unlink()
                console.print(
                    f"  {table.name}: {r.json().get('rows')} rows uploaded, ID numbers pseudonymised"
                )
        bad = resident_id[:17] + ("0" if resident_id[17] != "0" else "1")
        r = admin.post("/v1/persons", json={"resident_id": bad, "kind": "household"})
        checks.check(
            "an ID number with a wrong check character is refused (GB 11643)",
            r.status_code == 422 and r.json()["error"]["code"] == "invalid_resident_id",
            r.json()["error"]["message"],
        )
        person = admin.post("/v1/persons", json={"resident_id": resident_id, "kind": "household"}).json()
        code = person["code"]
        console.print(f"  household {person['id_masked']} onboarded as {code} (a keyed pseudonym)")
        checks.check(
            "the household is shown only masked", person["id_masked"] == mask_resident_id(resident_id)
        )
        # the township office hands the household its one-time code; the household mints its own token and
        # enrols the key on its phone after the real-name check (issue 24): the operator holds neither
        herder_token = httpx.post(
            f"{url}/v1/enrol", json={"code": person["enrolment_code"], "label": "phone"}, timeout=60
        ).json()["token"]["token"]
        herder_key = SubjectKey.generate()
        Client(url, herder_token).keys.enrol(
            herder_key, representative_name="才让", representative_id=resident_id
        )
        admin.post(
            "/v1/impact-assessments",
            json={
                "purpose": PURPOSE,
                "activity": "农牧贷 underwriting over household ratings",
                "lawful_and_necessary": "separate consent of the household; the 农牧贷 data contract only",
                "impact_and_risks": "a refused or dearer loan; re-identification if the pseudonym key leaked",
                "measures": "pseudonymised IDs, encryption at rest, per-field consent, ledger, free reports",
            },
        )
        spec = household_model(data)  # Bank A's 农牧贷 scorecard, fitted on its own household labels
        catalogue = {f["name"]: f for f in bank.get("/v1/features").json()}
        read: dict[str, set[str]] = {ids["household_ratings"]: {"grade", "rated_on"}}
        for name in spec["weights"]:
            for dataset_id, fields in catalogue[name]["datasets"].items():
                read.setdefault(dataset_id, set()).update(fields)
        terms = {
            "bank_org_id": bank_id,
            "purpose": PURPOSE,
            "scope": [{"dataset_id": d, "fields": sorted(f)} for d, f in sorted(read.items())],
            "operations": ["score"],
            "valid_until": (datetime.now(UTC) + timedelta(days=180)).isoformat(),
            "granularity": "score",  # Bank A decrypts the household's score itself (HE scoring)
        }
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {herder_token}"}, timeout=60
        ) as herder:
            r = herder.post("/v1/consents", json=terms)
            checks.check(
                "a consent without the separate grant is refused (PIPL Art. 23)",
                r.json()["error"]["code"] == "separate_consent_required",
            )
            preview = herder.post(
                "/v1/persons/me/consents/preview", json=terms | {"separate": {"provide_to_bank": False}}
            ).json()
            console.print(f"  [dim]{preview['warning'].splitlines()[0]}[/]")
            separate = {
                "provide_to_bank": True,
                "sensitive_fields": preview["sensitive_fields"],
                "warning_sha256": preview["warning_sha256"],
            }
            r = herder.post("/v1/persons/me/consents", json=_signed(herder_key, code, terms, separate))
            checks.check(
                "the household grants Bank A separately, field by field, after the Art. 14 warning, "
                "signed with its own key",
                r.status_code == 201,
                r.json().get("id", r.text),
            )
            answer = bank.post(
                "/v1/household-ratings/query", json={"purpose": PURPOSE, "subjects": [code]}
            ).json()
            checks.check(
                "Bank A's authorised 农牧贷 rating query returns the household's 信用户 grade",
                answer[0]["grade"] == grade,
                f"{answer[0]['grade']} rated {answer[0]['rated_on']}",
            )
            sdk = Client(url, bank_token)
            key = BankScoringKey.create()  # Bank A's own CKKS key: the model's weights stay secret
            try:
                sdk.scoring.score(
                    key, key.encrypt_model({"hh_grade_score": -0.6}, 0.8), purpose=PURPOSE, subjects=[code]
                )
                refused = "scored"
            except APIError as exc:
                refused = exc.code
            checks.check(
                "a household model Bank A encrypted itself is refused: only a model the enclave approved runs",
                refused == "model_not_approved",
                refused,
            )
            approval, model = sdk.scoring.approve(key, spec, vendor_key=vendor_key)
            shares = approval["verdict"]["shares"]
            checks.check(
                "the enclave approves Bank A's 农牧贷 scorecard on the households' features (no feature above "
                "60 % of the score's variance)",
                approval["verdict"]["approved"] and model is not None,
                ", ".join(f"{k} {v:.0%}" for k, v in sorted(shares.items(), key=lambda kv: -kv[1])[:3]),
            )
            assert model is not None
            scored = sdk.scoring.score(key, model, purpose=PURPOSE, subjects=[code])
            checks.check(
                "the approved model scores the household under its separate consent, encrypted end to end",
                scored.subjects == [code],
                f"PD {scored.as_dict().get(code, float('nan')):.3f}"
                if scored.subjects
                else str(scored.not_scored),
            )
            decisions = herder.get("/v1/me/decisions").json()
            why = herder.post(
                "/v1/me/decisions/explain",
                json={"bank_org_id": bank_id, "model_digest": approval["model_digest"]},
            ).json()
            drivers = why.get("drivers", [])
            checks.check(
                "the household asks why (PIPL Art. 24): the enclave names what mattered most, no weight",
                len(decisions) == 1 and bool(drivers) and "weights" not in why,
                ", ".join(f"{d['feature']} {d['direction']} risk ({d['share']:.0%})" for d in drivers),
            )
            left = [herder.post("/v1/persons/me/report").json()["free_reports_left"] for _ in range(2)]
            third = herder.post("/v1/persons/me/report")
            checks.check(
                "two free reports a year; the third is refused (征信业管理条例 Art. 17)",
                left == [1, 0] and third.json()["error"]["code"] == "free_reports_exhausted",
            )
            history = herder.get("/v1/persons/me").json()["history"]
            checks.check(
                "the household's history shows Bank A's query",
                "policy.release" in [h["action"] for h in history],
                ", ".join(h["action"] for h in history),
            )
    with sqlite3.connect(db_path) as conn:
        dump = "\n".join(conn.iterdump())
    checks.check("the ID number is nowhere in the database dump or ledger", resident_id not in dump)
