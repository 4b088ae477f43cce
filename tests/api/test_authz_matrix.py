"""Every route declares who may call it; a role × route matrix and a cross-tenant matrix prove the checks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from api.app import ROUTERS
from api.deps import declared_roles
from models.synth import generate
from pps.infra.jobs import JobContext, JobOutcome
from pps.infra.storage.tables import Role, new_id
from pps.ledger.entry import OPERATOR, Actor
from pps.runtime import Runtime
from tests.conftest import OrgFactory, OrgHandle
from tests.helpers import first_token, signed, signed_body, signed_decision, subject_key

ROUTES = [r for router in ROUTERS for r in router.routes if isinstance(r, APIRoute)]
ROUTE_IDS = [f"{sorted(r.methods)[0]} {r.path}" for r in ROUTES]
SMALL_SCHEMA = {
    "subject_key": "uscc",
    "columns": [
        {"name": "uscc", "type": "uscc", "sensitivity": "C1"},
        {"name": "amount", "type": "float", "sensitivity": "C2"},
    ],
}
REGISTRY_SCHEMA = {
    "subject_key": "uscc",
    "columns": [
        {"name": "uscc", "type": "uscc", "sensitivity": "C1"},
        {"name": "industry", "type": "string", "sensitivity": "C1"},
    ],
}
SMALL_CSV = b"uscc,amount\n91350100M000100Y43,1.5\n"
BODIES: dict[str, dict[str, Any]] = {
    "POST /v1/orgs": {"name": "__unique__", "role": "bank"},
    "POST /v1/datasets": {"name": "__unique__", "schema": SMALL_SCHEMA},
    "POST /v1/orgs/{org_id}/tokens": {"label": "matrix"},
    "POST /v1/orgs/{org_id}/disable": {"reason": "matrix"},
    "PATCH /v1/datasets/{dataset_id}/aggregates": {"platform_aggregates": True},
}


def test_every_route_declares_exactly_one_guard() -> None:
    assert ROUTES, "no routes found"
    for route in ROUTES:
        assert declared_roles(route) is not None, f"{route.path} declares no guard"


def test_the_openapi_schema_lists_the_roles_of_every_operation(app: FastAPI) -> None:
    schema = app.openapi()
    ops = [op for path in schema["paths"].values() for op in path.values()]
    assert len(ops) == len(ROUTES)
    assert all(op.get("x-pps-roles") for op in ops)


class Party:
    """An organisation with a main token, a spare token (to revoke) and an entry it made."""

    def __init__(self, org: OrgHandle, http: Callable[..., httpx.Client], disposable: OrgHandle) -> None:
        self.org = org
        self.disposable = disposable  # what this party may offboard (nobody offboards themselves)
        self.client = http(org.token)
        spare = self.client.post(f"/v1/orgs/{org.id}/tokens", json={"label": "spare"})
        assert spare.status_code == 201, spare.text
        self.spare_token_id = spare.json()["id"]
        # that issue was made by this organisation, so the entry is its own
        self.own_entry = self.client.get("/v1/audit/mine").json()["items"][-1]["index"]
        self.dataset_id = self.disposable_dataset_id = "ds_missing"
        if org.role is Role.data_provider:
            ids = []
            for name in ("own", "to delete"):
                made = self.client.post("/v1/datasets", json={"name": name, "schema": SMALL_SCHEMA})
                assert made.status_code == 201, made.text
                ids.append(made.json()["id"])
            self.dataset_id, self.disposable_dataset_id = ids

    consents: dict[str, str]
    spare_key_id: str = "sk_missing"
    break_glass_id: str = "brk_missing"
    objections: dict[str, str]
    repairs: dict[str, str]
    person: Party
    """(the subject party) a household on the platform: the /v1/persons/me routes are a person's"""
    erasable: Party
    """(the person party) another household, which erases its data (the erasure closes its account)"""
    bodies: dict[str, Any]
    jobs: dict[str, str]
    federations: dict[str, str]
    models: dict[str, str]
    trainings: dict[str, str]
    report_id: str = "rpt_missing"
    """(bank and subject) a credit report the bank asked about the subject (issue 23)"""

    def fill(self, path: str, method: str = "GET") -> str:
        if method == "DELETE" and "{dataset_id}" in path:
            return path.replace("{dataset_id}", self.disposable_dataset_id)
        if "{consent_id}" in path:
            action = "/" + path.rsplit("/", 1)[1] if path.endswith(("/revoke", "/approve", "/deny")) else ""
            path = path.replace("{consent_id}", self.consents[action])
        if "{objection_id}" in path:
            ends = ("/accept", "/reject", "/unverifiable")
            action = "/" + path.rsplit("/", 1)[1] if path.endswith(ends) else ""
            path = path.replace("{objection_id}", self.objections[action])
        if "{app_id}" in path:
            action = "/" + path.rsplit("/", 1)[1] if path.endswith(("/approve", "/deny", "/object")) else ""
            path = path.replace("{app_id}", self.repairs.get(action, "rep_missing")).replace(
                "{position}", "0"
            )
        if "{statement_id}" in path:
            path = path.replace("{statement_id}", self.repairs.get("statement", "stm_missing"))
        if "{federation_id}" in path:
            action = (
                "/" + path.rsplit("/", 1)[1]
                if path.endswith(("/accept", "/messages", "/advance", "/enclave-input"))
                else ""
            )
            path = path.replace("{federation_id}", self.federations[action])
        if "{model_id}" in path:
            path = path.replace("{model_id}", self.models.get("", "mdl_missing"))
        if "{training_id}" in path:
            action = "/" + path.rsplit("/", 1)[1] if path.endswith(("/exchange", "/finish")) else ""
            action = "/cancel" if method == "DELETE" else action
            path = path.replace("{training_id}", self.trainings.get(action, "vlr_missing"))
        if "{job_id}" in path:
            path = path.replace("{job_id}", self.jobs["/cancel" if path.endswith("/cancel") else ""])
        if "{doc_id}" in path:
            path = path.replace("{doc_id}", self.report_id)
        if "{key_id}" in path:
            path = path.replace("{key_id}", self.spare_key_id)
        if "{bg_id}" in path:
            path = path.replace("{bg_id}", self.break_glass_id)
        if path.endswith("/disable"):
            return path.replace("{org_id}", self.disposable.id)
        return (
            path.replace("{org_id}", self.org.id)
            .replace("{token_id}", self.spare_token_id)
            .replace("{index}", str(self.own_entry))
            .replace("{dataset_id}", self.dataset_id)
        )


