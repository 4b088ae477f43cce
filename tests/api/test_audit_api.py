"""The ledger over HTTP, verified on the client side against a pinned key."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest

from api.app import create_app
from api.live import running_server
from pps.infra.settings import Settings
from pps.infra.storage.tables import Role
from pps.ledger.entry import Actor, EntryDraft
from pps.runtime import Runtime
from pps_client import (
    Client,
    LedgerVerificationError,
    NoteVerifier,
    NotFound,
    PermissionDenied,
    note_verifier,
    verify_checkpoint,
    verify_entry,
)
from tests.conftest import OrgFactory


@pytest.fixture
def world(make_org: OrgFactory, base_url: str) -> dict[str, Client]:
    orgs = {
        "admin": make_org(Role.platform_admin),
        "auditor": make_org(Role.auditor),
        "bank": make_org(Role.bank),
        "subject1": make_org(Role.subject),
        "subject2": make_org(Role.subject),
    }
    return {name: Client(base_url, o.token) for name, o in orgs.items()}


def pinned(base_url: str) -> NoteVerifier:
    return note_verifier(Client(base_url).ledger.public_key().verifier_key)


def test_public_key_is_served_without_credentials(base_url: str, runtime: Runtime) -> None:
    key = Client(base_url).ledger.public_key()
    assert key.verifier_key == runtime.ledger.signer.verifier_key
    assert key.origin == runtime.ledger.origin
    assert key.public_key_pem.startswith("-----BEGIN PUBLIC KEY-----")


def test_checkpoint_json_and_note(
    world: dict[str, Client], base_url: str, http: Callable[..., httpx.Client]
) -> None:
    cp = world["bank"].ledger.checkpoint()
    parsed = verify_checkpoint(cp.note, pinned(base_url))
    assert parsed.tree_size == cp.tree_size > 0
    note = world["bank"].ledger.checkpoint_note()
    assert note == cp.note
    with pytest.raises(LedgerVerificationError):
        verify_checkpoint(cp.note.replace(str(cp.tree_size), str(cp.tree_size + 1), 1), pinned(base_url))


def test_every_entry_proves_against_the_checkpoint(world: dict[str, Client], base_url: str) -> None:
    key = pinned(base_url)
    auditor = world["auditor"]
    size = auditor.ledger.checkpoint().tree_size
    for index in range(size):
        checked = verify_entry(auditor.ledger.entry(index), key)
        assert checked.index == checked.entry.index == index and not checked.redacted
    proven = auditor.ledger.entry(2, tree_size=size)
    verify_entry(proven, key)
    forged = proven.model_copy(update={"entry_b64": proven.entry_b64[:-4] + "AAA="})
    with pytest.raises(LedgerVerificationError) as refused:
        verify_entry(forged, key)
    assert refused.value.reason == "leaf"


def test_consistency_between_checkpoints(world: dict[str, Client], base_url: str) -> None:
    auditor = world["auditor"]
    old = auditor.ledger.checkpoint()
    world["bank"].tokens.issue(world["bank"].me().org.id, label="more")
    new = auditor.ledger.checkpoint()
    assert new.tree_size == old.tree_size + 1
    auditor.ledger.verify_consistency(old.note, new.note, pinned(base_url))
    history = auditor.ledger.checkpoints()
    assert [c.tree_size for c in history][-2:] == [old.tree_size, new.tree_size]


def test_subjects_see_the_entries_that_touch_them_and_nothing_else(
    world: dict[str, Client], base_url: str, runtime: Runtime
) -> None:
    key = pinned(base_url)
    s1 = world["subject1"].me().org
    s2 = world["subject2"].me().org
    with runtime.db.transaction() as s:  # a bank's access to subject 1's data
        runtime.ledger.append(
            s,
            EntryDraft(
                action="score.release",
                actor=Actor("org_b", "bank"),
                subjects=(s1.uscc or "",),
                purpose="loan_underwriting",
            ),
        )
    mine = world["subject1"].ledger.mine()
    docs = [verify_entry(item, key).entry for item in mine.items]
    assert [d.action for d in docs] == [
        "org.create",
        "org.enrolment_code",  # the operator's onboarding gives it a one-time code (issue 24) ...
        "org.enrol",  # ... which the subject redeems itself for its first token
        "token.issue",
        "subject_key.enrol",  # its own consent-signing key, after the real-name step
        "score.release",
    ]
    assert all(s1.uscc in d.subjects for d in docs)
    foreign = world["auditor"].ledger.entries(subject=s2.uscc).items
    assert foreign
    with pytest.raises(NotFound):
        world["subject1"].ledger.entry(foreign[0].index)


def test_banks_see_their_own_actions_only(world: dict[str, Client]) -> None:
    bank = world["bank"]
    bank.tokens.issue(bank.me().org.id, label="rotation")
    mine = bank.ledger.mine().items
    assert [i.entry["action"] for i in mine] == ["org.enrol", "token.issue", "token.issue"]  # its own, all
    with pytest.raises(PermissionDenied) as refused:
        bank.ledger.entries()
    assert refused.value.code == "role_not_allowed"


def test_entry_filters_and_pages(world: dict[str, Client]) -> None:
    auditor = world["auditor"]
    all_entries = auditor.ledger.entries(limit=500).items
    tokens = auditor.ledger.entries(action="token.*", limit=500).items
    assert {e.entry["action"] for e in tokens} == {"token.issue"}
    assert len(tokens) == 5
    page = auditor.ledger.entries(limit=3)
    assert len(page.items) == 3
    assert isinstance(page.next_after, int)
    rest = auditor.ledger.entries(limit=500, after=page.next_after).items
    assert [e.index for e in page.items + rest] == [e.index for e in all_entries]
    since, until = datetime(2000, 1, 1, tzinfo=UTC), datetime(2000, 1, 2, tzinfo=UTC)
    assert auditor.ledger.entries(since=since, until=until).items == []


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


def test_a_subjects_own_actions_are_in_its_history(world: dict[str, Client], base_url: str) -> None:
    subject = world["subject1"]
    me = subject.me()
    spare = subject.tokens.issue(me.org.id, label="spare")
    subject.tokens.revoke(spare.id)
    key = pinned(base_url)
    docs = [verify_entry(item, key).entry for item in subject.ledger.mine().items]
    actions = [d.action for d in docs]
    assert actions == [
        "org.create",
        "org.enrolment_code",
        "org.enrol",
        "token.issue",
        "subject_key.enrol",
        "token.issue",
        "token.revoke",
    ]
    assert all(me.org.uscc in d.subjects for d in docs)  # revocations name the subject too


def test_an_enterprise_sees_a_banks_batch_request_redacted(
    world: dict[str, Client], base_url: str, runtime: Runtime
) -> None:
    """A batch entry names many enterprises; each sees only itself in it (and the proof that it exists)."""
    s1 = world["subject1"].me().org.uscc or ""
    s2 = world["subject2"].me().org.uscc or ""
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
    item = world["subject1"].ledger.mine().items[-1]
    checked = verify_entry(item, key)
    doc = checked.entry
    assert checked.redacted and doc.subjects == [s1] and doc.consent_ids == [] and doc.detail == {}
    assert s2 not in item.model_dump_json() and "cns_b" not in item.model_dump_json()
    assert world["subject1"].ledger.entry(item.index).entry_b64 == ""
    full = world["auditor"].ledger.entry(item.index)
    assert verify_entry(full, key).entry.subjects == sorted([s1, s2])
