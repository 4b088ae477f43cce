"""Issue 24: consent only the subject can give, and an operator whose powers are bounded and seen.

Tried as a dishonest operator would, with only the documented API (and, where said, with its database):
the shadow bank, token minting, a forged consent row, a consent edited after it was signed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from pps.governance.signatures import consents_in_force_unsigned
from pps.infra.storage.tables import Consent, ConsentSignature, ConsentState, Role, new_id, utcnow
from pps.runtime import Runtime
from pps_client import AuthenticationError, Client, InvalidRequest, NotFound, PermissionDenied
from pps_wire.subject_sign import SubjectKey, action_document, signed_action
from tests.conftest import OrgFactory, OrgHandle
from tests.helpers import REPRESENTATIVE_ID, uscc_for
from tests.pps.data.datasets.conftest import TAX_SCHEMA


@pytest.fixture
def world(make_org: OrgFactory, base_url: str) -> dict[str, Any]:
    admin = make_org(Role.platform_admin, "Operator")
    return {
        "admin": admin,
        "bank": make_org(Role.bank, "Bank A"),
        "provider": make_org(Role.data_provider, "Tax bureau"),
        "subjects": [make_org(Role.subject) for _ in range(3)],
        "ds": Client(base_url, make_org(Role.data_provider, "Registry").token)
        .datasets.create("tax", TAX_SCHEMA)
        .id,
    }


def client(base_url: str, org: OrgHandle) -> Client:
    return Client(base_url, org.token, subject_key=org.key)


def terms(ds: str, **extra: Any) -> dict[str, Any]:
    return {
        "purpose": "loan_underwriting",
        "scope": {ds: ["tax_paid", "headcount"]},
        "operations": ["score", "psi"],
        "valid_until": datetime.now(UTC) + timedelta(days=30),
        **extra,
    }


def decide(base_url: str, bank: OrgHandle, ds: str, usccs: list[str]) -> list[Any]:
    return (
        Client(base_url, bank.token)
        .consents.check(usccs, fields={ds: ["tax_paid"]}, operation="score", purpose="loan_underwriting")
        .decisions
    )


def refusals_seen_by(base_url: str, org: OrgHandle) -> list[dict[str, Any]]:
    return [
        i.entry
        for i in Client(base_url, org.token).ledger.mine().items
        if i.entry["action"] == "operator.refused"
    ]


# --- the subject signs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ed25519", "sm2"])
def test_the_sdk_grants_with_a_local_key_and_the_receipt_and_ledger_carry_the_signature(
    world: dict[str, Any], base_url: str, make_org: OrgFactory, runtime: Runtime, algorithm: str
) -> None:
    subject = make_org(Role.subject)
    key = SubjectKey.generate(algorithm)
    # a second key needs an endorsement by the first (rotation): the fixture's key endorses ours
    enrolled = client(base_url, subject).keys.enrol(
        key, representative_name="Li Wei", representative_id=REPRESENTATIVE_ID, endorse_with=subject.key
    )
    assert enrolled.key_id == key.key_id and enrolled.algorithm == algorithm
    granted = Client(base_url, subject.token, subject_key=key).consents.grant(
        world["bank"].id, **terms(world["ds"])
    )
    assert granted.state == "active"
    receipt = Client(base_url, world["bank"].token).consents.receipt(granted.id)
    body = json.loads(receipt.split("\n\n")[0])
    assert body["subject_signature"]["key_id"] == key.key_id
    entry = next(
        i.entry for i in client(base_url, subject).ledger.mine().items if i.entry["action"] == "consent.grant"
    )
    assert entry["detail"]["subject_signature"]["key_id"] == key.key_id
    assert [d.allowed for d in decide(base_url, world["bank"], world["ds"], [str(subject.uscc)])] == [True]


def test_a_grant_without_a_valid_subject_signature_is_refused_and_changes_nothing(
    world: dict[str, Any], base_url: str, http: Callable[..., httpx.Client]
) -> None:
    s1, s2 = world["subjects"][:2]
    body = {**terms(world["ds"]), "scope": [{"dataset_id": world["ds"], "fields": ["tax_paid"]}]}
    body["valid_until"] = body["valid_until"].isoformat()
    body["bank_org_id"] = world["bank"].id
    unsigned = http(s1.token).post("/v1/consents", json=body)
    assert unsigned.status_code == 422 and unsigned.json()["error"]["code"] == "invalid_subject_signature"
    assert "signed by the subject's own key" in unsigned.json()["error"]["message"]

    def signed_body(key: SubjectKey, subject: str, **change: Any) -> dict[str, Any]:
        doc = action_document(
            action="grant",
            subject=subject,
            bank=world["bank"].id,
            purpose="loan_underwriting",
            scope=body["scope"],
            operations=body["operations"],
            valid_until=datetime.fromisoformat(body["valid_until"]),
        )
        doc.update(change)
        return {**body, "signature": signed_action(key, doc)}

    cases = {
        "another subject's key": signed_body(s2.key, str(s1.uscc)),
        "a key nobody enrolled": signed_body(SubjectKey.generate(), str(s1.uscc)),
        "other terms than those sent": signed_body(
            s1.key, str(s1.uscc), operations=["aggregate", "psi", "score"]
        ),
        "an old signature": signed_body(s1.key, str(s1.uscc), signed_at="2020-01-01T00:00:00.000000Z"),
    }
    for what, sent in cases.items():
        got = http(s1.token).post("/v1/consents", json=sent)
        assert got.status_code == 422, what
        assert got.json()["error"]["code"] == "invalid_subject_signature", (what, got.text)
    tampered = signed_body(s1.key, str(s1.uscc))
    tampered["signature"]["text"] = tampered["signature"]["text"].replace("psi", "aggregate")
    got = http(s1.token).post("/v1/consents", json=tampered)
    assert got.json()["error"]["code"] == "invalid_subject_signature" and "does not verify" in got.text
    once = signed_body(s1.key, str(s1.uscc))
    assert http(s1.token).post("/v1/consents", json=once).status_code == 201
    replayed = http(s1.token).post("/v1/consents", json=once)
    assert replayed.status_code == 422 and "used before" in replayed.text
    assert len(client(base_url, s1).consents.list()) == 1


def test_approving_a_request_is_signed_over_its_terms(world: dict[str, Any], base_url: str) -> None:
    s1 = world["subjects"][0]
    asked = Client(base_url, world["bank"].token).consents.request(str(s1.uscc), **terms(world["ds"]))
    with pytest.raises(InvalidRequest) as unsigned:
        Client(base_url, s1.token).consents._client._call(  # no signature at all
            "POST", f"/v1/consents/{asked.id}/approve", type(asked)
        )
    assert unsigned.value.code == "invalid_subject_signature"
    approved = client(base_url, s1).consents.approve(asked.id)
    assert approved.state == "active"
    revoked = client(base_url, s1).consents.revoke(asked.id)  # signed too, and kept as the subject's proof
    assert revoked.state == "revoked"


def test_a_consent_row_the_operator_writes_or_edits_is_no_consent(
    world: dict[str, Any], base_url: str, runtime: Runtime
) -> None:
    """With the database itself: a forged row decides as no_grant, an edited one too, and verify names both."""
    s1, s2, s3 = world["subjects"]
    honest = client(base_url, s1).consents.grant(world["bank"].id, **terms(world["ds"]))
    edited = client(base_url, s2).consents.grant(world["bank"].id, **terms(world["ds"], max_uses=3))
    now = utcnow()
    with runtime.db.transaction() as session:
        forged = Consent(
            id=new_id("cns"),
            subject_uscc=str(s3.uscc),
            bank_org_id=world["bank"].id,
            purpose="loan_underwriting",
            scope_json=json.dumps([{"dataset_id": world["ds"], "fields": ["headcount", "tax_paid"]}]),
            operations_json=json.dumps(["psi", "score"]),
            valid_from=now,
            valid_until=now + timedelta(days=30),
            max_uses=None,
            uses=0,
            state=ConsentState.active,
            requested_by="subject",
            created_at=now,
            decided_at=now,
        )
        session.add(forged)
        session.execute(update(Consent).where(Consent.id == edited.id).values(max_uses=None))
        forged_id = forged.id
    decisions = decide(base_url, world["bank"], world["ds"], [str(s.uscc) for s in (s1, s2, s3)])
    assert [d.allowed for d in decisions] == [True, False, False]
    assert decisions[1].reason == decisions[2].reason == "no_grant"
    assert "differs from what the subject signed: max_uses" in decisions[1].detail
    assert "no signature by the subject" in decisions[2].detail
    with runtime.db.transaction(write=False) as session:
        named = {
            c.id: why for c, why in consents_in_force_unsigned(session, runtime.consents.signatures, utcnow())
        }
    assert set(named) == {edited.id, forged_id} and honest.id not in named


def test_pps_audit_verify_names_a_forged_consent_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pps.cli import app
    from pps.infra.settings import get_settings

    monkeypatch.setenv("PPS_DATA_DIR", str(tmp_path / "pps"))
    monkeypatch.delenv("PPS_DATABASE_URL", raising=False)
    runner = CliRunner()
    assert runner.invoke(app, ["admin", "bootstrap"]).exit_code == 0
    out = runner.invoke(app, ["admin", "org", "create", "Bank A", "--role", "bank"]).output
    bank_id = re.search(r"organisation (org_\w+)", out).group(1)  # type: ignore[union-attr]
    result = runner.invoke(app, ["audit", "verify"])
    assert result.exit_code == 0 and "each signed by its subject" in " ".join(result.output.split())
    get_settings.cache_clear()
    rt = Runtime.build(get_settings())
    try:
        with rt.db.transaction() as session:
            now = utcnow()
            session.add(
                Consent(
                    id="cns_forgedbytheoperator",
                    subject_uscc=uscc_for(7),
                    bank_org_id=bank_id,
                    purpose="loan_underwriting",
                    scope_json="[]",
                    operations_json='["psi"]',
                    valid_from=now,
                    valid_until=now + timedelta(days=3),
                    max_uses=None,
                    uses=0,
                    state=ConsentState.active,
                    requested_by="subject",
                    created_at=now,
                )
            )
    finally:
        rt.close()
    get_settings.cache_clear()
    result = runner.invoke(app, ["audit", "verify"])
    out = " ".join(result.output.split())
    assert result.exit_code == 3, out
    assert "CONSENT WITHOUT THE SUBJECT'S SIGNATURE" in out and "cns_forgedbytheoperator" in out
    assert "no signature by the subject" in out


# --- the operator is bounded and seen -------------------------------------------------------------------


def test_the_shadow_bank_attack_fails_and_is_seen(world: dict[str, Any], base_url: str) -> None:
    """The operator onboards a shadow bank, tries to mint tokens for enterprises and to consent in their
    names: every step that would act as an enterprise is refused, and each enterprise sees the attempt."""
    admin = Client(base_url, world["admin"].token)
    shadow_org = admin.orgs.create("Shadow bank", "bank")
    shadow = Client(base_url, Client(base_url).orgs.enrol(shadow_org.enrolment_code).token.token)
    victims = world["subjects"]
    for victim in victims:
        with pytest.raises(PermissionDenied) as minted:
            admin.tokens.issue(victim.id, label="shadow")
        assert minted.value.code == "operator_bounded" and "enrolment code" in minted.value.message
    asked = [shadow.consents.request(str(v.uscc), **terms(world["ds"])) for v in victims]
    forged_key = SubjectKey.generate()
    with pytest.raises(PermissionDenied) as by_role:
        admin.consents.approve(asked[0].id, key=forged_key)
    assert by_role.value.code == "role_not_allowed"
    with pytest.raises(PermissionDenied):  # nor enrol a key for an enterprise
        admin.keys.enrol(forged_key, representative_name="X", representative_id=REPRESENTATIVE_ID)
    decisions = decide(
        base_url, Client_handle(shadow_org.id, shadow), world["ds"], [str(v.uscc) for v in victims]
    )
    assert not any(d.allowed for d in decisions)
    for victim in victims:
        seen = refusals_seen_by(base_url, victim)
        assert len(seen) == 1 and seen[0]["actor"]["org"] == world["admin"].id
        assert "issue a token" in seen[0]["detail"]["refused"]


def Client_handle(org_id: str, c: Client) -> OrgHandle:
    token = c._http.headers["Authorization"].split(" ", 1)[1]
    return OrgHandle(org_id, "shadow", Role.bank, None, token, "")


def test_the_operator_cannot_mint_or_revoke_a_banks_token(world: dict[str, Any], base_url: str) -> None:
    admin = Client(base_url, world["admin"].token)
    bank = Client(base_url, world["bank"].token)
    with pytest.raises(PermissionDenied) as minted:
        admin.tokens.issue(world["bank"].id, label="sealed scoring as Bank A")
    assert minted.value.code == "operator_bounded"
    with pytest.raises(PermissionDenied) as revoked:
        admin.tokens.revoke(world["bank"].token_id)
    assert revoked.value.code == "operator_bounded" and "break-glass" in revoked.value.message
    assert bank.me().org.id == world["bank"].id  # still works
    assert [t.state for t in bank.tokens.list(world["bank"].id)] == ["active"]  # nothing minted
    seen = refusals_seen_by(base_url, world["bank"])
    assert [e["detail"]["refused"].split(":")[0] for e in seen] == [
        "issue a token",
        f"revoke token {world['bank'].token_id}",
    ]
    # the bank mints its own
    assert bank.tokens.issue(world["bank"].id, label="batch").token.startswith("pps_")
    # an operator still issues tokens for the roles it runs (a data provider), as before
    assert admin.tokens.issue(world["provider"].id).token.startswith("pps_")


def test_enrolment_codes_are_one_time_and_never_reissued(
    world: dict[str, Any], base_url: str, runtime: Runtime
) -> None:
    admin = Client(base_url, world["admin"].token)
    anonymous = Client(base_url)
    created = admin.orgs.create("Bank Z", "bank")
    assert created.enrolment_code.startswith("enr_")
    enrolled = anonymous.orgs.enrol(created.enrolment_code)
    assert enrolled.org.id == created.id and Client(base_url, enrolled.token.token).me().org.name == "Bank Z"
    with pytest.raises(AuthenticationError) as again:
        anonymous.orgs.enrol(created.enrolment_code)
    assert again.value.code == "invalid_enrolment_code" and "was used at" in again.value.message
    with pytest.raises(AuthenticationError):
        anonymous.orgs.enrol("enr_guessed")
    with runtime.db.transaction() as session:  # a second code for an enrolled bank: refused, even by the CLI
        from pps.errors import OperatorBounded
        from pps.ledger.entry import OPERATOR

        with pytest.raises(OperatorBounded):
            runtime.identity.issue_enrolment_code(
                session, org=runtime.identity.get_org(session, created.id), actor=OPERATOR
            )


def test_break_glass_needs_two_operators_and_only_takes_credentials_away(
    world: dict[str, Any], base_url: str, make_org: OrgFactory
) -> None:
    first = Client(base_url, world["admin"].token)
    second = Client(base_url, make_org(Role.platform_admin, "Second operator").token)
    bank = Client(base_url, world["bank"].token)
    proposal = first.break_glass.propose(world["bank"].id, "revoke_tokens", "token leaked on a public forum")
    assert bank.me().org.id == world["bank"].id  # nothing happens on one operator's word
    with pytest.raises(PermissionDenied) as alone:
        first.break_glass.approve(proposal.id)
    assert alone.value.code == "operator_bounded" and "second operator" in alone.value.message
    done = second.break_glass.approve(proposal.id)
    assert done.approved_by != done.proposed_by and done.done_at is not None
    with pytest.raises(AuthenticationError):
        bank.me()
    with pytest.raises(InvalidRequest):  # there is no break-glass action that gives a credential
        first.request(
            "POST",
            "/v1/break-glass",
            json={
                "org_id": world["bank"].id,
                "action": "issue_token",
                "reason": "we need to act as the bank",
            },
        )
    actions = [
        e.entry["action"]
        for e in Client(base_url, make_org(Role.auditor).token).ledger.entries(action="break_glass.*").items
    ]
    assert actions == ["break_glass.propose", "break_glass.do"]


def test_break_glass_and_refusals_appear_in_the_affected_organisations_history(
    world: dict[str, Any], base_url: str, make_org: OrgFactory
) -> None:
    first = Client(base_url, world["admin"].token)
    second = Client(base_url, make_org(Role.platform_admin, "Second operator").token)
    target = world["subjects"][0]
    proposal = first.break_glass.propose(target.id, "disable_org", "a court order to suspend the account")
    mine = [i.entry["action"] for i in Client(base_url, target.token).ledger.mine().items]
    assert "break_glass.propose" in mine  # at once, before anything is done
    listed = Client(base_url, target.token).break_glass.list()
    assert [b.id for b in listed] == [proposal.id]
    with pytest.raises(NotFound):
        Client(base_url, world["subjects"][1].token).orgs.get(target.id)
    second.break_glass.approve(proposal.id)
    with pytest.raises(AuthenticationError):
        Client(base_url, target.token).me()


def test_key_enrolment_needs_the_real_name_step_and_proof_of_possession(
    world: dict[str, Any], base_url: str, make_org: OrgFactory, runtime: Runtime
) -> None:
    fresh = make_org(Role.subject, uscc=uscc_for(31337))
    own = Client(base_url, fresh.token)
    new = SubjectKey.generate()
    with pytest.raises(InvalidRequest) as bad_id:
        own.keys.enrol(new, representative_name="Li Wei", representative_id="110105194912310021")
    assert bad_id.value.code == "real_name_refused"
    with pytest.raises(InvalidRequest) as no_endorsement:  # it has a key already: rotation needs endorsement
        own.keys.enrol(new, representative_name="Li Wei", representative_id=REPRESENTATIVE_ID)
    assert (
        no_endorsement.value.code == "invalid_subject_signature"
        and "endorsement" in no_endorsement.value.message
    )
    rotated = own.keys.enrol(
        new, representative_name="Li Wei", representative_id=REPRESENTATIVE_ID, endorse_with=fresh.key
    )
    assert rotated.verification_ref.startswith("rn_")
    old = own.keys.revoke(fresh.key.key_id)
    assert old.revoked_at is not None
    with pytest.raises(InvalidRequest) as revoked:
        Client(base_url, fresh.token, subject_key=fresh.key).consents.grant(
            world["bank"].id, **terms(world["ds"])
        )
    assert "revoked" in revoked.value.message
    assert Client(base_url, fresh.token, subject_key=new).consents.grant(
        world["bank"].id, **terms(world["ds"])
    )
    with runtime.db.transaction(write=False) as session:
        assert session.execute(select(ConsentSignature.key_id)).scalars().all().count(new.key_id) == 1


def test_a_key_and_a_signed_consent_written_into_the_database_are_named_by_the_replay_and_refused(
    world: dict[str, Any], base_url: str, runtime: Runtime
) -> None:
    """The database's editor enrols its own key for an enterprise and signs a consent with it: every row is
    well formed and the signature verifies, so only the ledger tells. The state replay (issue 21's reducers, with
    the keys and signatures of issue 24) names the key, the signature and the consent, and from then on the key
    signs nothing and the consent decides as no consent."""
    from pps.infra.storage.tables import SubjectKey as KeyRow
    from pps_wire.subject_sign import action_text, b64

    s1, s2, _ = world["subjects"]
    honest = client(base_url, s1).consents.grant(world["bank"].id, **terms(world["ds"]))
    client(base_url, s1).consents.revoke(honest.id)  # signed: a third signature row the entries carry
    again = client(base_url, s1).consents.grant(world["bank"].id, **terms(world["ds"]))
    clean = runtime.check_state()
    assert clean.ok, [d.describe() for d in clean.divergences]
    assert clean.rows_checked["subject_keys"] >= 3 and clean.rows_checked["consent_signatures"] == 3

    forger = SubjectKey.generate()
    now = utcnow()
    doc = action_document(
        action="grant",
        subject=str(s2.uscc),
        bank=world["bank"].id,
        purpose="loan_underwriting",
        scope=[{"dataset_id": world["ds"], "fields": ["tax_paid"]}],
        operations=["score"],
        valid_until=now + timedelta(days=30),
        signed_at=now,
    )
    text = action_text(doc)
    with runtime.db.transaction() as session:
        session.add(
            KeyRow(
                key_id=forger.key_id,
                org_id=s2.id,
                subject_uscc=str(s2.uscc),
                algorithm="ed25519",
                public_key=forger.public_key,
                credential_id=None,
                label="default",
                verification_ref="rn_forged",
                representative_hash=b"\0" * 32,
                enrolled_at=now - timedelta(hours=1),
                revoked_at=None,
            )
        )
        forged = Consent(
            id=new_id("cns"),
            subject_uscc=str(s2.uscc),
            bank_org_id=world["bank"].id,
            purpose="loan_underwriting",
            scope_json=json.dumps([{"dataset_id": world["ds"], "fields": ["tax_paid"]}]),
            operations_json=json.dumps(["score"]),
            valid_from=now,
            valid_until=now + timedelta(days=30),
            max_uses=None,
            granularity="grade",
            uses=0,
            state=ConsentState.active,
            requested_by="subject",
            created_at=now,
            decided_at=now,
        )
        session.add(forged)
        session.flush()
        sig = ConsentSignature(
            id=new_id("csg"),
            consent_id=forged.id,
            action="grant",
            key_id=forger.key_id,
            text=text,
            signature=b64(forger.sign(text)),
            nonce=doc["nonce"],
            signed_at=now,
            recorded_at=now,
        )
        session.add(sig)
        forged_id, sig_id = forged.id, sig.id
    with runtime.db.transaction(write=False) as session:  # the signature alone holds: a valid key, valid text
        assert forged_id not in {
            c.id for c, _ in consents_in_force_unsigned(session, runtime.consents.signatures, utcnow())
        }
    report = runtime.check_state()
    named = {(d.table, d.row_id, d.column) for d in report.divergences}
    assert {
        ("subject_keys", forger.key_id, "*"),
        ("consent_signatures", sig_id, "*"),
        ("consents", forged_id, "*"),
    } <= named, named
    decisions = decide(base_url, world["bank"], world["ds"], [str(s1.uscc), str(s2.uscc)])
    assert decisions[0].allowed and decisions[0].consent_id == again.id
    assert not decisions[1].allowed
    with runtime.db.transaction(write=False) as session:  # the key is ignored: the consent is unsigned
        assert runtime.consents.signatures.problem(session, session.get(Consent, forged_id)) == (
            "no signature by the subject"
        )
    with pytest.raises(InvalidRequest, match="differs from its enrolment in the ledger"):
        Client(base_url, s2.token, subject_key=forger).consents.grant(world["bank"].id, **terms(world["ds"]))


def test_the_granularity_is_signed_and_a_widened_row_is_no_consent(
    world: dict[str, Any], base_url: str, runtime: Runtime, http: Callable[..., httpx.Client]
) -> None:
    """Issue 17's output granularity is one of the signed terms: what a score may release is the subject's to
    say. A grant that signs one granularity and sends another is refused; a row widened after signing (a grade
    consent turned into a score consent in the database) decides as no consent."""
    from tests.helpers import signed_body

    s1, s2, s3 = world["subjects"]
    graded = client(base_url, s1).consents.grant(world["bank"].id, **terms(world["ds"], granularity="grade"))
    default = client(base_url, s2).consents.grant(world["bank"].id, **terms(world["ds"]))  # signs null
    assert graded.granularity == default.granularity == "grade"  # loan underwriting's published default
    with runtime.db.transaction(write=False) as session:
        sig = session.execute(
            select(ConsentSignature).where(ConsentSignature.consent_id == graded.id)
        ).scalar_one()
        assert '"granularity":"grade"' in sig.text
    assert [
        d.allowed for d in decide(base_url, world["bank"], world["ds"], [str(s1.uscc), str(s2.uscc)])
    ] == [
        True,
        True,
    ]
    body = {
        "bank_org_id": world["bank"].id,
        "purpose": "loan_underwriting",
        "scope": [{"dataset_id": world["ds"], "fields": ["tax_paid"]}],
        "operations": ["score"],
        "valid_until": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        "granularity": "grade",
    }
    sent = {**signed_body(s3.key, str(s3.uscc), body), "granularity": "score"}  # signed grade, asks score
    refused = http(s3.token).post("/v1/consents", json=sent)
    assert refused.status_code == 422 and "granularity" in refused.json()["error"]["message"], refused.text
    with runtime.db.transaction() as session:
        session.execute(update(Consent).where(Consent.id == graded.id).values(granularity="score"))
    widened = decide(base_url, world["bank"], world["ds"], [str(s1.uscc)])[0]
    assert not widened.allowed and widened.reason == "no_grant"
    assert "differs from what the subject signed: granularity" in widened.detail