def _matrix_job(ctx: JobContext) -> JobOutcome:
    return JobOutcome(result=b"done", media_type="text/plain", finalize=lambda _s: {"ok": 1})


def _job(runtime: Runtime, org: OrgHandle, *, run: bool) -> str:
    with runtime.db.transaction() as s:
        job_id = runtime.jobs.submit(
            s, kind="matrix", actor=Actor(org.id, org.role.value), purpose=None, params={}
        ).id
    if run:
        runtime.jobs.run(job_id)
    return job_id


@pytest.fixture
def parties(
    make_org: OrgFactory, http: Callable[..., httpx.Client], runtime: Runtime, tmp_path: Path
) -> dict[Role, Party]:
    made = {role: Party(make_org(role), http, make_org(Role.bank)) for role in Role}
    subject, bank = made[Role.subject], made[Role.bank]
    runtime.jobs.register("matrix", _matrix_job)
    for party in made.values():
        party.jobs = {"": _job(runtime, party.org, run=True), "/cancel": _job(runtime, party.org, run=False)}
    terms = consent_terms(made)
    active = [
        subject.client.post(
            "/v1/consents",
            json=signed_body(subject.org.key, str(subject.org.uscc), {**terms, "bank_org_id": bank.org.id}),
        )
        for _ in range(2)
    ]
    asked = [
        bank.client.post("/v1/consent-requests", json={**terms, "subject_uscc": subject.org.uscc})
        for _ in range(2)
    ]
    for r in active + asked:
        assert r.status_code == 201, r.text
    consents = {
        "": active[0].json()["id"],
        "/revoke": active[1].json()["id"],
        "/approve": asked[0].json()["id"],
        "/deny": asked[1].json()["id"],
    }
    # a small synthetic registry (every column the feature store reads), for the jobs and models below
    synthetic = generate(12, 7).registry
    synthetic.columns["uscc"][0] = (
        subject.org.uscc
    )  # the subject is registered: its decisions can be explained
    registry = made[Role.data_provider].client.post(
        "/v1/datasets", json={"name": "registry", "schema": synthetic.schema}
    )
    assert registry.status_code == 201, registry.text
    synthetic.write_csv(tmp_path)
    uploaded = made[Role.data_provider].client.post(
        f"/v1/datasets/{registry.json()['id']}/versions",
        content=(tmp_path / f"{synthetic.name}.csv").read_bytes(),
        params={"format": "csv"},
    )
    assert uploaded.status_code == 201, uploaded.text
    scoring = _scoring_body()
    objected, objections = _objections(made)
    repairs, repair_bodies = _repairs(made, tmp_path)
    enclave_job = _enclave_job_body(runtime)
    approval_bodies = _approval_bodies(runtime, bank.org.id, subject.org.uscc)
    sealed = _sealed_bodies(runtime, made, terms)
    federations, frame, enclave_input = _federations(runtime, made)
    models, trainings, model_bodies = _models(runtime, made, synthetic.columns["uscc"].tolist())
    person, person_bodies = _person(runtime, made, http, make_org, terms, tmp_path)
    report = bank.client.post(
        "/v1/reports", json={"subject_uscc": subject.org.uscc, "purpose": "loan_underwriting"}
    )
    assert report.status_code == 201, report.text
    bank.report_id = subject.report_id = report.json()["id"]
    spare_key, break_glass_id = _subject_key_and_break_glass(runtime, made)
    for party in made.values():
        party.spare_key_id = spare_key if party is subject else "sk_missing"  # only the subject's own
        party.break_glass_id = break_glass_id
        party.federations = federations if party is bank else dict.fromkeys(federations, "fed_missing")
        party.consents = consents
        party.objections = objections
        # the subject's applications are seen by the subject, the authority (the provider) and oversight
        party.repairs = (
            repairs if party is subject else {k: v for k, v in repairs.items() if k != "statement"}
        )
        party.models = models if party is bank else {}
        party.trainings = trainings if party is bank else {}
        party.bodies = {
            "POST /v1/consents": signed_body(
                subject.org.key, str(subject.org.uscc), {**terms, "bank_org_id": bank.org.id}
            ),
            "POST /v1/consents/{consent_id}/approve": signed_decision(subject.org.key, asked[0].json()),
            "POST /v1/consent-requests": {**terms, "subject_uscc": subject.org.uscc},
            "POST /v1/consents/{consent_id}/deny": {"reason": "not now"},
            "POST /v1/enrol": lambda: {"code": _enrolment_code(runtime)},
            "POST /v1/subject-keys": lambda: _new_key_body(subject.org),
            "POST /v1/break-glass": {
                "org_id": made[Role.bank].disposable.id,
                "action": "revoke_tokens",
                "reason": "the matrix proposes, nobody approves",
            },
            "POST /v1/psi": {"purpose": "loan_underwriting", "reveal": "size", "request": _psi_request()},
            "POST /v1/aggregates": {
                "scope": "consented",
                "purpose": "loan_underwriting",
                "statistic": "count",
                "dataset": made[Role.data_provider].dataset_id,
                "field": "amount",
                "epsilon": 0.1,
            },
            "POST /v1/scoring": scoring,
            "POST /v1/federations": {
                "name": "matrix",
                "participants": [bank.org.id, bank.disposable.id, made[Role.auditor].disposable.id],
                "kind": "horizontal_lr",
                "feature_schema": ["f1", "f2"],
                "rounds": 1,
                "threshold": 2,
            },
            "POST /v1/federations/{federation_id}/accept": {"purpose": "joint_model_training"},
            "POST /v1/federations/{federation_id}/messages": {"message": frame},
            "POST /v1/federations/{federation_id}/advance": {},
            "POST /v1/federations/{federation_id}/enclave-input": enclave_input,
            "POST /v1/objections": {"dataset_id": objected, "fields": ["f3"], "reason": "matrix"},
            "POST /v1/objections/{objection_id}/accept": {"corrected": {"f1": 2.0}},
            "POST /v1/objections/{objection_id}/reject": {"reason": "matrix"},
            "POST /v1/objections/{objection_id}/unverifiable": {"note": "matrix"},
            **repair_bodies,
            "POST /v1/enclave/jobs": enclave_job,
            **approval_bodies,
            **model_bodies,
            **sealed,
            **person_bodies,
            "POST /v1/reports": {"subject_uscc": subject.org.uscc, "purpose": "loan_underwriting"},
            "POST /v1/queries": {
                "subjects": [subject.org.uscc],
                "fields": {made[Role.data_provider].dataset_id: ["amount"]},
                "purpose": "loan_underwriting",
            },
            "POST /v1/policy/check": {
                "subjects": [subject.org.uscc],
                "fields": {made[Role.data_provider].dataset_id: ["amount"]},
                "operation": "score",
                "purpose": "loan_underwriting",
            },
        }
    person.bodies = made[Role.subject].bodies
    made[Role.subject].person = person
    return made


