"""Individual businesses (个体工商户, USCC prefix 92) owned by a natural person are handled with the person rules
once the operator onboards them with the owner: the generic consent routes refuse them, a consent given before
is denied by the policy engine until the separate grants are on record, and the person route grants them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from models.synth import generate
from pps.errors import SeparateConsentRequired
from pps.governance.policy import DenyReason, Request
from pps.infra.storage.tables import Organization, Role
from pps.ledger.entry import OPERATOR
from pps.runtime import Runtime
from pps_wire.resident_id import make_resident_id
from tests.conftest import OrgFactory
from tests.helpers import first_token, signed_body, signed_grant, subject_key
from tests.pps.persons.test_person_rules import _assess, _terms
from tests.pps.services.scoring.conftest import upload_tables

pytestmark = [pytest.mark.db]
PURPOSE = "tax_loan"


def test_an_individual_business_onboarded_with_its_owner_gets_the_person_rules(
    runtime: Runtime, make_org: OrgFactory, http: Callable[..., httpx.Client], tmp_path: Path
) -> None:
    data = generate(40, 3, months=3)
    ids = upload_tables(runtime, make_org, [data.registry, data.tax], tmp_path)
    usccs = [str(u) for u in data.registry.columns["uscc"]]
    business = next(u for u in usccs if u.startswith("92"))
    firm = next(u for u in usccs if not u.startswith("92"))
    tax = ids["tax"]
    admin, bank = make_org(Role.platform_admin, "operator"), make_org(Role.bank, "Bank A")
    owner = make_resident_id("63010219800101123")
    _assess(runtime, PURPOSE)
    with runtime.db.transaction() as s:
        org = runtime.identity.create_org(
            s, name="个体 bakery", role=Role.subject, uscc=business, actor=OPERATOR
        )
        # before the owner is known, the business consents like an enterprise (signed with its own key)
        early_terms = _terms(tax, ["tax_paid"], PURPOSE)
        early = runtime.consents.grant(
            s,
            subject=org,
            bank_org_id=bank.id,
            terms=early_terms,
            signed=signed_grant(runtime, s, business, bank.id, early_terms),
            actor=OPERATOR,
        )
    operator = http(admin.token)
    r = operator.post("/v1/persons", json={"resident_id": owner, "kind": "individual_business", "uscc": firm})
    assert r.status_code == 422 and "92" in r.json()["error"]["message"], r.text
    r = operator.post(
        "/v1/persons",
        json={
            "resident_id": owner[:17] + ("1" if owner[17] == "0" else "0"),
            "kind": "individual_business",
            "uscc": business,
        },
    )
    assert r.status_code == 422 and owner[:17] not in r.text
    r = operator.post("/v1/persons", json={"resident_id": owner, "kind": "household", "uscc": business})
    assert r.status_code == 422
    r = operator.post(
        "/v1/persons", json={"resident_id": owner, "kind": "individual_business", "uscc": business}
    )
    assert r.status_code == 201, r.text
    assert r.json()["code"] == business and r.json()["org_id"] == org.id and owner not in r.text
    assert r.json()["id_masked"] == owner[:6] + "********" + owner[-4:]

    with runtime.db.transaction() as s:
        # the consent it gave as an enterprise no longer suffices: no separate grant on record
        decided = runtime.policy.decide(
            s, Request(bank.id, (business, firm), {tax: ("tax_paid",)}, "score", PURPOSE)
        )
        assert decided[0].reason is DenyReason.person_rule and "Art. 23" in (decided[0].detail or "")
        assert decided[1].reason is DenyReason.no_grant  # an ordinary enterprise: the ordinary rules
        subject = s.get(Organization, org.id)
        assert subject is not None
        with pytest.raises(SeparateConsentRequired):
            runtime.consents.grant(
                s,
                subject=subject,
                bank_org_id=bank.id,
                terms=early_terms,
                signed=signed_grant(runtime, s, business, bank.id, early_terms),
                actor=OPERATOR,
            )
    token = None
    with runtime.db.transaction() as s:
        subject = s.get(Organization, org.id)
        assert subject is not None
        token = first_token(runtime, s, subject).secret
        key = subject_key(runtime, s, business)
    owner_client = http(token)
    terms = {
        "bank_org_id": bank.id,
        "purpose": PURPOSE,
        "scope": [{"dataset_id": tax, "fields": ["tax_paid"]}],
        "operations": ["score"],
        "valid_until": (early.valid_until + timedelta(days=1)).isoformat(),
    }
    # the owner withdraws what the business gave as an enterprise, and gives it again with the separate grants
    assert owner_client.post(f"/v1/consents/{early.id}/revoke").status_code == 200
    r = owner_client.post("/v1/consents", json=terms)
    assert r.status_code == 422 and r.json()["error"]["code"] == "separate_consent_required"
    shown = owner_client.post(
        "/v1/persons/me/consents/preview", json=terms | {"separate": {"provide_to_bank": False}}
    )
    assert shown.status_code == 200, shown.text
    preview = shown.json()
    assert preview["impact_assessed"]
    r = owner_client.post("/v1/persons/me/consents", json=terms | {"separate": {"provide_to_bank": False}})
    assert r.json()["error"]["code"] == "separate_consent_required" and "Art. 23" in r.text
    separate = {
        "provide_to_bank": True,
        "sensitive_fields": preview["sensitive_fields"],
        "warning_sha256": preview["warning_sha256"],
    }
    r = owner_client.post(
        "/v1/persons/me/consents", json=signed_body(key, business, terms | {"separate": separate})
    )
    assert r.status_code == 201, r.text
    with runtime.db.transaction(write=False) as s:
        decided = runtime.policy.decide(
            s, Request(bank.id, (business,), {tax: ("tax_paid",)}, "score", PURPOSE)
        )
        assert decided[0].allowed, decided
    # its portal is the person portal
    assert owner_client.get("/v1/persons/me").json()["person"]["kind"] == "individual_business"
