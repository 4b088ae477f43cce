"""Reads of protected data are ledger entries, visible in the subject's access history (issue 21, item 5):
result downloads, objection reads, receipt fetches, and overseers' reads of consents, lineage and the ledger."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from pps.infra.storage.tables import Role
from pps.ledger.entry import ObjectRef
from pps.ledger.store import EntryFilter
from pps.runtime import Runtime
from pps_client import Client
from protocols.he_scoring import BankScoringKey
from tests.conftest import OrgFactory
from tests.pps.governance.objections.conftest import Flow
from tests.pps.governance.objections.test_flow import score
from tests.pps.governance.objections.test_oversight import file

pytestmark = [pytest.mark.db, pytest.mark.slow]


def entries(rt: Runtime, action: str, **kw: Any) -> list[dict[str, Any]]:
    import json

    with rt.db.transaction(write=False) as s:
        return [
            json.loads(e.entry) for e in rt.ledger.entries(s, EntryFilter(action=action, **kw), limit=1000)
        ]


def mine(client: httpx.Client) -> list[dict[str, Any]]:
    got, after = [], None
    while True:
        page = client.get("/v1/audit/mine", params={"after": after} if after is not None else {}).json()
        got += [i["entry"] for i in page["items"]]
        if page["next_after"] is None:
            return got
        after = page["next_after"]


def test_each_read_of_protected_data_is_an_entry_the_subject_sees(
    flow: Flow,
    runtime: Runtime,
    base_url: str,
    http: Callable[..., httpx.Client],
    make_org: OrgFactory,
    scoring_key: BankScoringKey,
) -> None:
    uscc = flow.subject.uscc
    assert uscc is not None
    subject, provider, bank = (
        http(flow.subject.token),
        http(flow.providers["registry"].token),
        http(flow.bank.token),
    )
    auditor = http(make_org(Role.auditor, "Regulator").token)

    # a bank downloads its job result: the entry names the job and the subjects the result is about
    job_id, _, _ = score(Client(base_url, flow.bank.token), scoring_key, [uscc, flow.consented[1]])
    (read,) = entries(runtime, "read.job_result")
    assert read["actor"]["org"] == flow.bank.id and {"kind": "job", "id": job_id} in read["objects"]
    assert read["subjects"] == sorted([uscc, flow.consented[1]])
    assert bank.get(f"/v1/jobs/{job_id}/result").status_code == 200
    assert len(entries(runtime, "read.job_result")) == 2  # every download

    # a provider reads an objection (with the enterprise's reason): recorded; the subject reading its own is not
    objection = file(runtime, flow, ["registered_capital"], reason="the capital was raised in 2024")
    assert subject.get(f"/v1/objections/{objection}").status_code == 200
    assert entries(runtime, "read.objection") == []
    answer = provider.get(f"/v1/objections/{objection}")
    assert answer.status_code == 200 and answer.json()["reason"] == "the capital was raised in 2024"
    (read,) = entries(runtime, "read.objection")
    assert read["actor"]["org"] == flow.providers["registry"].id and read["subjects"] == [uscc]

    # receipts and a consent read by others
    consent_id = bank.get("/v1/consents").json()["items"][0]["id"]
    whose = bank.get(f"/v1/consents/{consent_id}").json()["subject_uscc"]
    assert bank.get(f"/v1/consents/{consent_id}/receipt").status_code == 200
    assert [e["subjects"] for e in entries(runtime, "read.consent_receipt")] == [[whose]]
    assert [e["subjects"] for e in entries(runtime, "read.consent")] == [[whose]]

    # overseers paging: noted, then written as one batch entry per reader and kind of read
    size = _size(runtime)
    assert auditor.get("/v1/consents", params={"limit": 5}).status_code == 200
    assert auditor.get("/v1/consents", params={"limit": 5}).status_code == 200
    assert auditor.get("/v1/objections").status_code == 200
    assert auditor.get(f"/v1/datasets/{flow.datasets['registry']}/lineage").status_code == 200
    assert auditor.get("/v1/audit/entries", params={"limit": 3}).status_code == 200
    assert _size(runtime) == size  # nothing written per request
    assert runtime.reads.flush() == 5
    batches = {e["detail"]["what"]: e for e in entries(runtime, "read.batch")}
    assert set(batches) == {"consents.list", "objections.list", "dataset.lineage", "ledger.entries"}
    assert batches["consents.list"]["detail"]["reads"] == 2 and len(batches["consents.list"]["subjects"]) >= 1
    assert batches["objections.list"]["subjects"] == [uscc]
    assert {"kind": "dataset", "id": flow.datasets["registry"]} in batches["dataset.lineage"]["objects"]
    assert runtime.reads.flush() == 0

    # the subject's own access history shows who read what of it
    seen = {(e["action"], e["actor"]["org"]) for e in mine(subject)}
    assert ("read.job_result", flow.bank.id) in seen
    assert ("read.objection", flow.providers["registry"].id) in seen
    assert any(a == "read.batch" for a, _ in seen)


def test_a_read_refused_leaves_no_entry(
    flow: Flow, runtime: Runtime, http: Callable[..., httpx.Client]
) -> None:
    objection = file(runtime, flow, ["registered_capital"])
    size = _size(runtime)
    assert http(flow.providers["tax"].token).get(f"/v1/objections/{objection}").status_code == 404
    assert http(flow.other_bank.token).get("/v1/consents/cns_nope/receipt").status_code == 404
    assert _size(runtime) == size and runtime.reads.pending == 0


def _size(rt: Runtime) -> int:
    with rt.db.transaction(write=False) as s:
        return rt.ledger.size(s)


def test_noted_reads_are_not_lost_when_a_flush_fails(runtime: Runtime, make_org: OrgFactory) -> None:
    auditor = make_org(Role.auditor, "Regulator")
    from pps.ledger.entry import Actor

    actor = Actor(auditor.id, "auditor", "api", auditor.token_id)
    runtime.reads.note(
        actor=actor, what="consents.list", objects=[ObjectRef("consent", "cns_1")], subjects=[]
    )
    real = runtime.reads.ledger
    runtime.reads.ledger = None  # type: ignore[assignment]  # the write fails
    with pytest.raises(AttributeError):
        runtime.reads.flush()
    runtime.reads.ledger = real
    assert runtime.reads.pending == 1 and runtime.reads.flush() == 1
    (batch,) = entries(runtime, "read.batch")
    assert batch["detail"]["reads"] == 1 and batch["actor"]["org"] == auditor.id