def _person(
    runtime: Runtime,
    made: dict[Role, Party],
    http: Callable[..., httpx.Client],
    make_org: OrgFactory,
    terms: dict[str, Any],
    tmp_path: Path,
) -> tuple[Party, dict[str, Any]]:
    """A herding household with a token, a bank's pending request to it, an impact assessment, and household
    ratings on the platform (for the rating query); the bodies of the person routes."""
    from datetime import timedelta

    from models.households import generate_households
    from pps.governance.consent import Terms
    from pps.identity.persons import PersonKind
    from pps.infra.storage.tables import Organization, utcnow
    from pps_wire.resident_id import make_resident_id

    bank, provider = made[Role.bank], made[Role.data_provider]
    assessment = {
        "purpose": "loan_underwriting",
        "activity": "matrix",
        "lawful_and_necessary": "consent",
        "impact_and_risks": "a refused loan",
        "measures": "pseudonyms",
    }
    with runtime.db.transaction() as s:
        done = runtime.persons.onboard(
            s, resident_id=make_resident_id("63282119800101123"), kind=PersonKind.household, actor=OPERATOR
        )
        enrolment = runtime.identity.issue_enrolment_code(s, org=done.org, actor=OPERATOR)
        _, issued = runtime.identity.redeem_enrolment_code(
            s, code=enrolment.secret, label="matrix", ttl=timedelta(days=1)
        )
        person_key = subject_key(runtime, s, done.person.code)
        runtime.person_rules.record_assessment(
            s,
            purpose="loan_underwriting",
            activity="matrix",
            actor=OPERATOR,
            assessment={k: v for k, v in assessment.items() if k not in ("purpose", "activity")},
        )
        bank_org = s.get(Organization, bank.org.id)
        assert bank_org is not None
        asked = runtime.consents.request(
            s,
            bank=bank_org,
            subject_uscc=done.person.code,
            terms=Terms(
                purpose="loan_underwriting",
                scope=terms["scope"],
                operations=["score"],
                valid_until=utcnow() + timedelta(days=30),
            ),
            actor=Actor(bank.org.id, "bank"),
        )
        code, asked_id = done.person.code, asked.id
        separate = {"provide_to_bank": True, "sensitive_fields": {provider.dataset_id: ["amount"]}}
        approval = signed(runtime, s, asked, separate=separate)
    handle = OrgHandle(done.org.id, done.org.name, Role.subject, code, issued.secret, issued.token.id)
    person = Party(handle, http, make_org(Role.bank))
    person.consents = {"/approve": asked_id}
    ratings = generate_households(3, 1).ratings
    made_ds = provider.client.post("/v1/datasets", json={"name": ratings.name, "schema": ratings.schema})
    assert made_ds.status_code == 201, made_ds.text
    ratings.write_csv(tmp_path)
    up = provider.client.post(
        f"/v1/datasets/{made_ds.json()['id']}/versions",
        content=(tmp_path / f"{ratings.name}.csv").read_bytes(),
        params={"format": "csv"},
    )
    assert up.status_code == 201, up.text
    bodies = {
        "POST /v1/persons": {"resident_id": make_resident_id("63010219900101234"), "kind": "household"},
        "POST /v1/persons/me/consents/preview": {**terms, "bank_org_id": bank.org.id, "separate": separate},
        "POST /v1/persons/me/consents": signed_body(
            person_key, code, {**terms, "bank_org_id": bank.org.id, "separate": separate}
        ),
        "POST /v1/persons/me/consents/{consent_id}/approve": {
            "separate": separate,
            "signature": {"text": approval.text, "key_id": approval.key_id, "signature": approval.signature},
        },
        "POST /v1/persons/notices": {"code": code, "dataset_id": provider.dataset_id, "text": "matrix"},
        "POST /v1/impact-assessments": assessment,
        "POST /v1/household-ratings/query": {"purpose": "loan_underwriting", "subjects": [code]},
        "POST /v1/persons/me/erase": {"confirm": True},
    }
    # the erasure closes the person's account: a second household asks for it, so the first stays usable
    with runtime.db.transaction() as s:
        leaving = runtime.persons.onboard(
            s, resident_id=make_resident_id("63282119800101456"), kind=PersonKind.household, actor=OPERATOR
        )
        leaving_token = first_token(runtime, s, leaving.org, label="matrix")
    person.erasable = Party(
        OrgHandle(
            leaving.org.id,
            leaving.org.name,
            Role.subject,
            leaving.person.code,
            leaving_token.secret,
            leaving_token.token.id,
        ),
        http,
        make_org(Role.bank),
    )
    return person, bodies


