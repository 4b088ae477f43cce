"""The enclave as a service: quotes on the record, a bank's attested GBDT job under consent and output policy,
a crash mid-job, over the real HTTP API with the client SDK."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from models.synth import PlatformData, generate
from pps.governance.consent import Terms
from pps.infra.storage.tables import Job, JobBlob, JobState, LedgerEntry, Organization, Role, utcnow
from pps.ledger.entry import Actor
from pps.runtime import Runtime
from pps_client import AttestationError, Client, InvalidRequest, JobFailed
from tests.conftest import OrgFactory
from tests.helpers import signed
from tests.pps.services.scoring.conftest import upload_platform

pytestmark = [pytest.mark.db, pytest.mark.slow]

PURPOSE = "joint_model_training"
FEATURES = ["company_age_years", "log_registered_capital", "tax_filing_ratio", "log_sales_mean_last6"]
SUBJECT = Actor(None, "subject", "api")


@pytest.fixture(scope="module")
def data() -> PlatformData:
    return generate(400, 2026)


@pytest.fixture
def world(runtime: Runtime, make_org: OrgFactory, data: PlatformData, tmp_path: Path) -> dict[str, Any]:
    platform = upload_platform(runtime, make_org, data, tmp_path / "csv")
    bank = make_org(Role.bank, "Bank A")
    usccs = data.registry.columns["uscc"].tolist()
    scope = [
        {"dataset_id": platform.datasets["registry"], "fields": ["registered_on", "registered_capital"]},
        {"dataset_id": platform.datasets["tax"], "fields": ["month", "taxable_sales"]},
    ]
    consented, score_only = usccs[:300], usccs[300:320]
    with runtime.db.transaction() as s:
        org = s.get(Organization, bank.id)
        assert org is not None
        for uscc, ops in [(u, ["enclave"]) for u in consented] + [(u, ["score"]) for u in score_only]:
            terms = Terms(
                purpose=PURPOSE, scope=scope, operations=ops, valid_until=utcnow() + timedelta(days=30)
            )
            c = runtime.consents.request(s, bank=org, subject_uscc=uscc, terms=terms, actor=SUBJECT)
            runtime.consents.approve(s, c, signed=signed(runtime, s, c), actor=SUBJECT)
    labels = dict(
        zip(data.labels.columns["uscc"].tolist(), data.labels.columns["defaulted"].tolist(), strict=True)
    )
    keys = usccs[:340]  # the bank's customers: consented, consented to scoring only, and 20 with no consent
    return {
        "bank": bank,
        "keys": keys,
        "labels": [int(labels[k]) for k in keys],
        "bank_features": {"loan_amount": [float(i % 7) for i in range(len(keys))]},
        "consented": consented,
    }


def _entries(rt: Runtime, action: str) -> list[dict[str, Any]]:
    import json

    with rt.db.transaction(write=False) as s:
        rows = s.execute(select(LedgerEntry).order_by(LedgerEntry.idx)).scalars()
        docs = [json.loads(r.entry) for r in rows]
    return [d for d in docs if d["action"] == action]


def test_a_bank_trains_in_the_enclave_and_gets_only_what_it_asked_for(
    runtime: Runtime, base_url: str, world: dict[str, Any]
) -> None:
    vendor = runtime.enclave.vendor_public_key
    with Client(base_url, world["bank"].token, timeout=60) as bank:
        got = bank.enclave.gbdt(
            purpose=PURPOSE,
            keys=world["keys"],
            labels=world["labels"],
            bank_features=world["bank_features"],
            features=FEATURES,
            vendor_key=vendor,
            release=("metrics", "scores", "model"),
            params={"max_iter": 30},
        )
        outputs, job = got.outputs, got.job
        assert set(outputs) == {"metrics", "scores", "model"}
        assert outputs["metrics"]["joined"] == 300  # only subjects whose consent covers operation "enclave"
        assert set(outputs["scores"]) == set(world["consented"])
        assert outputs["model"]["features"] == ["bank.loan_amount"] + [f"platform.{f}" for f in FEATURES]
        assert job.summary is not None and job.summary["subjects_provided"] == 300
        assert job.summary["not_used"] == {"operation_not_covered": 20}  # the others never consented

        # metrics only: the release holds no per-subject value and nothing encrypted
        only = bank.enclave.gbdt(
            purpose=PURPOSE,
            keys=world["keys"],
            labels=world["labels"],
            bank_features=world["bank_features"],
            features=FEATURES,
            vendor_key=vendor,
            params={"max_iter": 10},
        )
        assert set(only.outputs) == {"metrics"}
        raw = bank.jobs.result(only.job.id)
        assert b'"encrypted":null' in raw and world["consented"][0].encode() not in raw

        # a quote verified against another build is refused before anything is encrypted
        with pytest.raises(AttestationError) as refused:
            bank.enclave.gbdt(
                purpose=PURPOSE,
                keys=world["keys"],
                labels=world["labels"],
                bank_features={},
                features=FEATURES,
                vendor_key=vendor,
                measurements=[os.urandom(32)],
            )
        assert refused.value.reason == "measurement"
    # every quote, provisioning, release and the enclave's start are on the record
    assert len(_entries(runtime, "enclave.quote")) == 3
    assert len(_entries(runtime, "enclave.provision")) == 2
    releases = _entries(runtime, "enclave.release")
    assert [r["released"][0]["what"] for r in releases] == [
        "enclave.gbdt:metrics,model,scores",
        "enclave.gbdt:metrics",
    ]
    assert len(_entries(runtime, "enclave.start")) == 1
    spent = _entries(runtime, "policy.release")
    assert spent and all(e["detail"]["operation"] == "enclave" for e in spent)


def test_bad_provisioning_is_refused_and_stores_nothing(
    runtime: Runtime, base_url: str, world: dict[str, Any]
) -> None:
    import base64

    with Client(base_url, world["bank"].token) as bank:
        quote = bank.enclave.quote()
        body = {
            "purpose": PURPOSE,
            "subjects": "all_consented",
            "features": FEATURES,
            "quote_hash": os.urandom(32).hex(),
            "rows": {
                "enc": base64.b64encode(os.urandom(32)).decode(),
                "ciphertext": base64.b64encode(b"x" * 40).decode(),
            },
            "output": {"release": ["metrics"]},
        }
        with pytest.raises(InvalidRequest) as refused:
            bank.request("POST", "/v1/enclave/jobs", json=body)  # as sent, unchecked here
        assert refused.value.code == "provisioning_failed"
        with pytest.raises(ValueError, match="32 bytes"):
            bank.enclave.quote(b"\x00")  # refused here, before anything is sent
        with pytest.raises(InvalidRequest) as refused:
            bank.request("GET", "/v1/enclave/quote", params={"nonce": "00"})
        assert refused.value.code == "invalid_request"
        assert quote.info.measurement == runtime.enclave.host().hello["measurement"]
    with runtime.db.transaction(write=False) as s:
        assert s.execute(select(Job)).first() is None


def test_killing_the_enclave_mid_job_fails_the_job_and_the_next_one_works(
    runtime: Runtime, base_url: str, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from enclave_sim.host import EnclaveHost

    real_run = EnclaveHost.run

    def crash_then_run(self: EnclaveHost, *args: Any, **kwargs: Any) -> Any:
        self.kill()  # the enclave dies while the job runs: the run is sent to a dead process
        return real_run(self, *args, **kwargs)

    kw: dict[str, Any] = {
        "purpose": PURPOSE,
        "keys": world["keys"],
        "labels": world["labels"],
        "bank_features": world["bank_features"],
        "features": FEATURES,
        "vendor_key": runtime.enclave.vendor_public_key,
        "release": ("metrics", "model"),
        "params": {"max_iter": 10},
    }
    with Client(base_url, world["bank"].token) as bank:
        monkeypatch.setattr(EnclaveHost, "run", crash_then_run)
        with pytest.raises(JobFailed) as err:
            bank.enclave.gbdt(**kw)
        assert err.value.code == "enclave_unavailable"
        monkeypatch.setattr(EnclaveHost, "run", real_run)
        with runtime.db.transaction(write=False) as s:
            (failed,) = s.execute(select(Job)).scalars()
            assert failed.state is JobState.failed
            assert s.get(JobBlob, (failed.id, "result")) is None
        assert _entries(runtime, "enclave.release") == []
        got = bank.enclave.gbdt(**kw)  # a fresh enclave, a fresh quote
        assert got.outputs["metrics"]["joined"] == 300
    assert len(_entries(runtime, "enclave.start")) == 2
