"""The household portal: Chinese first, works on a phone, and walks a herder through a consent with its
separate grants, a free report and the access history — through the API's own rules."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from models.households import generate_households
from pps.identity.persons import PersonKind
from pps.infra.storage.tables import Consent, PersonConsentTerms, Role
from pps.ledger.entry import OPERATOR
from pps.runtime import Runtime
from tests.api.web.conftest import csrf_of, enrol_passkey, sign_on_page
from tests.conftest import OrgFactory, OrgHandle
from tests.helpers import first_token
from tests.pps.services.scoring.conftest import upload_tables


def _count(rt: Runtime, table: Any) -> int:
    from sqlalchemy import func, select

    with rt.db.transaction(write=False) as s:
        return int(s.execute(select(func.count()).select_from(table)).scalar_one())


def test_a_herder_consents_reads_a_free_report_and_its_history_on_a_phone(
    runtime: Runtime, make_org: OrgFactory, page_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    data = generate_households(40, 3, months=6)
    datasets = upload_tables(runtime, make_org, data.provider_tables(), tmp_path)
    resident_id = str(data.ratings.columns["resident_id"][0])
    bank = make_org(Role.bank, "青海农商银行")
    with runtime.db.transaction() as s:
        person = runtime.persons.onboard(
            s, resident_id=resident_id, kind=PersonKind.household, actor=OPERATOR
        )
        runtime.person_rules.record_assessment(
            s,
            purpose="farm_herding_loan",
            activity="农牧贷 评级查询",
            assessment={
                "lawful_and_necessary": "单独同意",
                "impact_and_risks": "贷款被拒",
                "measures": "假名化、加密、账本",
            },
            actor=OPERATOR,
        )
        issued = first_token(runtime, s, person.org, label="phone")
    handle = OrgHandle(
        person.org.id, person.org.name, Role.subject, person.person.code, issued.secret, issued.token.id
    )
    herder = page_client(handle)

    home = herder.get("/ui/subject", follow_redirects=True)  # a household's home is its own portal
    assert home.status_code == 200 and str(home.url).endswith("/ui/person")
    html = home.text
    assert 'lang="zh-CN"' in html and "我的信用" in html and "今年还可免费查询" in html  # Chinese first
    assert 'name="viewport" content="width=device-width' in html  # phone-sized
    assert resident_id not in html and person.person.id_masked in html
    csrf = csrf_of(html)

    # step 1 -> 2: the items the 农牧贷 contract allows, each to tick
    common = {
        "csrf": csrf,
        "bank_org_id": bank.id,
        "purpose": "farm_herding_loan",
        "days": "90",
        "dataset_id": datasets["household_ratings"],
    }
    tick = herder.post("/ui/person/consents/preview", data=common)
    assert tick.status_code == 200 and "请逐项勾选" in tick.text and 'value="grade"' in tick.text
    assert 'value="county"' not in tick.text  # outside the product's data contract: not offered
    # step 2 -> 3: the warning for the livestock (an asset), and the sensitive items to grant one by one
    confirm = herder.post(
        "/ui/person/consents/preview", data=common | {"fields": ["grade", "livestock_units"]}
    )
    assert "第十四条" in confirm.text and 'name="granted" value="livestock_units"' in confirm.text
    sha = re.search(r'name="warning_sha256" value="([0-9a-f]{64})"', confirm.text)
    assert sha
    form = common | {"fields": ["grade", "livestock_units"], "warning_sha256": sha.group(1)}

    # without the separate grant to provide, or without reading the warning: refused, nothing stored
    refused = herder.post(
        "/ui/person/consents", data=form | {"granted": ["grade", "livestock_units"], "understood": "yes"}
    )
    assert refused.status_code == 422 and "Art. 23" in refused.text
    refused = herder.post(
        "/ui/person/consents", data=form | {"granted": ["grade", "livestock_units"], "provide_to_bank": "yes"}
    )
    assert refused.status_code == 422 and "Art. 14" in refused.text
    assert _count(runtime, Consent) == 0

    complete = form | {"granted": ["grade", "livestock_units"], "understood": "yes", "provide_to_bank": "yes"}
    unkeyed = herder.post("/ui/person/consents", data=complete)
    assert unkeyed.status_code == 422 and "register a passkey first" in unkeyed.text  # signed, or nothing
    # the household registers its passkey (issue 24), then signs the terms and its separate grants with it
    passkey = enrol_passkey(runtime, handle)
    to_sign = herder.post("/ui/person/consents", data=complete)
    assert to_sign.status_code == 200 and '"separate"' in to_sign.text.replace("&#34;", '"'), to_sign.text
    assert _count(runtime, Consent) == 0  # nothing exists before it is signed
    signed_page = sign_on_page(herder, to_sign.text, passkey)
    assert signed_page.status_code == 303 and "person_done_granted" in signed_page.headers["location"]
    done = herder.get(signed_page.headers["location"])
    assert done.status_code == 200 and "已授权" in done.text and "青海农商银行" in done.text
    assert _count(runtime, PersonConsentTerms) == 1

    report = herder.post("/ui/person/report", data={"csrf": csrf})
    assert report.status_code == 200 and "我的信用报告" in report.text and "您逐项单独同意" in report.text
    assert resident_id not in report.text
    herder.post("/ui/person/report", data={"csrf": csrf})
    third = herder.post("/ui/person/report", data={"csrf": csrf})
    assert third.status_code == 403 and "free_reports_exhausted" in third.text

    # stop at once
    consent_id = re.search(r'data-consent="(cns_[0-9a-f]+)"', herder.get("/ui/person").text)
    assert consent_id
    stopped = herder.post(f"/ui/person/consents/{consent_id.group(1)}/stop", data={"csrf": csrf})
    assert "已停止" in stopped.text
    # an enterprise is not a household: the portal refuses it
    enterprise = page_client(make_org(Role.subject))
    assert enterprise.get("/ui/person").status_code == 404