def _federations(runtime: Runtime, made: dict[Role, Party]) -> tuple[dict[str, str], str, dict[str, Any]]:
    """The bank's federations: one it is invited to, two running at advertise-keys (it initiated both), and
    its first secure-aggregation message for one of them; one aggregated in the enclave that another bank
    initiated, and the bank's update provisioned to the enclave under a verified quote."""
    import base64

    from pps.services.federated import FederationSpec
    from protocols.secagg import RoundInfo, SecAggClient, SecAggParams

    bank, other = made[Role.bank].org, made[Role.data_provider].disposable
    third = made[Role.subject].disposable  # a round needs at least three banks

    def start(
        initiator: OrgHandle,
        invitee: OrgHandle,
        *,
        accept: bool,
        timeout: int = 600,
        aggregation: str = "secagg",
    ) -> str:
        spec = FederationSpec(
            name="matrix",
            participants=(initiator.id, invitee.id, third.id),
            kind="horizontal_lr",
            feature_schema=("f",),
            rounds=1,
            threshold=2,
            phase_timeout_s=timeout,
            standardise=False,
            aggregation=aggregation,
        )
        with runtime.db.transaction() as s:
            fed_id = runtime.federated.create(s, spec, actor=Actor(initiator.id, "bank")).id
            runtime.federated.accept(s, fed_id, purpose="joint_model_training", actor=Actor(third.id, "bank"))
            if accept:
                runtime.federated.accept(
                    s, fed_id, purpose="joint_model_training", actor=Actor(invitee.id, "bank")
                )
        return fed_id

    feds = {
        "/accept": start(other, bank, accept=False),
        "/messages": start(bank, other, accept=True),
        # its phase deadline passes while the matrix runs: then any participant may close the phase
        "/advance": start(bank, other, accept=True, timeout=1),
    }
    feds["/enclave-input"] = start(other, bank, accept=True, aggregation="enclave")
    feds[""] = feds["/messages"]
    with runtime.db.transaction(write=False) as s:
        position = runtime.federated.view(s, feds["/messages"], bank.id)["my_position"]
    info = RoundInfo(feds["/messages"], 1, SecAggParams(n=3, threshold=2, dim=2, clip_norm=5.0))
    frame = base64.b64encode(SecAggClient(info, position).advertise_keys()).decode()
    return feds, frame, _enclave_input(runtime, feds["/enclave-input"], bank.id)


def _enclave_input(runtime: Runtime, fed_id: str, bank_id: str) -> dict[str, Any]:
    import base64
    import json
    import os

    from enclave_sim.platform import expected_measurement
    from pps_wire import provision as crypto
    from pps_wire.quote import Quote, standard_policy

    with runtime.db.transaction(write=False) as s:
        view = runtime.federated.view(s, fed_id, bank_id)
    terms = view["enclave_terms"]
    body = {"terms": terms, "update": [0.0] * terms["dim"], "weight": 10, "tail": [0] * terms["tail"]}
    nonce = os.urandom(32)
    quote = runtime.enclave.quote(nonce)
    sealed = crypto.encrypt_for_enclave(
        quote,
        standard_policy(measurements=[expected_measurement()], nonce=nonce),
        vendor_key=runtime.enclave.vendor_public_key,
        job="fedavg_aggregate",
        slot=f"bank{view['my_position']}",
        body=json.dumps(body).encode(),
    )
    return {
        "update": {
            "quote_hash": Quote.parse(quote).quote_hash.hex(),
            "ciphertext": base64.b64encode(sealed).decode(),
        }
    }


def _models(
    runtime: Runtime, made: dict[Role, Party], usccs: list[str]
) -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
    """The bank's model (its own part and the platform's), and its vertical trainings: one trained to its end
    (to finish), one set up (its next frame ready); the bodies of the model and training routes."""
    import base64
    from datetime import timedelta

    import numpy as np

    from models.metrics import evaluate
    from pps.data.sources import bind_sources
    from pps.governance.consent import Terms
    from pps.infra.storage.tables import Organization, utcnow
    from pps_client import Client
    from pps_wire.frames import pack_frames
    from protocols import paillier_fast as pf
    from protocols import vertical_lr as vl

    bank = made[Role.bank]
    purpose = "joint_model_training"
    with runtime.db.transaction(write=False) as s:
        registry_id = bind_sources(s).bound["registry"].dataset_id
    with runtime.db.transaction() as s:
        org = s.get(Organization, bank.org.id)
        assert org is not None
        for u in usccs:
            terms = Terms(
                purpose=purpose,
                scope=[{"dataset_id": registry_id, "fields": ["*"]}],
                operations=["train", "score"],
                granularity="score",
                valid_until=utcnow() + timedelta(days=30),
            )
            c = runtime.consents.request(
                s, bank=org, subject_uscc=u, terms=terms, actor=Actor(None, "subject")
            )
            runtime.consents.approve(s, c, signed=signed(runtime, s, c), actor=Actor(None, "subject"))
        fields = runtime.features.fields_for(s, ["industry_c"])
        model = runtime.models.register(
            s,
            kind="vertical_lr",
            name="matrix",
            owners=[bank.org.id],
            feature_schema=["platform:industry_c"],
            training={"rows": 12},
            artifacts={
                "platform": {
                    "features": ["industry_c"],
                    "weights": [0.5],
                    "mean": [0.0],
                    "scale": [1.0],
                    "fields": {k: list(v) for k, v in fields.items()},
                },
                bank.org.id: {"weights": [1.0], "intercept": 0.0},
            },
            ledger_indices=[],
            actor=Actor(bank.org.id, "bank"),
        )
    runtime.training.min_rows = 4
    runtime.training.max_per_bank = (
        4  # one finished, one exchanging, one to cancel, one started by the matrix
    )
    cfg = vl.VerticalLRConfig(epochs=1, batch_size=None, early_stopping=False)
    x, y = np.arange(12.0)[:, None], np.array([0, 1] * 6)
    args = {
        "name": "matrix",
        "purpose": purpose,
        "subjects": usccs,
        "platform_features": ["industry_c"],
        "vendor_key": runtime.enclave.vendor_public_key,
        "key_bits": 1024,
    }
    with Client(str(bank.client.base_url), bank.org.token) as client:
        done = client.vertical.start(client.vertical.start_body(**args))
        client.vertical.run_guest(done, vl.Guest(x, y), cfg)
        pending = client.vertical.start(client.vertical.start_body(**args))
        to_cancel = client.vertical.start(client.vertical.start_body(**args))
        guest = vl.Guest(x, y)
        guest.receive_public_key(base64.b64decode(pending.public_key))
        body = client.vertical.start_body(**args).model_dump(mode="json")
    public, _ = pf.generate_keypair(2048)
    bodies = {
        "POST /v1/training/vertical": body,
        "POST /v1/training/vertical/{training_id}/exchange": pack_frames([guest.setup(cfg)]),
        "POST /v1/models/{model_id}/evaluation": {"evaluation": evaluate(y, x[:, 0]).to_dict()},
        "POST /v1/models/{model_id}/contributions": {
            "purpose": purpose,
            "subjects": usccs[:3],
            "public_key": base64.b64encode(public.to_bytes()).decode(),
        },
    }
    trainings = {
        "": done.id,
        "/finish": done.id,
        "/exchange": pending.id,
        "/cancel": to_cancel.id,
    }
    return {"": model.id}, trainings, bodies


