"""The whole objection flow on uploaded data, over the API: file, flag, accept, correct, notify, prove."""

from __future__ import annotations

import base64

import pytest

from pps.runtime import Runtime
from pps_client import Client, Conflict, ScoringResult, note_verifier, verify_entry
from pps_wire.schemas import JobPublic
from protocols.he_scoring import BankScoringKey
from tests.pps.governance.objections.conftest import PURPOSE, Flow
from tests.pps.governance.objections.files import pdf

pytestmark = [pytest.mark.db, pytest.mark.slow]

MODEL = {"log_sales_mean_last6": 0.4, "company_age_years": 0.1}


def score(bank: Client, key: BankScoringKey, subjects: list[str]) -> tuple[str, ScoringResult, JobPublic]:
    model = key.encrypt_model(MODEL, -1.0)
    job = bank.scoring.submit(key, model, purpose=PURPOSE, subjects=subjects)
    done = bank.jobs.wait(job.id)
    return job.id, bank.scoring.result(job.id, key, model), done


def tax_record(client: Client, tax_id: str) -> tuple[str, float]:
    own = next(d for d in client.datasets.my_records() if d.dataset_id == tax_id)
    row = next(r for r in own.rows if r["taxable_sales"] is not None)
    return row["month"], float(row["taxable_sales"])


def test_file_flag_accept_correct_and_notify(
    flow: Flow, runtime: Runtime, base_url: str, scoring_key: BankScoringKey
) -> None:
    subject = Client(base_url, flow.subject.token)
    provider = Client(base_url, flow.providers["tax"].token)
    bank = Client(base_url, flow.bank.token)
    tax = flow.datasets["tax"]
    month, value = tax_record(subject, tax)
    batch = flow.consented[:6]

    before_id, before, _ = score(bank, scoring_key, batch)
    assert before.subjects == batch and before.disputed == []

    evidence = pdf()
    filed = subject.objections.file(
        tax,
        ["taxable_sales"],
        "our March sales were booked twice",
        record_key=month,
        evidence=evidence,
        evidence_type="application/pdf",
    )
    assert filed.state == "open" and filed.filed_version == 1 and not filed.overdue
    assert filed.due_at.date() > filed.created_at.date()
    assert filed.evidence is not None and filed.evidence.media_type == "application/pdf"

    # while open, results that read the field say so — subject, dataset, field; never the value
    during_id, during, job = score(bank, scoring_key, batch)
    assert [d.model_dump() for d in during.disputed] == [
        {"subject": flow.subject.uscc, "dataset": tax, "fields": ["taxable_sales"]}
    ]
    assert job.summary is not None and job.summary["disputed"] == 1
    assert str(value) not in str(during.header)

    # the provider sees it on its own dataset, with the evidence; another provider does not
    seen = provider.objections.list()
    assert [o.id for o in seen] == [filed.id] and seen[0].record_key == month
    assert Client(base_url, flow.providers["court"].token).objections.list() == []
    assert provider.objections.evidence(filed.id) == evidence
    response = provider._request("GET", f"/v1/objections/{filed.id}/evidence")
    assert response.content == evidence
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-disposition"].startswith("attachment")

    corrected = round(value + 1234.5, 2)
    done = provider.objections.accept(filed.id, {"taxable_sales": corrected}, note="double booking fixed")
    assert done.state == "accepted" and done.corrected_version == 2
    assert done.corrected_fields == ["taxable_sales"] and done.resolution_note == "double booking fixed"

    # a new version holds the corrected value; the old one stays
    assert [v.version for v in provider.datasets.get(tax).versions] == [1, 2]
    own = next(d for d in subject.datasets.my_records() if d.dataset_id == tax)
    assert own.version == 2
    assert next(r for r in own.rows if r["month"] == month)["taxable_sales"] == corrected
    with runtime.db.transaction(write=False) as s:
        from pps.infra.storage.tables import DatasetVersion

        old = s.get(DatasetVersion, (tax, 1))
        assert old is not None
        where = runtime.datasets.locate(s, old, flow.subject.uscc, month)
        assert where is not None
        assert runtime.datasets.record(s, old, where)["taxable_sales"] == value

    # the bank is told which results used the corrected field — both jobs released before the correction
    notices = bank.objections.corrections()
    assert sorted(n.result.id for n in notices) == sorted([before_id, during_id])
    for n in notices:
        assert n.subject_uscc == flow.subject.uscc and n.dataset_id == tax
        assert n.fields == ["taxable_sales"] and n.objection_id == filed.id
        assert (n.old_version, n.new_version, n.operation) == (1, 2, "score")
    text = str([n.model_dump() for n in notices])
    assert str(value) not in text and str(corrected) not in text
    assert Client(base_url, flow.other_bank.token).objections.corrections() == []

    _after_id, after, _ = score(bank, scoring_key, batch)
    assert (
        after.disputed == [] and len(bank.objections.corrections()) == 2
    )  # nothing open, nothing new to tell

    # the subject sees every step in its own history, each proven against the signed checkpoint
    key = note_verifier(Client(base_url).ledger.public_key().verifier_key)
    actions = []
    after_index = None
    while True:
        page = subject.ledger.mine(after=after_index, limit=200)
        for item in page.items:
            doc = verify_entry(item.model_copy(update={"checkpoint": page.checkpoint}), key).entry
            actions.append(doc.action)
            if doc.action == "correction.notice":
                assert doc.detail["banks"] == [flow.bank.id] and doc.detail["notices"] == 2
        after_index = page.next_after
        if after_index is None:
            break
    for action in (
        "objection.file",
        "objection.evidence",
        "dataset.correct",
        "objection.accept",
        "correction.notice",
    ):
        assert action in actions, actions


def test_reject_with_a_reason_and_resolve_once(flow: Flow, base_url: str, runtime: Runtime) -> None:
    from tests.pps.governance.objections.conftest import snapshot

    subject = Client(base_url, flow.subject.token)
    provider = Client(base_url, flow.providers["registry"].token)
    filed = subject.objections.file(flow.datasets["registry"], ["registered_capital"], "capital was raised")
    rejected = provider.objections.reject(filed.id, "the registry shows the filing of 2019; send the new one")
    assert rejected.state == "rejected" and (rejected.resolution_note or "").startswith("the registry")
    assert subject.objections.get(filed.id).resolution_note == rejected.resolution_note
    before = snapshot(runtime)
    with pytest.raises(Conflict):
        provider.objections.reject(filed.id, "again")
    with pytest.raises(Conflict):
        provider.objections.accept(filed.id, {"registered_capital": 1.0})
    assert snapshot(runtime) == before
    # a rejected objection no longer flags anything: a new one on the same field may be filed
    again = subject.objections.file(flow.datasets["registry"], ["registered_capital"], "new filing attached")
    assert again.state == "open"


def test_evidence_is_served_only_to_its_two_parties(flow: Flow, base_url: str) -> None:
    from tests.pps.governance.objections.files import png

    subject = Client(base_url, flow.subject.token)
    filed = subject.objections.file(
        flow.datasets["registry"], ["industry"], "we changed trade", evidence=png(), evidence_type="image/png"
    )
    assert subject.objections.evidence(filed.id) == png()
    assert Client(base_url, flow.providers["registry"].token).objections.evidence(filed.id) == png()
    body = base64.b64encode(png()).decode()
    assert body not in subject.objections.get(filed.id).model_dump_json()  # metadata only in the objection
