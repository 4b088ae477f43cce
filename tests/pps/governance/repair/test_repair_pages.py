"""The pages of credit repair, in Chinese: the enterprise's "My records" (records, periods, apply, statement,
applications with checks and deadlines), the authority's queue (approve, deny with reasons) and the
operator's overdue list."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from pps.governance.records import add_months
from pps.runtime import Runtime
from tests.api.web.conftest import csrf_of, log_in
from tests.conftest import OrgFactory, OrgHandle
from tests.pps.governance.repair.conftest import World

pytestmark = pytest.mark.db


def logged_in(app: FastAPI, org: OrgHandle) -> TestClient:
    client = TestClient(app)
    assert log_in(client, org.token).status_code == 303
    return client


def test_my_records_apply_and_the_authority_decides_in_chinese(
    world: World, app: FastAPI, runtime: Runtime, make_org: OrgFactory
) -> None:
    r1, r4 = world.records["R1"], world.records["R4"]
    a = logged_in(app, world.a)
    page = a.get("/ui/subject/records?lang=zh")
    assert page.status_code == 200
    html = page.text
    assert "我的信用记录" in html and "不收取任何费用" in html
    assert r1.record_id in html and r4.record_id in html
    assert "申请信用修复" in html and "信用承诺书" in html
    assert f"apply from {add_months(r4.decided, 3).isoformat()}" in html  # R4 waits its minimum period
    # apply without signing: refused; signed: filed
    form = {"csrf": csrf_of(html), "record_id": r1.record_id, "commitment": ""}
    assert a.post("/ui/subject/repairs", data=form, follow_redirects=False).status_code >= 400
    commitment = next(
        line.split('value="', 1)[1].split('"', 1)[0]
        for line in html.splitlines()
        if 'name="commitment"' in line
    )
    done = a.post(
        "/ui/subject/repairs",
        data={**form, "commitment": commitment, "sign": "yes"},
        follow_redirects=False,
    )
    assert done.status_code == 303, done.text
    after = a.get("/ui/subject/records?lang=zh").text
    assert "待审核" in after and "tax_arrears_cleared" in after and "办理时限" in after

    # the authority's queue shows the checks and decides
    centre = logged_in(app, world.providers["penalties"])
    queue = centre.get("/ui/repairs?lang=zh")
    assert queue.status_code == 200 and "信用修复待办" in queue.text and r1.record_id in queue.text
    app_id = queue.text.split('data-application="', 1)[1].split('"', 1)[0]
    decided = centre.post(
        f"/ui/repairs/{app_id}/approve", data={"csrf": csrf_of(queue.text)}, follow_redirects=False
    )
    assert decided.status_code == 303
    assert "准予修复" in a.get("/ui/subject/records?lang=zh").text
    # a bank has no such page; the operator's overdue list is empty (nothing late)
    assert logged_in(app, world.bank).get("/ui/repairs").status_code == 403
    admin = make_org_admin(make_org)
    overdue = logged_in(app, admin).get("/ui/repairs?lang=zh")
    assert overdue.status_code == 200 and "超期的异议与修复申请" in overdue.text
    assert 'data-application="' not in overdue.text


def make_org_admin(make_org: OrgFactory) -> OrgHandle:
    from pps.infra.storage.tables import Role

    return make_org(Role.platform_admin, "Operator")