def _scoring_body() -> dict[str, Any]:
    import base64

    from protocols.he_scoring import BankScoringKey

    key = BankScoringKey.create()
    return {
        "purpose": "loan_underwriting",
        "subjects": ["91350100M000100Y43"],
        "context": base64.b64encode(key.public_context_bytes()).decode(),
        "model": base64.b64encode(key.encrypt_model({"industry_c": 1.0}, 0.0).to_bytes()).decode(),
    }


def _enclave_job_body(runtime: Runtime) -> dict[str, Any]:
    """A valid GBDT submission: rows encrypted to a verified quote (the job itself fails later: no data)."""
    import base64
    import os

    from enclave_sim.platform import expected_measurement
    from pps_wire import provision as crypto
    from pps_wire.quote import Quote, standard_policy

    nonce = os.urandom(32)
    quote = runtime.enclave.quote(nonce)
    sealed = crypto.encrypt_for_enclave(
        quote,
        standard_policy(measurements=[expected_measurement()], nonce=nonce),
        vendor_key=runtime.enclave.vendor_public_key,
        job="gbdt",
        slot="bank",
        body=b'{"keys": [], "features": {}, "labels": []}',
        output=crypto.OutputPolicy(("metrics",), os.urandom(32)),
    )
    return {
        "purpose": "loan_underwriting",
        "subjects": "all_consented",
        "features": ["industry_c"],
        "quote_hash": Quote.parse(quote).quote_hash.hex(),
        "rows": {
            "enc": base64.b64encode(sealed[:32]).decode(),
            "ciphertext": base64.b64encode(sealed[32:]).decode(),
        },
        "output": {"release": ["metrics"]},
    }


def _provisioned(
    runtime: Runtime, job: str, body: bytes, release: tuple[str, ...], recipient: bytes | None
) -> tuple[str, dict[str, str]]:
    import base64
    import os

    from enclave_sim.platform import expected_measurement
    from pps_wire import provision as crypto
    from pps_wire.quote import Quote, standard_policy

    nonce = os.urandom(32)
    quote = runtime.enclave.quote(nonce)
    sealed = crypto.encrypt_for_enclave(
        quote,
        standard_policy(measurements=[expected_measurement()], nonce=nonce),
        vendor_key=runtime.enclave.vendor_public_key,
        job=job,
        slot="bank",
        body=body,
        output=crypto.OutputPolicy(release, os.urandom(32), recipient),
    )
    return Quote.parse(quote).quote_hash.hex(), {
        "enc": base64.b64encode(sealed[:32]).decode(),
        "ciphertext": base64.b64encode(sealed[32:]).decode(),
    }


