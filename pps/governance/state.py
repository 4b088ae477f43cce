"""Governed state rebuilt from the ledger: the reducers for consents, privacy budgets, objections, credit repairs,
record exclusions, subject keys and consent signatures.

Each reducer (:class:`pps.ledger.replay.Reducer`) says which entries change its table and how, and compares the
rebuilt state with the rows; :mod:`pps.ledger.replay` runs them (``pps audit verify --state``, and the service
at start and on a schedule, refusing to act on a divergent consent or budget). What each reducer rebuilds:

=================  ===============================================  ==================================================
table              entries folded                                    columns compared
=================  ===============================================  ==================================================
consents           ``consent.request``, ``consent.grant``,           subject, bank, purpose, scope, operations,
                   ``consent.deny``, ``consent.revoke``;             valid_from (entries since it is recorded),
                   ``policy.release`` (one use per consent named,     valid_until, max_uses, state, revoked_at, uses
                   when the release spends uses)
privacy_budgets    ``aggregate.budget.open``, ``aggregate.budget.set``, total_micro, spent_micro
                   ``aggregate.release``, ``sealed.aggregate``
objections         ``objection.file``, ``objection.accept``,         subject, dataset, provider, filed_version,
                   ``objection.reject``, ``objection.unverifiable``  fields, state, due_at, resolved_at,
                                                                      corrected_version, corrected_fields
repair_            ``repair.apply``, ``repair.approve``,             subject, dataset, dataset_version, record,
applications       ``repair.deny``, ``repair.object``                authority, state, commitment_sha256, due_at,
                                                                      created_at, decided_at; reasons_json and
                                                                      objection_text by the sha256 their entries
                                                                      carry (an approval's note: not compared)
record_exclusions  ``repair.approve`` (reason ``repaired``),         subject, reason, repair_id, excluded_at; a
                   ``record.expire`` (a period ended)                row deleted (a repaired record used again) or
                                                                      added without an entry is named
subject_keys       ``subject_key.enrol``, ``subject_key.revoke``     org, subject, algorithm, public_key (and that the
                   (issue 24)                                        key id is its hash), enrolled_at, revoked_at
consent_signatures ``consent.grant`` (its ``subject_signature``),    consent, action, key, text, signature
                   ``consent.revoke`` when signed (issue 24)
=================  ===============================================  ==================================================

A key or a signature row the ledger does not give is refused like a divergent consent: the policy engine
ignores it (:class:`pps.governance.signatures.ConsentSignatures`), so a consent it would sign decides
``no_grant``. An enrolment entry written before it recorded the public key is compared on the rest.

Entries written before a fact was recorded are read as far as they go: a ``policy.release`` without
``detail.spends_uses`` spends unless it released a PSI result (PSI records without spending); a budget with no
``aggregate.budget.open`` entry takes its total from its first release (remaining + spent) or, with none, is
not checked for its total; a consent granted before ``valid_from`` was recorded is not checked for it.
Other kinds of governed state (disclosure accounting, ...) register their own reducer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from pps.governance.signatures import SIGNATURES_TABLE, SUBJECT_KEYS_TABLE
from pps.infra.storage.tables import (
    Consent,
    ConsentSignature,
    Objection,
    PrivacyBudget,
    RecordExclusion,
    RepairApplication,
    SubjectKey,
)
from pps.ledger.entry import parse_time
from pps.ledger.replay import Divergence, Reducer, count_rows, register, registered

_PAGE = 5_000


def _pages(session: Session, query: Any, key: Any, state: dict[str, Any]) -> Iterator[Any]:
    """Rows of ``query`` in ``key`` order, a page at a time (keyset pagination: bounded memory), counted."""
    after: Any = None
    while True:
        q = query if after is None else query.where(key > after)
        rows = session.execute(q.order_by(key).limit(_PAGE)).all()
        count_rows(state, len(rows))
        yield from rows
        if len(rows) < _PAGE:
            return
        after = rows[-1][0]


class _Parsed:
    """``json.loads`` of the stored JSON documents, once per distinct text (a bank's consents share theirs)."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def __call__(self, text: str | None) -> Any:
        if text is None:
            return None
        hit = self._cache.get(text, _MISSING)
        if hit is _MISSING:
            hit = self._cache[text] = json.loads(text)
        return hit


_MISSING = object()
_CONSENT_COLUMNS = (
    "subject_uscc",
    "bank_org_id",
    "purpose",
    "scope",
    "operations",
    "valid_from",
    "valid_until",
    "max_uses",
    "state",
    "revoked_at",
    "uses",
)


def _time(text: str | None) -> Any:
    return parse_time(text) if text else None


# --- consents ----------------------------------------------------------------------------------------------------


class ConsentReducer:
    name = "consents"
    table = "consents"
    actions = frozenset(
        {"consent.request", "consent.grant", "consent.deny", "consent.revoke", "policy.release"}
    )

    def fold(self, state: dict[str, Any], doc: dict[str, Any]) -> None:
        action = doc["action"]
        rows: dict[str, dict[str, Any]] = state.setdefault("rows", {})
        if action == "policy.release":
            detail = doc.get("detail") or {}
            spends = detail.get("spends_uses")
            if spends is None:  # entries written before the flag: PSI releases record without spending
                spends = not any(str(r.get("what", "")).startswith("psi:") for r in doc.get("released", []))
            if spends:
                uses: dict[str, int] = state.setdefault("uses", {})
                for cid in doc.get("consent_ids", []):
                    uses[cid] = uses.get(cid, 0) + 1
            return
        ids = [o["id"] for o in doc.get("objects", []) if o.get("kind") == "consent"]
        if not ids:
            return
        cid = ids[0]
        detail = doc.get("detail") or {}
        row = rows.setdefault(cid, {})
        if action in ("consent.request", "consent.grant"):
            row.update(
                subject_uscc=(doc.get("subjects") or [None])[0],
                bank_org_id=detail.get("bank"),
                purpose=doc.get("purpose"),
                scope=detail.get("scope"),
                operations=detail.get("operations"),
                valid_until=_time(detail.get("valid_until")),
                max_uses=detail.get("max_uses"),
                state="requested" if action == "consent.request" else "active",
            )
            if "valid_from" in detail:
                row["valid_from"] = _time(detail["valid_from"])
        elif action == "consent.deny":
            row["state"] = "denied"
        elif action == "consent.revoke":
            row["state"] = "revoked"
            row["revoked_at"] = parse_time(doc["time"])

    def compare(self, session: Session, state: dict[str, Any]) -> Iterator[Divergence]:
        rows: dict[str, dict[str, Any]] = state.get("rows", {})
        uses: dict[str, int] = state.get("uses", {})
        seen: set[str] = set()
        query = select(
            Consent.id,
            Consent.subject_uscc,
            Consent.bank_org_id,
            Consent.purpose,
            Consent.scope_json,
            Consent.operations_json,
            Consent.valid_from,
            Consent.valid_until,
            Consent.max_uses,
            Consent.uses,
            Consent.state,
            Consent.revoked_at,
        )
        parsed = _Parsed()
        for r in _pages(session, query, Consent.id, state):
            seen.add(r.id)
            want = rows.get(r.id)
            if want is None or "state" not in want:
                yield Divergence(self.table, r.id, "*", None, "present")
                continue
            have = (
                r.subject_uscc,
                r.bank_org_id,
                r.purpose,
                parsed(r.scope_json),
                parsed(r.operations_json),
                r.valid_from if "valid_from" in want else None,  # not recorded before: not compared
                r.valid_until,
                r.max_uses,
                r.state.value,
                r.revoked_at,
                r.uses,
            )
            expected = (
                want.get("subject_uscc"),
                want.get("bank_org_id"),
                want.get("purpose"),
                want.get("scope"),
                want.get("operations"),
                want.get("valid_from"),
                want.get("valid_until"),
                want.get("max_uses"),
                want["state"],
                want.get("revoked_at"),
                uses.get(r.id, 0),
            )
            if have == expected:
                continue
            for column, value, stored in zip(_CONSENT_COLUMNS, expected, have, strict=True):
                if stored != value:
                    yield Divergence(self.table, r.id, _column(column), value, stored)
        for cid in sorted(set(rows) - seen):
            yield Divergence(self.table, cid, "*", "recorded", None)


def _column(name: str) -> str:
    return {"scope": "scope_json", "operations": "operations_json"}.get(name, name)


# --- privacy budgets -------------------------------------------------------------------------------------------


BUDGETS_TABLE = "privacy_budgets"


class BudgetReducer:
    name = BUDGETS_TABLE
    table = BUDGETS_TABLE
    actions = frozenset(
        {"aggregate.budget.open", "aggregate.budget.set", "aggregate.release", "sealed.aggregate"}
    )

    def fold(self, state: dict[str, Any], doc: dict[str, Any]) -> None:
        action = doc["action"]
        detail = doc.get("detail") or {}
        if action in ("aggregate.budget.open", "aggregate.budget.set"):
            banks = [o["id"] for o in doc.get("objects", []) if o.get("kind") == "org"]
            if not banks:
                return
            b = state.setdefault(banks[0], {"total": None, "spent": 0})
            b["total"] = int(detail["total_micro"])
            return
        bank = detail.get("bank") or (doc.get("actor") or {}).get("org")
        if not bank:
            return
        b = state.setdefault(bank, {"total": None, "spent": 0})
        b["spent"] += int(detail.get("epsilon_micro") or 0)
        if b["total"] is None and "budget_remaining_micro" in detail:
            # a budget opened before its opening was recorded: its total is what remained plus what was spent
            b["total"] = int(detail["budget_remaining_micro"]) + b["spent"]

    def compare(self, session: Session, state: dict[str, Any]) -> Iterator[Divergence]:
        seen: set[str] = set()
        query = select(PrivacyBudget.bank_org_id, PrivacyBudget.total_micro, PrivacyBudget.spent_micro)
        for r in _pages(session, query, PrivacyBudget.bank_org_id, state):
            seen.add(r.bank_org_id)
            want = state.get(r.bank_org_id)
            if want is None:
                if r.spent_micro != 0:  # a spend no entry records
                    yield Divergence(self.table, r.bank_org_id, "spent_micro", 0, int(r.spent_micro))
                continue  # a row opened before openings were recorded, never used: its total is unknown
            if want["total"] is not None and int(r.total_micro) != want["total"]:
                yield Divergence(self.table, r.bank_org_id, "total_micro", want["total"], int(r.total_micro))
            if int(r.spent_micro) != want["spent"]:
                yield Divergence(self.table, r.bank_org_id, "spent_micro", want["spent"], int(r.spent_micro))
        for bank in sorted({k for k in state if not k.startswith("__")} - seen):
            yield Divergence(self.table, bank, "*", "recorded", None)


# --- objections ------------------------------------------------------------------------------------------------


class ObjectionReducer:
    name = "objections"
    table = "objections"
    actions = frozenset({"objection.file", "objection.accept", "objection.reject", "objection.unverifiable"})

    def fold(self, state: dict[str, Any], doc: dict[str, Any]) -> None:
        ids = [o["id"] for o in doc.get("objects", []) if o.get("kind") == "objection"]
        if not ids:
            return
        detail = doc.get("detail") or {}
        action = doc["action"]
        if action == "objection.file":
            datasets = [o["id"] for o in doc.get("objects", []) if o.get("kind") == "dataset"]
            state[ids[0]] = {
                "subject_uscc": (doc.get("subjects") or [None])[0],
                "dataset_id": datasets[0] if datasets else None,
                "provider_org_id": detail.get("provider"),
                "filed_version": detail.get("version"),
                "fields": detail.get("fields"),
                "state": "open",
                "due_at": _time(detail.get("due_at")),
                "resolved_at": None,
                "corrected_version": None,
                "corrected_fields": None,
            }
            return
        row = state.setdefault(ids[0], {})
        row["resolved_at"] = parse_time(doc["time"])
        if action == "objection.accept":
            row.update(
                state="accepted",
                corrected_version=detail.get("version"),
                corrected_fields=detail.get("changed"),
            )
        elif action == "objection.unverifiable":
            row["state"] = "unverifiable"  # 征信业管理条例 Art. 25's third outcome: kept, annotated
        else:
            row["state"] = "rejected"

    def compare(self, session: Session, state: dict[str, Any]) -> Iterator[Divergence]:
        seen: set[str] = set()
        query = select(
            Objection.id,
            Objection.subject_uscc,
            Objection.dataset_id,
            Objection.provider_org_id,
            Objection.filed_version,
            Objection.fields_json,
            Objection.state,
            Objection.due_at,
            Objection.resolved_at,
            Objection.corrected_version,
            Objection.corrected_fields_json,
        )
        for r in _pages(session, query, Objection.id, state):
            seen.add(r.id)
            want = state.get(r.id)
            if want is None or "state" not in want or "subject_uscc" not in want:
                yield Divergence(self.table, r.id, "*", None, "present")
                continue
            have = {
                "subject_uscc": r.subject_uscc,
                "dataset_id": r.dataset_id,
                "provider_org_id": r.provider_org_id,
                "filed_version": r.filed_version,
                "fields": json.loads(r.fields_json),
                "state": r.state.value,
                "due_at": r.due_at,
                "resolved_at": r.resolved_at,
                "corrected_version": r.corrected_version,
                "corrected_fields": json.loads(r.corrected_fields_json) if r.corrected_fields_json else None,
            }
            for column, value in want.items():
                if have[column] != value:
                    name = {"fields": "fields_json", "corrected_fields": "corrected_fields_json"}.get(
                        column, column
                    )
                    yield Divergence(self.table, r.id, name, value, have[column])
        for oid in sorted({k for k in state if not k.startswith("__")} - seen):
            yield Divergence(self.table, oid, "*", "recorded", None)


# --- subject keys and consent signatures (issue 24) ----------------------------------------------------------


class SubjectKeyReducer:
    name = SUBJECT_KEYS_TABLE
    table = SUBJECT_KEYS_TABLE
    actions = frozenset({"subject_key.enrol", "subject_key.revoke"})

    def fold(self, state: dict[str, Any], doc: dict[str, Any]) -> None:
        detail = doc.get("detail") or {}
        kid = detail.get("key_id")
        if not kid:
            return
        if doc["action"] == "subject_key.enrol":
            orgs = [o["id"] for o in doc.get("objects", []) if o.get("kind") == "org"]
            state[kid] = {
                "org_id": orgs[0] if orgs else None,
                "subject_uscc": (doc.get("subjects") or [None])[0],
                "algorithm": detail.get("algorithm"),
                "public_key": detail.get("public_key"),
                "enrolled_at": parse_time(doc["time"]),
                "revoked_at": None,
            }
        else:
            state.setdefault(kid, {})["revoked_at"] = parse_time(doc["time"])

    def compare(self, session: Session, state: dict[str, Any]) -> Iterator[Divergence]:
        from pps_wire.subject_sign import b64, key_id

        seen: set[str] = set()
        query = select(
            SubjectKey.key_id,
            SubjectKey.org_id,
            SubjectKey.subject_uscc,
            SubjectKey.algorithm,
            SubjectKey.public_key,
            SubjectKey.enrolled_at,
            SubjectKey.revoked_at,
        )
        for r in _pages(session, query, SubjectKey.key_id, state):
            seen.add(r.key_id)
            want = state.get(r.key_id)
            if want is None or "algorithm" not in want:
                yield Divergence(self.table, r.key_id, "*", None, "present")
                continue
            public = b64(bytes(r.public_key))
            if key_id(r.algorithm, bytes(r.public_key)) != r.key_id:
                yield Divergence(self.table, r.key_id, "public_key", "the key id's public key", public)
            have = {
                "org_id": r.org_id,
                "subject_uscc": r.subject_uscc,
                "algorithm": r.algorithm,
                "public_key": public,
                "enrolled_at": r.enrolled_at,
                "revoked_at": r.revoked_at,
            }
            for column, value in want.items():
                if column == "public_key" and value is None:
                    continue  # enrolled before the entry recorded it: the key id's hash still binds it
                if have[column] != value:
                    yield Divergence(self.table, r.key_id, column, value, have[column])
        for kid in sorted({k for k in state if not k.startswith("__")} - seen):
            yield Divergence(self.table, kid, "*", "recorded", None)


class SignatureReducer:
    """The subject's signatures, as the grant, approval and signed revocation entries carry them; keyed by
    (consent, nonce of the signed text), since the row ids are not in the entries."""

    name = SIGNATURES_TABLE
    table = SIGNATURES_TABLE
    actions = frozenset({"consent.grant", "consent.revoke"})

    def fold(self, state: dict[str, Any], doc: dict[str, Any]) -> None:
        sig = (doc.get("detail") or {}).get("subject_signature")
        ids = [o["id"] for o in doc.get("objects", []) if o.get("kind") == "consent"]
        if not sig or not ids:
            return
        try:
            signed = json.loads(sig["text"])
        except (ValueError, KeyError, TypeError):
            signed = {}
        state[f"{ids[0]}|{signed.get('nonce')}"] = {
            "consent_id": ids[0],
            "action": signed.get("action"),
            "key_id": sig.get("key_id"),
            "text": sig.get("text"),
            "signature": sig.get("signature"),
        }

    def compare(self, session: Session, state: dict[str, Any]) -> Iterator[Divergence]:
        seen: set[str] = set()
        query = select(
            ConsentSignature.id,
            ConsentSignature.consent_id,
            ConsentSignature.action,
            ConsentSignature.key_id,
            ConsentSignature.text,
            ConsentSignature.signature,
            ConsentSignature.nonce,
        )
        for r in _pages(session, query, ConsentSignature.id, state):
            ref = f"{r.consent_id}|{r.nonce}"
            want = state.get(ref)
            if want is None or ref in seen:  # no entry, or a second row for one entry's signature
                yield Divergence(self.table, r.id, "*", None, "present")
                continue
            seen.add(ref)
            have = {
                "consent_id": r.consent_id,
                "action": r.action,
                "key_id": r.key_id,
                "text": r.text,
                "signature": r.signature,
            }
            for column, value in want.items():
                if have[column] != value:
                    yield Divergence(self.table, r.id, column, value, have[column])
        for ref in sorted({k for k in state if not k.startswith("__")} - seen):
            yield Divergence(self.table, ref, "*", "recorded", None)


# --- credit repairs ---------------------------------------------------------------------------------------------


def _object(doc: dict[str, Any], kind: str) -> str | None:
    ids = [o["id"] for o in doc.get("objects", []) if o.get("kind") == kind]
    return ids[0] if ids else None


def _sha256(text: str | None) -> str | None:
    return hashlib.sha256(text.encode()).hexdigest() if text is not None else None


class RepairReducer:
    """Credit-repair applications (:mod:`pps.governance.repair`): who applied for which record, under which
    commitment, to which authority, by when, and what was decided. The texts that are not on the ledger (the
    denial reasons, the objection) are compared by the digests their entries carry; an approval's note is on
    no entry and not compared."""

    name = "repair_applications"
    table = "repair_applications"
    actions = frozenset({"repair.apply", "repair.approve", "repair.deny", "repair.object"})

    def fold(self, state: dict[str, Any], doc: dict[str, Any]) -> None:
        app_id = _object(doc, "repair")
        if app_id is None:
            return
        detail = doc.get("detail") or {}
        action = doc["action"]
        at = parse_time(doc["time"])
        if action == "repair.apply":
            state[app_id] = {
                "subject_uscc": (doc.get("subjects") or [None])[0],
                "dataset_id": _object(doc, "dataset"),
                "dataset_version": detail.get("version"),
                "record_id": _object(doc, "record"),
                "authority_org_id": detail.get("authority"),
                "state": "pending",
                "commitment_sha256": detail.get("commitment_sha256"),
                "due_at": _time(detail.get("due_at")),
                "created_at": at,
                "decided_at": None,
                "reasons_sha256": _sha256("[]"),
                "objection_sha256": None,
            }
            return
        row = state.setdefault(app_id, {})
        if action == "repair.approve":
            # the note becomes the reasons; it is on no entry: not compared from here on
            row.update(state="approved", decided_at=at, reasons_sha256=_UNKNOWN)
        elif action == "repair.deny":
            row.update(state="denied", decided_at=at, reasons_sha256=detail.get("reasons_sha256", _UNKNOWN))
        elif action == "repair.object":
            row.update(
                state="reconsidering",
                due_at=_time(detail.get("due_at")),
                objection_sha256=detail.get("text_sha256", _UNKNOWN),
            )

    def compare(self, session: Session, state: dict[str, Any]) -> Iterator[Divergence]:
        seen: set[str] = set()
        query = select(
            RepairApplication.id,
            RepairApplication.subject_uscc,
            RepairApplication.dataset_id,
            RepairApplication.dataset_version,
            RepairApplication.record_id,
            RepairApplication.authority_org_id,
            RepairApplication.state,
            RepairApplication.commitment_sha256,
            RepairApplication.due_at,
            RepairApplication.created_at,
            RepairApplication.decided_at,
            RepairApplication.reasons_json,
            RepairApplication.objection_text,
        )
        for r in _pages(session, query, RepairApplication.id, state):
            seen.add(r.id)
            want = state.get(r.id)
            if want is None or "subject_uscc" not in want:
                yield Divergence(self.table, r.id, "*", None, "present")
                continue
            have = {
                "subject_uscc": r.subject_uscc,
                "dataset_id": r.dataset_id,
                "dataset_version": r.dataset_version,
                "record_id": r.record_id,
                "authority_org_id": r.authority_org_id,
                "state": r.state.value,
                "commitment_sha256": bytes(r.commitment_sha256).hex(),
                "due_at": r.due_at,
                "created_at": r.created_at,
                "decided_at": r.decided_at,
                "reasons_sha256": _sha256(r.reasons_json or "[]"),
                "objection_sha256": _sha256(r.objection_text),
            }
            for column, value in want.items():
                if value is not _UNKNOWN and have[column] != value:
                    name = {
                        "reasons_sha256": "reasons_json",
                        "objection_sha256": "objection_text",
                    }.get(column, column)
                    yield Divergence(self.table, r.id, name, value, have[column])
        for app_id in sorted({k for k in state if not k.startswith("__")} - seen):
            yield Divergence(self.table, app_id, "*", "recorded", None)


_UNKNOWN: Any = object()
"""A value no entry records (an approval's note): not compared."""


# --- record exclusions -----------------------------------------------------------------------------------------


def exclusion_id(dataset_id: str, record_id: str) -> str:
    """How a record exclusion is named in a divergence: ``<dataset id>:<record id>``."""
    return f"{dataset_id}:{record_id}"


class ExclusionReducer:
    """Dishonesty records no longer used (:mod:`pps.governance.records`): excluded by an approved repair
    (``repair.approve``) or written down when a period ended (``record.expire``). A deleted exclusion would
    bring a repaired record back into every score: the row the ledger records and the table lacks is named."""

    name = "record_exclusions"
    table = "record_exclusions"
    actions = frozenset({"repair.approve", "record.expire"})

    def fold(self, state: dict[str, Any], doc: dict[str, Any]) -> None:
        dataset_id, record_id = _object(doc, "dataset"), _object(doc, "record")
        if dataset_id is None or record_id is None:
            return
        key = exclusion_id(dataset_id, record_id)
        if key in state:  # written once: a repair of a record already expired adds no row
            return
        detail = doc.get("detail") or {}
        subject = (doc.get("subjects") or [None])[0]
        if doc["action"] == "repair.approve":
            state[key] = {
                "subject_uscc": subject,
                "reason": "repaired",
                "repair_id": _object(doc, "repair"),
                "excluded_at": _time(detail.get("excluded_from")) or parse_time(doc["time"]),
            }
        else:
            state[key] = {
                "subject_uscc": subject,
                "reason": detail.get("reason"),
                "repair_id": None,
                "excluded_at": _time(detail.get("at")) or parse_time(doc["time"]),
            }

    def compare(self, session: Session, state: dict[str, Any]) -> Iterator[Divergence]:
        seen: set[str] = set()
        columns = (
            RecordExclusion.dataset_id,
            RecordExclusion.record_id,
            RecordExclusion.subject_uscc,
            RecordExclusion.reason,
            RecordExclusion.repair_id,
            RecordExclusion.excluded_at,
        )
        after: tuple[str, str] | None = None
        while True:  # keyset pages over the two-column key
            query = select(*columns).order_by(RecordExclusion.dataset_id, RecordExclusion.record_id)
            if after is not None:
                query = query.where(tuple_(RecordExclusion.dataset_id, RecordExclusion.record_id) > after)
            rows = session.execute(query.limit(_PAGE)).all()
            count_rows(state, len(rows))
            for r in rows:
                key = exclusion_id(r.dataset_id, r.record_id)
                seen.add(key)
                want = state.get(key)
                if want is None:
                    yield Divergence(self.table, key, "*", None, "present")
                    continue
                have = {
                    "subject_uscc": r.subject_uscc,
                    "reason": r.reason,
                    "repair_id": r.repair_id,
                    "excluded_at": r.excluded_at,
                }
                for column, value in want.items():
                    if have[column] != value:
                        yield Divergence(self.table, key, column, value, have[column])
            if len(rows) < _PAGE:
                break
            after = (rows[-1].dataset_id, rows[-1].record_id)
        for key in sorted({k for k in state if not k.startswith("__")} - seen):
            yield Divergence(self.table, key, "*", "recorded", None)


def registered_reducers() -> tuple[Reducer, ...]:
    """Every registered reducer: these, and any a later kind of governed state registered."""
    return registered()


CONSENTS = register(ConsentReducer())
BUDGETS = register(BudgetReducer())
OBJECTIONS = register(ObjectionReducer())
SUBJECT_KEYS = register(SubjectKeyReducer())
SIGNATURES = register(SignatureReducer())
REPAIRS = register(RepairReducer())
EXCLUSIONS = register(ExclusionReducer())
