"""Objections and corrections (异议申诉、信用修复): a subject disputes its own record, the provider answers.

The flow
--------
1. **File** (:meth:`ObjectionService.file`, the subject): from its own records (``GET /v1/me/records``) an
   enterprise names a dataset, the record (its own USCC plus the record's period or record key value when the
   dataset has one) and the non-key fields it disputes, with a reason and optionally one evidence file (PDF,
   PNG or JPEG, checked by :func:`pps.governance.evidence.check_evidence`). A subject may dispute any non-key field of
   its own record, C3 included — it is its own data. The objection records the dataset version it was filed
   against and gets a deadline: ``PPS_OBJECTION_RESPONSE_DAYS`` (default 15) days.
2. **Open**: while open, the disputed fields of that subject are *marked*. A scoring result's header lists,
   for each scored subject whose open objections touch a field the model reads, the subject, the dataset and
   the field names (``disputed``); an aggregate answer says per cell whether any member has such an input
   (``disputed_inputs``, never who). Nothing is withheld: the flag lets the bank weigh the value.
3. **Resolve** (the dataset's provider, once): **accept** with corrected values for the disputed fields
   (checked against the schema's types) — a new dataset version is made from the current one with the record
   patched, under a new data key (:meth:`pps.data.datasets.service.DatasetService.correct`); old versions stay — or
   **reject** with a reason. Open objections past their deadline are *overdue*: the operator lists them
   (``GET /v1/objections?overdue=true``, ``pps admin objections --overdue``); a late answer is still taken and
   marked late in the ledger.
4. **Notify**: on acceptance, every ``policy.release`` entry that named the subject as released (its consent
   among the entry's), read a corrected field of this dataset and came before the correction gets a
   *correction notice* for the bank that received it: which result (job), which subject, which fields — never
   a value. Aggregate releases are left out: a notice would tell the bank that the subject was in the cohort,
   which aggregate answers never reveal. The bank lists its notices (``GET /v1/corrections``) and can score
   again; the subject sees a ``correction.notice`` entry naming the banks notified.

States: ``open`` → ``accepted`` | ``rejected`` | ``unverifiable`` (terminal; a second resolution is a conflict).

**Cannot be verified** (《征信业管理条例》 Art. 25: the third outcome): the provider could not establish whether
the value is right. The record is kept and *annotated*: the objection and the provider's note travel with it —
every scoring result header lists, for a scored subject, the annotated fields the model read
(``annotated``), and every aggregate cell says whether a member has such an input (``annotated_inputs``).
The response deadline is at most 20 days (``PPS_OBJECTION_RESPONSE_DAYS`` is refused above 20, Art. 25).

Who sees what
-------------
* The **subject** sees its own objections, their deadlines and answers, its evidence, and every step in its
  ledger history (``GET /v1/audit/mine``: ``objection.file``, ``objection.accept`` / ``objection.reject``,
  ``dataset.correct``, ``correction.notice``, ``objection.evidence`` when the provider opens the evidence).
* The **provider** sees the objections on its own datasets (subject, record, fields, reason, evidence) — data it
  already holds; another provider's objections answer 404.
* **Admins and auditors** see every objection's metadata and the reason (oversight of deadlines); not the
  evidence.
* A **bank** sees only the dispute flags in its results and its correction notices.

At rest: the record key value, the reason and the provider's note are sealed (AES-256-GCM) under the
objection's own data key, wrapped by the KMS like a dataset version's; so is the evidence. Field names, states
and times are in the clear. Corrected values exist only in the new dataset version; no ledger entry, notice or
response holds a value.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pps.data.datasets import codec
from pps.data.datasets.schema import DatasetSchema, Sensitivity
from pps.data.datasets.service import DatasetService, check_values
from pps.errors import Conflict, InvalidInput, NotFound
from pps.governance.casework import is_overdue_case, list_cases
from pps.governance.evidence import check_evidence
from pps.infra.kms import KeyEncryptionKeys, WrappedKey, new_data_key
from pps.infra.storage.tables import (
    Consent,
    CorrectionNotice,
    Dataset,
    Objection,
    ObjectionEvidence,
    ObjectionState,
    Organization,
    Role,
    new_id,
    utcnow,
)
from pps.ledger.entry import Actor, EntryDraft, ObjectRef, format_time, parse_time
from pps.ledger.store import EntryFilter, Ledger

MAX_REASON = 2000
MAX_FIELDS = 50
MAX_KEY = 4000
NOTICES_LISTED = 200
"""Results named one by one in a ``correction.notice`` entry (the count covers them all)."""
UNCOUNTED_OPERATIONS = frozenset({"aggregate"})
"""Releases that never get a correction notice: naming the subject would reveal cohort membership."""


@dataclass(frozen=True)
class Evidence:
    media_type: str
    data: bytes


@dataclass(frozen=True)
class Sealed:
    """What is sealed in an objection: the record key value, the subject's reason, the provider's note."""

    record_key: str | None
    reason: str
    note: str | None = None


@dataclass(frozen=True)
class Resolution:
    objection: Objection
    notices: list[CorrectionNotice]


def _dek_aad(objection_id: str) -> bytes:
    return f"pps/objection-dek/v1|{objection_id}".encode()


def _text_aad(objection_id: str) -> bytes:
    return f"pps/objection/v1|{objection_id}".encode()


def _evidence_aad(objection_id: str, media_type: str, size: int) -> bytes:
    return f"pps/objection-evidence/v1|{objection_id}|{media_type}|{size}".encode()


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


OPEN_STATES = (ObjectionState.open,)


def is_overdue(objection: Objection, now: datetime) -> bool:
    return is_overdue_case(objection.state, objection.due_at, OPEN_STATES, now)


def affected_releases(
    ledger: Ledger, session: Session, uscc: str, dataset_id: str, fields: Sequence[str]
) -> list[tuple[int, dict[str, Any], list[str]]]:
    """``(ledger index, entry, fields it read)`` of every release so far that released ``uscc``'s result computed
    with one of ``fields`` of the dataset (aggregates excepted: a notice would reveal cohort membership).

    One per result: a computation that released in steps (a vertical training: its first batch's intermediate
    values, then the model) is named once, by its last release."""
    found: list[tuple[int, dict[str, Any], list[str]]] = []
    after: int | None = None
    wanted = set(fields)
    while True:
        page = ledger.entries(
            session,
            EntryFilter(subject=uscc, action="policy.release", object=("dataset", dataset_id)),
            after=after,
            limit=500,
        )
        for stored in page:
            doc = json.loads(stored.entry)
            detail = doc.get("detail") or {}
            used = sorted(wanted & set((detail.get("fields") or {}).get(dataset_id, ())))
            if not used or not doc.get("released") or detail.get("operation") in UNCOUNTED_OPERATIONS:
                continue
            consents = list(doc.get("consent_ids") or ())
            released_here = (
                consents
                and session.execute(
                    select(func.count()).where(Consent.id.in_(consents), Consent.subject_uscc == uscc)
                ).scalar_one()
            )
            if released_here:
                found.append((stored.index, doc, used))
        if len(page) < 500:
            break
        after = page[-1].index
    last: dict[tuple[str, str, str], tuple[int, dict[str, Any], list[str]]] = {}
    for hit in found:  # in ledger order: a later release of the same result replaces the earlier
        doc = hit[1]
        result = (doc.get("objects") or [{}])[0]
        bank = str((doc.get("detail") or {}).get("bank") or (doc.get("released") or [{}])[0].get("to"))
        last[(str(result.get("kind")), str(result.get("id")), bank)] = hit
    return sorted(last.values(), key=lambda hit: hit[0])


def open_disputes(
    session: Session,
    subjects: Iterable[str] | None,
    fields: Mapping[str, Sequence[str]],
    *,
    state: ObjectionState = ObjectionState.open,
) -> dict[str, dict[str, list[str]]]:
    """Open objections touching ``fields`` (dataset id -> field names read by a computation), per subject:
    ``{uscc: {dataset_id: [disputed field names read]}}`` — only for ``subjects`` if given. With
    ``state=unverifiable``: the annotated fields (objections that could not be verified) instead."""
    if not fields:
        return {}
    wanted = None if subjects is None else set(subjects)
    rows = session.execute(
        select(Objection.subject_uscc, Objection.dataset_id, Objection.fields_json).where(
            Objection.state == state, Objection.dataset_id.in_(sorted(fields))
        )
    ).all()
    found: dict[str, dict[str, set[str]]] = {}
    for uscc, dataset_id, fields_json in rows:
        if wanted is not None and uscc not in wanted:
            continue
        touched = set(json.loads(fields_json)) & set(fields[dataset_id])
        if touched:
            found.setdefault(uscc, {}).setdefault(dataset_id, set()).update(touched)
    return {u: {d: sorted(f) for d, f in sorted(by.items())} for u, by in sorted(found.items())}


class ObjectionService:
    def __init__(
        self,
        ledger: Ledger,
        kms: KeyEncryptionKeys,
        datasets: DatasetService,
        *,
        response_days: int = 15,
        evidence_max_bytes: int = 2 << 20,
    ) -> None:
        self.ledger = ledger
        self.kms = kms
        self.datasets = datasets
        self.response = timedelta(days=response_days)
        self.evidence_max_bytes = evidence_max_bytes

    # --- sealing -------------------------------------------------------------------------------------

    def _dek(self, objection: Objection) -> bytes:
        return self.kms.unwrap(
            WrappedKey(objection.kek_version, objection.wrapped_dek), _dek_aad(objection.id)
        )

    def sealed(self, objection: Objection) -> Sealed:
        doc = json.loads(codec.open_sealed(self._dek(objection), _text_aad(objection.id), objection.sealed))
        return Sealed(doc["record_key"], doc["reason"], doc.get("note"))

    def _seal(self, objection_id: str, dek: bytes, texts: Sealed) -> bytes:
        doc = {"record_key": texts.record_key, "reason": texts.reason, "note": texts.note}
        return codec.seal(dek, _text_aad(objection_id), _canonical(doc))

    # --- filing --------------------------------------------------------------------------------------

    def file(
        self,
        session: Session,
        *,
        subject: Organization,
        dataset_id: str,
        record_key: str | None,
        fields: Sequence[str],
        reason: str,
        evidence: Evidence | None = None,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> Objection:
        """A subject disputes fields of its own record. Refused (nothing stored) if the record is not its own
        (answered like a record that does not exist), a field is unknown or a key, or the evidence fails."""
        if subject.role is not Role.subject or subject.uscc is None:
            raise InvalidInput("only an enterprise (a subject organisation) files objections")
        reason = reason.strip()
        if not reason or len(reason) > MAX_REASON:
            raise InvalidInput(f"give a reason of 1 to {MAX_REASON} characters")
        if record_key is not None and not 0 < len(record_key) <= MAX_KEY:
            raise InvalidInput(f"record_key must have 1 to {MAX_KEY} characters")
        names = sorted(set(fields))
        if not names or len(names) > MAX_FIELDS or len(names) != len(fields):
            raise InvalidInput(f"name 1 to {MAX_FIELDS} disputed fields, each once")
        media_type = None
        if evidence is not None:
            media_type = check_evidence(evidence.data, evidence.media_type, max_bytes=self.evidence_max_bytes)
        uscc = subject.uscc
        not_found = NotFound(f"you have no such record in dataset {dataset_id}")
        ds = session.get(Dataset, dataset_id)
        if ds is None or ds.deleted_at is not None:
            raise not_found
        version = self.datasets.current(session, ds)
        if version is None or version.wrapped_dek is None:
            raise not_found
        schema = DatasetSchema.model_validate_json(version.schema_json)
        extra = schema.period_key or schema.record_key
        if extra is None and record_key is not None:
            raise InvalidInput(f"dataset {ds.id} holds one record per enterprise: give no record_key")
        if extra is not None and record_key is None:
            raise InvalidInput(f"dataset {ds.id} is keyed by {extra}: give its value as record_key")
        keys = set(schema.key_columns)
        for name in names:
            try:
                schema.column(name)
            except KeyError:
                raise InvalidInput(f"dataset {ds.id} has no field {name!r}") from None
            if name in keys:
                raise InvalidInput(
                    f"{name!r} is a key field: it identifies the record; dispute the values, or ask the "
                    "provider about a record that is not yours"
                )
        if self.datasets.locate(session, version, uscc, record_key) is None:
            raise not_found
        for other in session.execute(
            select(Objection).where(
                Objection.subject_uscc == uscc,
                Objection.dataset_id == ds.id,
                Objection.state == ObjectionState.open,
            )
        ).scalars():
            clash = set(json.loads(other.fields_json)) & set(names)
            if clash and self.sealed(other).record_key == record_key:
                raise Conflict(
                    f"objection {other.id} already disputes {', '.join(sorted(clash))} of this record; "
                    "wait for its answer"
                )
        now = now or utcnow()
        objection_id = new_id("obj")
        dek = new_data_key()
        wrapped = self.kms.wrap(dek, _dek_aad(objection_id))
        objection = Objection(
            id=objection_id,
            subject_uscc=uscc,
            subject_org_id=subject.id,
            dataset_id=ds.id,
            provider_org_id=ds.provider_org_id,
            filed_version=version.version,
            fields_json=json.dumps(names),
            state=ObjectionState.open,
            kek_version=wrapped.kek_version,
            wrapped_dek=wrapped.blob,
            sealed=self._seal(objection_id, dek, Sealed(record_key, reason)),
            has_evidence=evidence is not None,
            due_at=now + self.response,
            created_at=now,
        )
        session.add(objection)
        session.flush()
        evidence_detail = None
        if evidence is not None and media_type is not None:
            size = len(evidence.data)
            digest = hashlib.sha256(evidence.data).digest()
            session.add(
                ObjectionEvidence(
                    objection_id=objection_id,
                    media_type=media_type,
                    size_bytes=size,
                    sha256=digest,
                    ciphertext=codec.seal(dek, _evidence_aad(objection_id, media_type, size), evidence.data),
                )
            )
            session.flush()
            evidence_detail = {"media_type": media_type, "bytes": size, "sha256": digest.hex()}
        key_class = schema.column(extra).sensitivity if extra else None
        self.ledger.append(
            session,
            EntryDraft(
                action="objection.file",
                actor=actor,
                objects=(
                    ObjectRef("objection", objection_id),
                    ObjectRef("dataset", ds.id),
                    ObjectRef("dataset_version", f"{ds.id}@{version.version}"),
                ),
                subjects=(uscc,),
                request_id=request_id,
                detail={
                    "provider": ds.provider_org_id,
                    "version": version.version,
                    "fields": names,
                    "record": {
                        "key": extra,
                        # a C2/C3 key value (e.g. a court case id) stays out of the ledger
                        "value": record_key if key_class is Sensitivity.C1 else None,
                    },
                    "due_at": format_time(objection.due_at),
                    "evidence": evidence_detail,
                    "reason_sha256": hashlib.sha256(reason.encode()).hexdigest(),
                },
            ),
            now=now,
        )
        return objection

    # --- reads ---------------------------------------------------------------------------------------

    def get(self, session: Session, objection_id: str) -> Objection:
        objection = session.get(Objection, objection_id)
        if objection is None:
            raise NotFound(f"objection {objection_id} does not exist")
        return objection

    def list_objections(
        self,
        session: Session,
        *,
        subject_uscc: str | None = None,
        provider_org_id: str | None = None,
        state: ObjectionState | None = None,
        overdue: bool | None = None,
        now: datetime | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> list[Objection]:
        return list_cases(
            session,
            Objection,
            equal=((Objection.subject_uscc, subject_uscc), (Objection.provider_org_id, provider_org_id)),
            state=state,
            open_states=OPEN_STATES,
            overdue=overdue,
            now=now or utcnow(),
            after=after,
            limit=limit,
        )

    def evidence(
        self,
        session: Session,
        objection: Objection,
        *,
        actor: Actor,
        request_id: str | None = None,
    ) -> Evidence:
        """Open the evidence (the subject or the provider); the reading is a ledger entry the subject sees."""
        row = session.get(ObjectionEvidence, objection.id)
        if row is None:
            raise NotFound(f"objection {objection.id} has no evidence")
        data = codec.open_sealed(
            self._dek(objection),
            _evidence_aad(objection.id, row.media_type, row.size_bytes),
            bytes(row.ciphertext),
        )
        self.ledger.append(
            session,
            EntryDraft(
                action="objection.evidence",
                actor=actor,
                objects=(ObjectRef("objection", objection.id), ObjectRef("dataset", objection.dataset_id)),
                subjects=(objection.subject_uscc,),
                request_id=request_id,
                detail={"media_type": row.media_type, "bytes": row.size_bytes},
            ),
        )
        return Evidence(row.media_type, data)

    def evidence_info(self, session: Session, objection: Objection) -> dict[str, Any] | None:
        row = session.get(ObjectionEvidence, objection.id)
        if row is None:
            return None
        return {"media_type": row.media_type, "bytes": row.size_bytes, "sha256": bytes(row.sha256).hex()}

    # --- resolving -----------------------------------------------------------------------------------

    def _lock_open(self, session: Session, objection: Objection) -> Objection:
        session.execute(select(Objection.id).where(Objection.id == objection.id).with_for_update())
        session.refresh(objection)
        if objection.state is not ObjectionState.open:
            raise Conflict(f"objection {objection.id} was already {objection.state.value}")
        return objection

    def accept(
        self,
        session: Session,
        objection: Objection,
        *,
        corrected: Mapping[str, Any],
        note: str | None = None,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> Resolution:
        """The provider accepts: a corrected dataset version, then correction notices for the banks that were
        released results computed with a corrected field. All in the caller's transaction."""
        objection = self._lock_open(session, objection)
        disputed = json.loads(objection.fields_json)
        if not corrected:
            raise InvalidInput(f"give corrected values for the disputed fields: {', '.join(disputed)}")
        extra = sorted(set(corrected) - set(disputed))
        missing = sorted(set(disputed) - set(corrected))
        if extra or missing:
            raise InvalidInput(
                "corrected values must be given for exactly the disputed fields "
                f"({', '.join(disputed)})"
                + (f"; not disputed: {', '.join(extra)}" if extra else "")
                + (f"; missing: {', '.join(missing)}" if missing else "")
            )
        if note is not None and len(note) > MAX_REASON:
            raise InvalidInput(f"a note has at most {MAX_REASON} characters")
        ds = session.get(Dataset, objection.dataset_id)
        if ds is None or ds.deleted_at is not None:
            raise Conflict(f"dataset {objection.dataset_id} was deleted; nothing can be corrected")
        check_values(DatasetSchema.model_validate_json(ds.schema_json), corrected)  # types, before any work
        now = now or utcnow()
        texts = self.sealed(objection)
        ref = ObjectRef("objection", objection.id)
        correction = self.datasets.correct(
            session,
            ds,
            uscc=objection.subject_uscc,
            key=texts.record_key,
            values=corrected,
            actor=actor,
            objects=(ref,),
            request_id=request_id,
            now=now,
        )
        late = objection.due_at <= now
        objection.state = ObjectionState.accepted
        objection.resolved_at = now
        objection.corrected_version = correction.version.version
        objection.corrected_fields_json = json.dumps(list(correction.changed))
        if note:
            objection.sealed = self._seal(
                objection.id, self._dek(objection), Sealed(texts.record_key, texts.reason, note)
            )
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="objection.accept",
                actor=actor,
                objects=(
                    ref,
                    ObjectRef("dataset", ds.id),
                    ObjectRef("dataset_version", f"{ds.id}@{correction.previous}"),
                    ObjectRef("dataset_version", f"{ds.id}@{correction.version.version}"),
                ),
                subjects=(objection.subject_uscc,),
                request_id=request_id,
                detail={
                    "fields": disputed,
                    "changed": list(correction.changed),
                    "from_version": correction.previous,
                    "version": correction.version.version,
                    "late": late,
                },
            ),
            now=now,
        )
        notices = self._notify(
            session, objection, correction.previous, correction.changed, actor, request_id, now
        )
        return Resolution(objection, notices)

    def reject(
        self,
        session: Session,
        objection: Objection,
        *,
        reason: str,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> Objection:
        reason = reason.strip()
        if not reason or len(reason) > MAX_REASON:
            raise InvalidInput(f"a rejection needs a reason of 1 to {MAX_REASON} characters")
        return self._close(
            session,
            objection,
            ObjectionState.rejected,
            action="objection.reject",
            text=reason,
            digest="reason_sha256",
            actor=actor,
            request_id=request_id,
            now=now,
        )

    def unverifiable(
        self,
        session: Session,
        objection: Objection,
        *,
        note: str,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> Objection:
        """The provider cannot verify the record: it is kept, annotated with the objection and this note, and
        the annotation travels in every result that reads the disputed fields (Art. 25)."""
        note = note.strip() if isinstance(note, str) else ""
        if not note or len(note) > MAX_REASON:
            raise InvalidInput(
                f"say what was checked and why it could not be verified, in 1 to {MAX_REASON} characters"
            )
        return self._close(
            session,
            objection,
            ObjectionState.unverifiable,
            action="objection.unverifiable",
            text=note,
            digest="note_sha256",
            actor=actor,
            request_id=request_id,
            now=now,
        )

    def _close(
        self,
        session: Session,
        objection: Objection,
        outcome: ObjectionState,
        *,
        action: str,
        text: str,
        digest: str,
        actor: Actor,
        request_id: str | None,
        now: datetime | None,
    ) -> Objection:
        """Close an open objection without a correction (rejected, or unverifiable): the provider's text sealed
        beside the subject's, an ``action`` entry carrying its digest under ``digest``."""
        objection = self._lock_open(session, objection)
        now = now or utcnow()
        texts = self.sealed(objection)
        objection.state = outcome
        objection.resolved_at = now
        objection.sealed = self._seal(
            objection.id, self._dek(objection), Sealed(texts.record_key, texts.reason, text)
        )
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action=action,
                actor=actor,
                objects=(ObjectRef("objection", objection.id), ObjectRef("dataset", objection.dataset_id)),
                subjects=(objection.subject_uscc,),
                request_id=request_id,
                detail={
                    "fields": json.loads(objection.fields_json),
                    "late": objection.due_at <= now,
                    digest: hashlib.sha256(text.encode()).hexdigest(),
                },
            ),
            now=now,
        )
        return objection

    # --- correction notices --------------------------------------------------------------------------

    def affected_releases(
        self, session: Session, uscc: str, dataset_id: str, fields: Sequence[str]
    ) -> list[tuple[int, dict[str, Any], list[str]]]:
        return affected_releases(self.ledger, session, uscc, dataset_id, fields)

    def _notify(
        self,
        session: Session,
        objection: Objection,
        old_version: int,
        changed: Sequence[str],
        actor: Actor,
        request_id: str | None,
        now: datetime,
    ) -> list[CorrectionNotice]:
        notices = []
        assert objection.corrected_version is not None
        for index, doc, used in self.affected_releases(
            session, objection.subject_uscc, objection.dataset_id, changed
        ):
            result = doc["objects"][0] if doc.get("objects") else {"kind": "unknown", "id": "unknown"}
            bank = str(doc["detail"].get("bank") or doc["released"][0]["to"])
            notices.append(
                CorrectionNotice(
                    id=new_id("cor"),
                    bank_org_id=bank,
                    objection_id=objection.id,
                    subject_uscc=objection.subject_uscc,
                    dataset_id=objection.dataset_id,
                    fields_json=json.dumps(used),
                    result_kind=str(result["kind"])[:32],
                    result_id=str(result["id"])[:64],
                    operation=str(doc["detail"].get("operation") or "")[:32],
                    purpose=doc.get("purpose"),
                    ledger_index=index,
                    released_at=parse_time(doc["time"]),
                    old_version=old_version,
                    new_version=objection.corrected_version,
                    created_at=now,
                )
            )
        if not notices:
            return []
        session.add_all(notices)
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="correction.notice",
                actor=actor,
                objects=(ObjectRef("objection", objection.id), ObjectRef("dataset", objection.dataset_id)),
                subjects=(objection.subject_uscc,),
                request_id=request_id,
                detail={
                    "banks": sorted({n.bank_org_id for n in notices}),
                    "notices": len(notices),
                    "fields": list(changed),
                    "results": [
                        {
                            "bank": n.bank_org_id,
                            "kind": n.result_kind,
                            "id": n.result_id,
                            "ledger_index": n.ledger_index,
                        }
                        for n in notices[:NOTICES_LISTED]
                    ],
                },
            ),
            now=now,
        )
        return notices

    def corrections(
        self, session: Session, bank_org_id: str, *, after: str | None = None, limit: int = 50
    ) -> list[CorrectionNotice]:
        query = (
            select(CorrectionNotice)
            .where(CorrectionNotice.bank_org_id == bank_org_id)
            .order_by(CorrectionNotice.id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(CorrectionNotice.id > after)
        return list(session.execute(query).scalars())

    # --- keys ----------------------------------------------------------------------------------------

    def rewrap_all(self, session: Session) -> dict[int, int]:
        """Re-wrap every objection data key under the current KEK (nothing is decrypted but the keys)."""
        target = self.kms.current_version
        moved: dict[int, int] = {}
        for o in session.execute(select(Objection).where(Objection.kek_version != target)).scalars():
            new = self.kms.wrap(self._dek(o), _dek_aad(o.id))
            moved[o.kek_version] = moved.get(o.kek_version, 0) + 1
            o.kek_version, o.wrapped_dek = new.kek_version, new.blob
        session.flush()
        return moved

    def keys_by_kek_version(self, session: Session) -> dict[int, int]:
        rows = session.execute(
            select(Objection.kek_version, func.count()).group_by(Objection.kek_version)
        ).all()
        return {int(v): int(n) for v, n in rows}