def _approval_bodies(runtime: Runtime, bank: str, subject: str) -> dict[str, Any]:
    """A model that passes the policy on the small registry (three registry features, equal shares), approved
    once here (for the graded request), provisioned once more for the approval route itself, and counted as
    disclosed about ``subject`` (for the explanation route)."""
    import json

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from pps.ledger.entry import Actor

    with runtime.db.transaction(write=False) as s:
        table = runtime.features.table(s)
    names = ["company_age_years", "log_registered_capital", "size_class_ordinal"]
    # weights about 1/std over the enterprises the enclave samples, so no feature dominates the score's variance
    # (households' rows, zero in these features, are not among them)
    firms = [i for i, u in enumerate(table.usccs) if not u.startswith("P")]
    weights = {n: 1.0 / float(np.nanstd(table.values[n][firms]) or 1.0) for n in names}
    weights["company_age_years"] *= 0.6  # age correlates with the others: keep its share well under the cap
    model = json.dumps({"model": {"kind": "logistic", "weights": weights, "bias": -2.0}}).encode()
    release = ("approval", "encrypted_model", "sealed_model")
    quote_hash, blob = _provisioned(runtime, "model_approval", model, release, None)
    row, _ = runtime.approvals.approve(
        bank=bank,
        quote_hash=bytes.fromhex(quote_hash),
        ciphertext=__import__("base64").b64decode(blob["enc"])
        + __import__("base64").b64decode(blob["ciphertext"]),
        actor=Actor(bank, "bank", "api"),
    )
    quote_hash_2, blob_2 = _provisioned(runtime, "model_approval", model, release, None)
    with runtime.db.transaction() as s:
        runtime.disclosures.spend(
            s, bank=bank, subjects=[subject], model_digest=row.model_digest, granularity={subject: "score"}
        )
    recipient = (
        X25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    request = json.dumps({"model_digest": row.model_digest}).encode()
    quote_hash_3, blob_3 = _provisioned(runtime, "graded_score", request, ("scores", "summary"), recipient)
    return {
        "POST /v1/scoring/approvals": {"quote_hash": quote_hash_2, "model": blob_2},
        "POST /v1/me/decisions/explain": {"bank_org_id": bank, "model_digest": row.model_digest},
        "POST /v1/scoring/graded": {
            "approval_id": row.id,
            "purpose": "loan_underwriting",
            "subjects": "all_consented",
            "quote_hash": quote_hash_3,
            "request": blob_3,
            "recipient_key": recipient.hex(),
        },
    }


def _sealed_bodies(runtime: Runtime, made: dict[Role, Party], terms: dict[str, Any]) -> dict[str, Any]:
    """A sealed dataset holding the subject, its consent to the bank, and valid sealed-dataset requests."""
    import base64
    import os

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from enclave_sim.platform import expected_measurement
    from pps.services.sealed import SealedColumn
    from pps_client import encrypt_sealed_columns, encrypt_sealed_weights
    from pps_wire.provision import OutputPolicy
    from pps_wire.quote import Quote, standard_policy
    from pps_wire.sealed import encrypt_score_request, report_nonce

    provider, subject, bank = made[Role.data_provider], made[Role.subject], made[Role.bank]
    runtime.sealed.min_cohort = 1  # one subject in the matrix's world
    ctx = runtime.sealed.ensure_context()
    blocks = encrypt_sealed_columns(ctx.public_context, {"amount": [1.0]}, {"amount": (0.0, 10.0)})["amount"]
    with runtime.db.transaction() as s:
        sealed = runtime.sealed.upload(
            s,
            provider_org_id=provider.org.id,
            name="sealed matrix",
            context_id=ctx.id,
            subjects=[str(subject.org.uscc)],
            attributes={},
            columns={"amount": SealedColumn(0.0, 10.0, tuple(blocks))},
            actor=Actor(provider.org.id, "data_provider"),
        )
        dataset_id = sealed.dataset_id
    granted = subject.client.post(
        "/v1/consents",
        json=signed_body(
            subject.org.key,
            str(subject.org.uscc),
            {
                **terms,
                "bank_org_id": bank.org.id,
                "scope": [{"dataset_id": dataset_id, "fields": ["amount"]}],
                "operations": ["aggregate", "score"],
                "granularity": "score",
            },
        ),
    )
    assert granted.status_code == 201, granted.text
    weight = encrypt_sealed_weights(ctx.public_context, {"amount": 0.5})["amount"]
    nonce = os.urandom(32)  # the bank's score request, provisioned to a context quote it verified
    quote = runtime.sealed.context_quote(nonce, actor=Actor(bank.org.id, "bank"))["quote"]
    provision = encrypt_score_request(
        quote,
        standard_policy(
            measurements=[expected_measurement()], nonce=report_nonce(ctx.id, nonce, ctx.bfv_context_id)
        ),
        vendor_key=runtime.enclave.vendor_public_key,
        output=OutputPolicy(
            ("scores",),
            os.urandom(32),
            X25519PrivateKey.generate()
            .public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        ),
        context_id=ctx.id,
        dataset_id=dataset_id,
        subjects=[str(subject.org.uscc)],
    )
    return {
        "POST /v1/sealed/datasets": {
            "name": "__unique__",
            "context_id": ctx.id,
            "subjects": [subject.org.uscc],
            "columns": {
                "amount": {
                    "lower": 0.0,
                    "upper": 10.0,
                    "blocks": [base64.b64encode(b).decode() for b in blocks],
                }
            },
        },
        "POST /v1/sealed/aggregates": {
            "purpose": "loan_underwriting",
            "dataset_id": dataset_id,
            "column": "amount",
            "epsilon": 0.01,
        },
        "POST /v1/sealed/scoring": {
            "purpose": "loan_underwriting",
            "dataset_id": dataset_id,
            "subjects": [subject.org.uscc],
            "weights": {"amount": base64.b64encode(weight).decode()},
            "quote_hash": Quote.parse(quote).quote_hash.hex(),
            "provision": base64.b64encode(provision).decode(),
        },
        "POST /v1/sealed/rotate": {"confirm": True},
    }


OBJECTED_SCHEMA = {
    "subject_key": "uscc",
    "columns": [
        {"name": "uscc", "type": "uscc", "sensitivity": "C1"},
        *({"name": f, "type": "float", "sensitivity": "C2"} for f in ("amount", "f1", "f2", "f3", "f4")),
    ],
}


def _objections(made: dict[Role, Party]) -> tuple[str, dict[str, str]]:
    """A dataset with the subject's record, and its objections: one with evidence, one to accept, one to reject."""
    import base64

    from tests.pps.governance.objections.files import png

    provider, subject = made[Role.data_provider].client, made[Role.subject]
    ds = provider.post("/v1/datasets", json={"name": "objected", "schema": OBJECTED_SCHEMA})
    assert ds.status_code == 201, ds.text
    up = provider.post(
        f"/v1/datasets/{ds.json()['id']}/versions",
        content=f"uscc,amount,f1,f2,f3,f4\n{subject.org.uscc},1,1,1,1,1\n".encode(),
        params={"format": "csv"},
    )
    assert up.status_code == 201, up.text
    ids = {}
    for action, field in (("", "amount"), ("/accept", "f1"), ("/reject", "f2"), ("/unverifiable", "f4")):
        body: dict[str, Any] = {"dataset_id": ds.json()["id"], "fields": [field], "reason": "matrix"}
        if not action:
            body["evidence"] = {"media_type": "image/png", "content": base64.b64encode(png()).decode()}
        filed = subject.client.post("/v1/objections", json=body)
        assert filed.status_code == 201, filed.text
        ids[action] = filed.json()["id"]
    return ds.json()["id"], ids


def _repairs(made: dict[Role, Party], tmp: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """The subject's dishonesty records (uploaded by the provider, who is then their authority) and its repair
    applications: one pending with a proof, one to approve, one to deny, one denied to object to; a statement."""
    import base64
    import dataclasses
    from datetime import date, timedelta

    import numpy as np

    from pps.governance.repair import commitment_text
    from tests.pps.governance.objections.files import pdf

    provider, subject = made[Role.data_provider].client, made[Role.subject]
    uscc = subject.org.uscc
    assert uscc is not None
    template = generate(12, 7).penalties
    assert template is not None
    ids = [f"矩阵罚〔2026〕{i}号" for i in range(6)]
    decided = date.today() - timedelta(days=150)
    n = len(ids)
    columns = {
        "uscc": np.array([uscc] * n, dtype=object),
        "record_id": np.array(ids, dtype=object),
        "kind": np.array(["administrative_penalty"] * n, dtype=object),
        "authority": np.array(["market_regulation"] * n, dtype=object),
        "decided_on": np.array([decided] * n, dtype="datetime64[D]"),
        "conduct_ended_on": np.array([decided - timedelta(days=30)] * n, dtype="datetime64[D]"),
        "grade": np.array(["general"] * n, dtype=object),
        "min_publicity_months": np.array([3] * n, dtype=np.int64),
        "max_publicity_months": np.array([12] * n, dtype=np.int64),
        "fine_amount": np.full(n, np.nan),
        "fine_paid_on": np.array(["NaT"] * n, dtype="datetime64[D]"),
        "tax_arrears": np.full(n, np.nan),
    }
    table = dataclasses.replace(template, columns=columns)
    table.write_csv(tmp)
    ds = provider.post("/v1/datasets", json={"name": "penalties", "schema": table.schema})
    assert ds.status_code == 201, ds.text
    up = provider.post(
        f"/v1/datasets/{ds.json()['id']}/versions",
        content=(tmp / "penalties.csv").read_bytes(),
        params={"format": "csv"},
    )
    assert up.status_code == 201, up.text
    apps = {}
    proof = {
        "kind": "rectification_report",
        "media_type": "application/pdf",
        "content": base64.b64encode(pdf()).decode(),
    }
    for action, rid in zip(("", "/approve", "/deny", "/object"), ids, strict=False):
        body: dict[str, Any] = {"record_id": rid, "commitment": commitment_text(uscc, rid)}
        if not action:
            body["proofs"] = [proof]
        made_app = subject.client.post("/v1/repairs", json=body)
        assert made_app.status_code == 201, made_app.text
        apps[action] = made_app.json()["id"]
    denied = provider.post(f"/v1/repairs/{apps['/object']}/deny", json={"reasons": ["matrix"]})
    assert denied.status_code == 200, denied.text
    said = subject.client.post(
        "/v1/statements", json={"dataset_id": ds.json()["id"], "record_key": ids[5], "text": "matrix"}
    )
    assert said.status_code == 201, said.text
    apps["statement"] = said.json()["id"]
    bodies = {
        "POST /v1/repairs": {"record_id": ids[4], "commitment": commitment_text(uscc, ids[4])},
        "POST /v1/repairs/{app_id}/approve": {},
        "POST /v1/repairs/{app_id}/deny": {"reasons": ["matrix"]},
        "POST /v1/repairs/{app_id}/object": {"text": "matrix"},
        "POST /v1/statements": {"dataset_id": ds.json()["id"], "record_key": ids[5], "text": "matrix again"},
    }
    return apps, bodies


def _psi_request() -> str:
    import base64

    from pps.identity.uscc import validate_uscc
    from protocols.psi import PSIClient

    return base64.b64encode(
        PSIClient(["91350100M000100Y43"], normalise=validate_uscc, reveal_intersection=False).create_request()
    ).decode()


def consent_terms(made: dict[Role, Party]) -> dict[str, Any]:
    from datetime import UTC, datetime, timedelta

    return {
        "purpose": "loan_underwriting",
        "scope": [{"dataset_id": made[Role.data_provider].dataset_id, "fields": ["amount"]}],
        "operations": ["score"],
        "granularity": "score",
        "valid_until": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
    }


def call(client: httpx.Client, route: APIRoute, path: str, n: int, bodies: dict[str, Any]) -> httpx.Response:
    method = sorted(route.methods)[0]
    key = f"{method} {route.path}"
    body = BODIES.get(key, bodies.get(key))
    if callable(body):  # a body usable once (an enrolment code, a new key): made per call
        body = body()
    if isinstance(body, bytes):
        return client.request(method, path, content=body)
    if body is not None and body.get("name") == "__unique__":
        body = {**body, "name": f"matrix object {n}"}
    params: dict[str, Any] | None = {"first": 1, "second": 1} if route.path.endswith("/consistency") else None
    if route.path in ("/v1/enclave/quote", "/v1/sealed/context"):
        params = {"nonce": "ab" * 32}
    if route.path.endswith("/versions"):
        return client.request(method, path, content=SMALL_CSV, params={"format": "csv"})

    try:
        return client.request(method, path, json=body, params=params)
    except httpx.TimeoutException as exc:
        raise AssertionError(f"{method} {path} did not answer in time") from exc


@pytest.mark.slow
def test_role_route_matrix(parties: dict[Role, Party], http: Callable[..., httpx.Client]) -> None:
    for role in (Role.platform_admin, Role.auditor):  # they read every dataset's and job's metadata by design
        parties[role].dataset_id = parties[Role.data_provider].dataset_id
        parties[role].disposable_dataset_id = parties[Role.data_provider].disposable_dataset_id
        parties[role].jobs = parties[Role.bank].jobs
        parties[role].models = parties[Role.bank].models  # and every model's and training's description
        parties[role].trainings = parties[Role.bank].trainings
    anonymous = http()
    failures = []
    n = 0
    for route in ROUTES:
        roles = declared_roles(route)
        assert roles is not None
        for role, party in parties.items():
            n += 1
            if role is Role.subject and route.path.startswith("/v1/persons/me"):
                party = party.person
                if route.path == "/v1/persons/me/erase":
                    party.erasable.bodies = party.bodies
                    party = party.erasable
            r = call(party.client, route, party.fill(route.path, sorted(route.methods)[0]), n, party.bodies)
            allowed = not roles or role in roles
            if allowed and r.status_code not in (200, 201, 202):
                failures.append(
                    f"{role.value} → {route.path}: expected success, got {r.status_code} {r.text}"
                )
            if not allowed and (r.status_code != 403 or r.json()["error"]["code"] != "role_not_allowed"):
                failures.append(f"{role.value} → {route.path}: expected 403, got {r.status_code}")
        r = call(anonymous, route, parties[Role.bank].fill(route.path), n, parties[Role.bank].bodies)
        if roles and r.status_code != 401:
            failures.append(f"anonymous → {route.path}: expected 401, got {r.status_code}")
        if not roles and r.status_code not in (200, 201):
            failures.append(f"anonymous → public {route.path}: expected 200, got {r.status_code}")
    assert failures == []


OBJECT_ROUTES = [
    r
    for r in ROUTES
    if "{" in r.path
    and "{consent_id}" not in r.path
    and "{objection_id}" not in r.path
    and "{app_id}" not in r.path
    and "{doc_id}" not in r.path
]
# consents have two parties (subject and bank); tests/api/test_consent_api.py has their tenant matrix;
# objections have two too (subject and provider): tests/pps/governance/objections/test_refusals.py has theirs;
# so do repair applications (subject and authority): tests/pps/governance/repair/test_repair_flow.py
# and credit reports (bank and subject): tests/pps/services/reports/test_reports_api.py


@pytest.mark.slow
def test_cross_tenant_matrix(parties: dict[Role, Party], runtime: Runtime) -> None:
    """Each organisation, asking for another organisation's objects, gets 404 — never the object."""
    failures = []
    n = 0
    tenants = [r for r in Role if r is not Role.platform_admin]
    with runtime.db.transaction(write=False) as s:
        size_before = runtime.ledger.size(s)
    for route in OBJECT_ROUTES:
        roles = declared_roles(route) or frozenset()
        for caller_role in tenants:
            if caller_role not in roles:
                continue  # refused by role already (the matrix above)
            for owner_role in Role:
                if owner_role is caller_role:
                    continue
                if caller_role is Role.auditor and route.path.startswith(("/v1/audit/", "/v1/datasets/")):
                    continue  # auditors read every entry and every dataset's metadata by design
                if caller_role is Role.auditor and route.path == "/v1/jobs/{job_id}":
                    continue  # and every job's metadata (never results)
                if caller_role is Role.auditor and route.path in (
                    "/v1/models/{model_id}",
                    "/v1/models/{model_id}/report",
                    "/v1/models/{model_id}/report.html",
                    "/v1/training/vertical/{training_id}",
                ):
                    continue  # and every model's and training's description (never parameters)
                n += 1
                caller, owner = parties[caller_role], parties[owner_role]
                r = call(caller.client, route, owner.fill(route.path), n, owner.bodies)
                if r.status_code != 404 or r.json()["error"]["code"] != "not_found":
                    failures.append(
                        f"{caller_role.value} → {owner_role.value}'s {route.path}: {r.status_code} {r.text[:200]}"
                    )
    assert failures == []
    with runtime.db.transaction(write=False) as s:
        assert runtime.ledger.size(s) == size_before, "refused requests must not write anything"
    for party in parties.values():  # nobody's spare token was revoked by someone else
        tokens = party.client.get(f"/v1/orgs/{party.org.id}/tokens").json()
        assert all(t["state"] == "active" for t in tokens)


def _enrolment_code(runtime: Runtime) -> str:
    """A fresh organisation's one-time enrolment code (each redemption needs its own)."""
    from pps.ledger.entry import OPERATOR

    with runtime.db.transaction() as session:
        org = runtime.identity.create_org(
            session, name=f"enrolling {new_id('x')}", role=Role.bank, uscc=None, actor=OPERATOR
        )
        return runtime.identity.issue_enrolment_code(session, org=org, actor=OPERATOR).secret


def _new_key_body(subject: OrgHandle) -> dict[str, Any]:
    """A new key for the subject, endorsed by its enrolled key (a rotation)."""
    from pps_wire.subject_sign import SubjectKey, action_text, b64, enrolment_document
    from tests.helpers import REPRESENTATIVE_ID

    key = SubjectKey.generate()
    text = action_text(
        enrolment_document(
            org_id=subject.id, subject=str(subject.uscc), algorithm="ed25519", public_key=key.public_key
        )
    )
    return {
        "algorithm": "ed25519",
        "public_key": b64(key.public_key),
        "proof": b64(key.sign(text)),
        "representative_name": "Li Wei",
        "representative_id": REPRESENTATIVE_ID,
        "endorsement_key_id": subject.key.key_id,
        "endorsement": b64(subject.key.sign(text)),
    }


def _subject_key_and_break_glass(runtime: Runtime, made: dict[Role, Party]) -> tuple[str, str]:
    """A spare key of the subject (to revoke) and a break-glass proposal by another operator (to approve)."""
    from pps.identity.keys import Endorsement, NewKey
    from pps.identity.realname import Representative
    from pps.ledger.entry import OPERATOR
    from pps_wire.subject_sign import unb64
    from tests.helpers import REPRESENTATIVE_ID

    subject = made[Role.subject].org
    body = _new_key_body(subject)
    with runtime.db.transaction() as session:
        org = runtime.identity.get_org(session, subject.id)
        spare = runtime.keys.enrol(
            session,
            org=org,
            key=NewKey("ed25519", unb64(body["public_key"], "k"), unb64(body["proof"], "p")),
            representative=Representative("Li Wei", REPRESENTATIVE_ID),
            endorsement=Endorsement(subject.key.key_id, unb64(body["endorsement"], "e")),
            actor=Actor(subject.id, "subject"),
        )
        other = runtime.identity.create_org(
            session, name="another operator", role=Role.platform_admin, uscc=None, actor=OPERATOR
        )
        target = runtime.identity.create_org(
            session, name="break-glass target", role=Role.bank, uscc=None, actor=OPERATOR
        )
        proposal = runtime.identity.propose_break_glass(
            session,
            org=target,
            action="disable_org",
            reason="the matrix's second operator approves this",
            actor=Actor(other.id, "platform_admin"),
        )
        return spare.key_id, proposal.id
