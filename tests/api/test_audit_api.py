"""The ledger over HTTP, verified on the client side against a pinned key."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from api.app import create_app
from api.live import running_server
from pps.client import PPSClient
from pps.errors import NotFound, ProofVerificationError, RoleNotAllowed
from pps.infra.settings import Settings
from pps.infra.storage.tables import Role
from pps.ledger.checkpoint import NoteVerifier, verify_checkpoint
from pps.ledger.entry import Actor, EntryDraft
from pps.runtime import Runtime
from tests.conftest import OrgFactory


@pytest.fixture
def world(make_org: OrgFactory, base_url: str) -> dict[str, PPSClient]:
    orgs = {
        "admin": make_org(Role.platform_admin),
        "auditor": make_org(Role.auditor),
        "bank": make_org(Role.bank),
        "subject1": make_org(Role.subject),
        "subject2": make_org(Role.subject),
    }
    return {name: PPSClient(base_url, o.token) for name, o in orgs.items()}


def pinned(base_url: str) -> NoteVerifier:
    return NoteVerifier.from_string(PPSClient(base_url).public_key()["verifier_key"])


def test_public_key_is_served_without_credentials(base_url: str, runtime: Runtime) -> None:
    key = PPSClient(base_url).public_key()
    assert key["verifier_key"] == runtime.ledger.signer.verifier_key
    assert key["origin"] == runtime.ledger.origin
    assert key["public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----")


def test_checkpoint_json_and_note(
    world: dict[str, PPSClient], base_url: str, http: Callable[..., httpx.Client]
) -> None:
    cp = world["bank"].checkpoint()
    parsed = verify_checkpoint(cp["note"], pinned(base_url))
    assert parsed.tree_size == cp["tree_size"] > 0
    note = world["bank"].request("GET", "/v1/audit/checkpoint", params={"format": "note"})
    assert note == cp["note"]


def test_every_entry_proves_against_the_checkpoint(world: dict[str, PPSClient], base_url: str) -> None:
    key = pinned(base_url)
    auditor = world["auditor"]
    size = auditor.checkpoint()["tree_size"]
    for index in range(size):
        doc = PPSClient.verify_proven_entry(auditor.entry(index), key)
        assert doc["index"] == index
    proven = auditor.entry(2, tree_size=size)
    PPSClient.verify_proven_entry(proven, key)
    forged = dict(proven, entry_b64=proven["entry_b64"][:-4] + "AAA=")
    with pytest.raises(ProofVerificationError):
        PPSClient.verify_proven_entry(forged, key)


def test_consistency_between_checkpoints(world: dict[str, PPSClient], base_url: str) -> None:
    auditor = world["auditor"]
    old = auditor.checkpoint()
    world["bank"].issue_token(world["bank"].me()["org"]["id"], label="more")
    new = auditor.checkpoint()
    assert new["tree_size"] == old["tree_size"] + 1
    auditor.verify_consistency(old["note"], new["note"], pinned(base_url))
    history = auditor.request("GET", "/v1/audit/checkpoints")["items"]
    assert [c["tree_size"] for c in history][-2:] == [old["tree_size"], new["tree_size"]]


def test_subjects_see_the_entries_that_touch_them_and_nothing_else(
    world: dict[str, PPSClient], base_url: str, runtime: Runtime
) -> None:
    key = pinned(base_url)
    s1 = world["subject1"].me()["org"]
    s2 = world["subject2"].me()["org"]
    with runtime.db.transaction() as s:  # a bank's access to subject 1's data
        runtime.ledger.append(
            s,
            EntryDraft(
                action="score.release",
                actor=Actor("org_b", "bank"),
                subjects=(s1["uscc"],),
                purpose="loan_underwriting",
            ),
        )
    mine = world["subject1"].mine()
    docs = [PPSClient.verify_proven_entry(item, key) for item in mine["items"]]
    assert [d["action"] for d in docs] == ["org.create", "token.issue", "score.release"]
    assert all(s1["uscc"] in d["subjects"] for d in docs)
    foreign = world["auditor"].entries(subject=s2["uscc"])["items"]
    assert foreign
    with pytest.raises(NotFound):
        world["subject1"].entry(foreign[0]["index"])


def test_banks_see_their_own_actions_only(world: dict[str, PPSClient]) -> None:
    bank = world["bank"]
    bank.issue_token(bank.me()["org"]["id"], label="rotation")
    mine = bank.mine()["items"]
    assert [i["entry"]["action"] for i in mine] == ["token.issue"]
    with pytest.raises(RoleNotAllowed):
        bank.entries()


def test_entry_filters_and_pages(world: dict[str, PPSClient]) -> None:
    auditor = world["auditor"]
    all_entries = auditor.entries(limit=500)["items"]
    tokens = auditor.entries(action="token.*", limit=500)["items"]
    assert {e["entry"]["action"] for e in tokens} == {"token.issue"}
    assert len(tokens) == 5
    page = auditor.entries(limit=3)
    assert len(page["items"]) == 3
    rest = auditor.entries(limit=500, after=page["next_after"])["items"]
    assert [e["index"] for e in page["items"] + rest] == [e["index"] for e in all_entries]
    assert auditor.entries(since="2000-01-01T00:00:00Z", until="2000-01-02T00:00:00Z")["items"] == []


@pytest.mark.slow
def test_checkpoints_are_published_periodically(tmp_path: object, database_url: str) -> None:
    from pathlib import Path

    settings = Settings(
        data_dir=Path(str(tmp_path)) / "periodic", database_url=database_url, checkpoint_interval_seconds=0.1
    )
    rt = Runtime.build(settings)
    try:
        with rt.db.transaction() as s:
            rt.ledger.append_many(s, [EntryDraft(action="x", actor=Actor(None, "operator", "cli"))] * 3)
        with running_server(create_app(runtime=rt)):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with rt.db.transaction(write=False) as s:
                    latest = rt.ledger.latest_checkpoint(s)
                if latest is not None and latest.tree_size == 3:
                    break
                time.sleep(0.05)
        assert latest is not None and latest.tree_size == 3
    finally:
        rt.close()


def test_a_subjects_own_actions_are_in_its_history(world: dict[str, PPSClient], base_url: str) -> None:
    subject = world["subject1"]
    me = subject.me()
    spare = subject.issue_token(me["org"]["id"], label="spare")
    subject.revoke_token(spare["id"])
    key = pinned(base_url)
    docs = [PPSClient.verify_proven_entry(item, key) for item in subject.mine()["items"]]
    actions = [d["action"] for d in docs]
    assert actions == ["org.create", "token.issue", "token.issue", "token.revoke"]
    assert all(me["org"]["uscc"] in d["subjects"] for d in docs)  # revocations name the subject too


def test_an_enterprise_sees_a_banks_batch_request_redacted(
    world: dict[str, PPSClient], base_url: str, runtime: Runtime
) -> None:
    """A batch entry names many enterprises; each sees only itself in it (and the proof that it exists)."""
    s1 = world["subject1"].me()["org"]["uscc"]
    s2 = world["subject2"].me()["org"]["uscc"]
    with runtime.db.transaction() as s:
        runtime.ledger.append(
            s,
            EntryDraft(
                action="policy.admit",
                actor=Actor("org_bank", "bank"),
                subjects=(s1, s2),
                consent_ids=("cns_a", "cns_b"),
                purpose="loan_underwriting",
                detail={"allowed": 1, "denied": {"no_grant": 1}},
            ),
        )
    key = pinned(base_url)
    item = world["subject1"].mine()["items"][-1]
    doc = PPSClient.verify_proven_entry(item, key)
    assert doc["redacted"] and doc["subjects"] == [s1] and doc["consent_ids"] == [] and doc["detail"] == {}
    assert s2 not in str(item) and "cns_b" not in str(item)
    assert world["subject1"].entry(item["index"])["entry_b64"] == ""
    full = world["auditor"].entry(item["index"])
    assert PPSClient.verify_proven_entry(full, key)["subjects"] == sorted([s1, s2])
