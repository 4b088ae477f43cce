"""The report and queries over HTTP, through the SDK: a bank side by side on a consenting and a non-consenting
enterprise, the printable view, the enterprise's own report, a portfolio query, who may call what."""

from __future__ import annotations

import json

import pytest

from pps_client import Client, NotFound, PermissionDenied
from tests.pps.services.reports.conftest import PURPOSE, World


def test_side_by_side_over_http(world: World, base_url: str) -> None:
    bank = Client(base_url, world.bank.token)
    yes = bank.reports.report(world.yes.uscc or "", PURPOSE)
    no = bank.reports.report(world.no.uscc or "", PURPOSE)
    assert "consented" in yes.document["sections"] and "consented" not in no.document["sections"]
    assert yes.document["sections"]["registration"] and no.document["sections"]["registration"]
    assert bank.reports.verify(yes.note) == yes.document
    assert bank.reports.get(no.id).document == no.document
    page = bank.reports.html(yes.id)
    assert "标准化信用信息报告" in page and "<svg" in page and "masked" in page and "never_disclosed" in page
    # the enterprise sees the bank's query in its access history, and reads its own report free
    ent = Client(base_url, world.yes.token)
    history = ent._json("GET", "/v1/audit/mine")
    assert "disclosure.report" in json.dumps(history)
    own = ent.reports.own()
    assert own.document["requested_by"] == "subject" and own.ledger_index is None
    assert ent.reports.get(yes.id).id == yes.id  # the report about it
    with pytest.raises(NotFound):
        Client(base_url, world.no.token).reports.get(yes.id)  # not about it
    with pytest.raises(PermissionDenied):
        ent.reports.report(world.no.uscc or "", PURPOSE)  # only a bank asks for another's report


def test_portfolio_query_with_per_subject_reasons(world: World, base_url: str) -> None:
    bank = Client(base_url, world.bank.token)
    tax = world.datasets["tax"]
    out = bank.reports.query(
        [world.yes.uscc or "", world.no.uscc or ""], {tax: ["taxable_sales"]}, PURPOSE, months=6
    )
    assert out.allowed == 1
    yes, no = out.results
    rows = yes.document["results"][tax]["rows"]
    assert 1 <= len(rows) <= 6 and all(r["taxable_sales"]["mode"] == "masked" for r in rows)
    assert [w["reason"] for w in no.document["withheld"]] == ["no_grant"]
