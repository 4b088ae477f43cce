"""Credit repair (信用修复): an enterprise asks that a true dishonesty record stop being used.

Rules followed (cited clause by clause in ``docs/compliance.md``): the NDRC 《信用修复管理办法》 (2025, in force
from 2026-04-01) — repair needs the minimum publicity period served, the legal obligations fulfilled and a
credit commitment (信用承诺书); no fee; a repaired record is no longer published, shared or used; publicity
ends by itself at the maximum period — and seed measure 18: self-declaration corroborated by platform data
(自主申报 + 平台数据相互佐证).

The flow
--------
1. **Apply** (:meth:`RepairService.apply`, the subject; portal, ``POST /v1/repairs``, the SDK): one of its own
   records (``GET /v1/me/dishonesty-records``), the commitment signed as the platform words it
   (:func:`commitment_text`), and up to :data:`MAX_PROOFS` proof files (PDF, PNG, JPEG, checked by their bytes)
   each of a declared kind in :data:`PROOF_KINDS`. Refused, with nothing stored, when the record is not the
   subject's (answered like a record that does not exist), not yet past its minimum period (the answer names
   the first day), no longer in use, already repaired or under an open application, or a proof's kind or
   bytes are wrong. No fee is asked anywhere.
2. **Corroborate** (automatic, at application): each check is stored with its source (dataset, version,
   field) and result — ``pass``, ``fail``, ``declared`` (the subject gave a proof the platform's data cannot
   confirm; the authority judges it) or ``not_applicable``: minimum period served, record still in use, fine
   paid (the issuing authority's payment date), tax arrears cleared (the latest ``tax.arrears``), no new record
   of the same kind since, commitment signed.
3. **Decide** (the provider of the records source — the designated authority): **approve** (refused while a
   check fails) or **deny** with reasons, before the deadline (``PPS_REPAIR_DECISION_DAYS`` working days); the
   operator watches the overdue list. A denial can be **objected** to once by the subject (state
   ``reconsidering``, a new deadline); the authority's second decision is final.
4. **Exclude and notify** (on approval, same transaction): the record is written to
   :class:`~pps.infra.storage.tables.RecordExclusion` — every use skips it from that moment, and every
   computation admitted before is decided again at release (:class:`pps.governance.release.Gate`); each bank
   released a result computed with the records source for this subject gets a *repair notice* naming the
   result and the record id (``GET /v1/repair-notices``); aggregate releases are left out (a notice would
   reveal cohort membership).

Every step is a ledger entry the subject sees: ``repair.apply``, ``repair.approve`` / ``repair.deny``,
``repair.object``, ``repair.notice``; ``repair.proof`` when the authority opens a proof.

Who sees what: the subject its applications, checks, deadlines and decisions; the authority the applications
on its records, their checks and proofs; admins and auditors the metadata and checks (not the proofs); a bank
only its repair notices. Proofs are sealed at rest under the application's own data key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pps.data.datasets import codec
from pps.data.datasets.service import DatasetService
from pps.data.sources import bind_sources
from pps.errors import Conflict, EvidenceRejected, InvalidInput, NotFound
from pps.governance.casework import is_overdue_case, list_cases
from pps.governance.evidence import check_evidence
from pps.governance.objections import affected_releases
from pps.governance.records import SOURCE, DishonestyRecord, RecordBook, status
from pps.infra.kms import KeyEncryptionKeys, WrappedKey, new_data_key
from pps.infra.storage.tables import (
    Dataset,
    DatasetVersion,
    Organization,
    RecordExclusion,
    RepairApplication,
    RepairNotice,
    RepairProof,
    RepairState,
    Role,
    new_id,
    utcnow,
)
from pps.ledger.entry import Actor, EntryDraft, ObjectRef, format_time, parse_time
from pps.ledger.store import Ledger

PROOF_KINDS: Final = ("fine_receipt", "tax_clearance", "rectification_report", "annual_report", "other")
"""What a proof file may be declared as (a kind outside this list is refused)."""
MAX_PROOFS: Final = 5
MAX_REASON: Final = 1000
MAX_REASONS: Final = 10
OPEN_STATES: Final = (RepairState.pending, RepairState.reconsidering)
NOTICES_LISTED: Final = 200


def commitment_text(uscc: str, record_id: str) -> str:
    """The credit commitment (信用承诺书) an applicant signs, word for word."""
    return (
        f"信用承诺书：本主体（统一社会信用代码 {uscc}）就失信信息 {record_id} 申请信用修复，承诺已纠正失信行为、"
        "履行相关义务，所提交材料真实有效；如违反承诺，愿依法承担责任，并接受将违诺情况记入信用记录。"
    )


def add_working_days(start: datetime, days: int) -> datetime:
    """``days`` working days (Monday to Friday) after ``start``; public holidays are not modelled."""
    out = start
    left = days
    while left > 0:
        out += timedelta(days=1)
        if out.weekday() < 5:
            left -= 1
    return out


@dataclass(frozen=True)
class Proof:
    kind: str
    media_type: str
    data: bytes


@dataclass(frozen=True)
class Check:
    name: str
    result: str
    """``pass``, ``fail``, ``declared`` or ``not_applicable``"""
    source: dict[str, Any]
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "result": self.result, "source": self.source, "detail": self.detail}


@dataclass(frozen=True)
class Decision:
    application: RepairApplication
    notices: list[RepairNotice]


def _dek_aad(application_id: str) -> bytes:
    return f"pps/repair-dek/v1|{application_id}".encode()


def _proof_aad(application_id: str, position: int, kind: str, media_type: str, size: int) -> bytes:
    return f"pps/repair-proof/v1|{application_id}|{position}|{kind}|{media_type}|{size}".encode()


def is_overdue(application: RepairApplication, now: datetime) -> bool:
    return is_overdue_case(application.state, application.due_at, OPEN_STATES, now)


class RepairService:
    def __init__(
        self,
        ledger: Ledger,
        kms: KeyEncryptionKeys,
        datasets: DatasetService,
        *,
        decision_days: int = 5,
        proof_max_bytes: int = 2 << 20,
    ) -> None:
        self.ledger = ledger
        self.kms = kms
        self.datasets = datasets
        self.records = RecordBook(datasets, ledger)
        self.decision_days = decision_days
        self.proof_max_bytes = proof_max_bytes

    def _dek(self, a: RepairApplication) -> bytes:
        return self.kms.unwrap(WrappedKey(a.kek_version, a.wrapped_dek), _dek_aad(a.id))

    # --- corroboration -------------------------------------------------------------------------------

    def corroborate(
        self,
        session: Session,
        record: DishonestyRecord,
        others: Sequence[DishonestyRecord],
        proofs: Sequence[Proof],
        *,
        dataset: tuple[str, int],
        today: dt.date,
    ) -> list[Check]:
        """The automatic checks of an application, each with its source and result (see the module doc)."""
        src = {"dataset": dataset[0], "version": dataset[1]}
        declared = {p.kind for p in proofs}
        checks = [
            Check(
                "minimum_period_served",
                "pass" if today >= record.eligible_from else "fail",
                {**src, "fields": ["decided_on", "grade", "min_publicity_months"]},
                f"decided {record.decided_on.isoformat()}, grade {record.grade}: repair from "
                f"{record.eligible_from.isoformat()}",
            )
        ]
        if record.fine_amount:
            paid = record.fine_paid_on is not None
            checks.append(
                Check(
                    "fine_paid",
                    "pass" if paid else "declared" if "fine_receipt" in declared else "fail",
                    {**src, "fields": ["fine_amount", "fine_paid_on"]},
                    f"paid on {record.fine_paid_on.isoformat()} per the issuing authority"
                    if record.fine_paid_on
                    else "no payment recorded by the issuing authority"
                    + ("; a fine receipt was declared" if "fine_receipt" in declared else ""),
                )
            )
        else:
            checks.append(Check("fine_paid", "not_applicable", {**src, "fields": ["fine_amount"]}, "no fine"))
        if record.tax_arrears:
            checks.append(self._tax_check(session, record, declared))
        else:
            checks.append(
                Check(
                    "tax_arrears_cleared", "not_applicable", {**src, "fields": ["tax_arrears"]}, "no arrears"
                )
            )
        later = [
            o
            for o in others
            if o.record_id != record.record_id and o.kind == record.kind and o.decided_on > record.decided_on
        ]
        checks.append(
            Check(
                "no_new_record_of_same_kind",
                "fail" if later else "pass",
                {**src, "fields": ["kind", "decided_on"]},
                f"{len(later)} later record(s) of kind {record.kind}"
                if later
                else f"none since {record.decided_on}",
            )
        )
        checks.append(Check("commitment_signed", "pass", {"application": "commitment"}, "signed as worded"))
        return checks

    def _tax_check(self, session: Session, record: DishonestyRecord, declared: set[str]) -> Check:
        binding = bind_sources(session, ("tax",))
        bound = binding.bound.get("tax")
        fallback = "declared" if "tax_clearance" in declared else "fail"
        if bound is None:
            return Check(
                "tax_arrears_cleared",
                fallback,
                {"source": "tax"},
                f"no tax data: {binding.unavailable.get('tax')}",
            )
        src = {"dataset": bound.dataset_id, "version": bound.version, "fields": ["month", "arrears"]}
        if "arrears" not in {c.name for c in bound.schema.columns}:
            return Check("tax_arrears_cleared", fallback, src, "the tax data has no arrears field")
        version = session.get(DatasetVersion, (bound.dataset_id, bound.version))
        assert version is not None
        cols = self.datasets.read_columns(session, version, ["uscc", "month", "arrears"])
        latest: tuple[str, float] | None = None
        for i, u in enumerate(cols["uscc"].values.tolist()):
            if u != record.uscc or not cols["month"].valid[i]:
                continue
            month = str(cols["month"].values[i])
            value = float(cols["arrears"].values[i]) if cols["arrears"].valid[i] else float("nan")
            if latest is None or month > latest[0]:
                latest = (month, value)
        if latest is None:
            return Check("tax_arrears_cleared", fallback, src, "no tax filing of this enterprise")
        decided_month = record.decided_on.isoformat()[:7]
        if latest[0] < decided_month:
            return Check(
                "tax_arrears_cleared", fallback, src, f"no filing since the decision (last {latest[0]})"
            )
        if latest[1] == 0.0:
            return Check("tax_arrears_cleared", "pass", src, f"arrears 0 in {latest[0]}")
        return Check("tax_arrears_cleared", fallback, src, f"arrears outstanding in {latest[0]}")

    # --- applying ------------------------------------------------------------------------------------

    def apply(
        self,
        session: Session,
        *,
        subject: Organization,
        record_id: str,
        commitment: str,
        proofs: Sequence[Proof] = (),
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> RepairApplication:
        if subject.role is not Role.subject or subject.uscc is None:
            raise InvalidInput("only an enterprise (a subject organisation) applies for credit repair")
        uscc = subject.uscc
        if not isinstance(record_id, str) or not 0 < len(record_id) <= 200:
            raise InvalidInput("record_id must have 1 to 200 characters")
        if len(proofs) > MAX_PROOFS:
            raise InvalidInput(f"attach at most {MAX_PROOFS} proof files")
        checked: list[tuple[Proof, str]] = []
        for n, p in enumerate(proofs, 1):
            if p.kind not in PROOF_KINDS:
                raise InvalidInput(f"proof {n}: kind {p.kind!r} is not one of {', '.join(PROOF_KINDS)}")
            try:
                checked.append((p, check_evidence(p.data, p.media_type, max_bytes=self.proof_max_bytes)))
            except EvidenceRejected as exc:
                raise EvidenceRejected(f"proof {n} ({p.kind}): {exc.message}") from None
        now = now or utcnow()
        where = self.records.bound(session)
        not_found = NotFound(f"you have no dishonesty record {record_id}")
        if where is None:
            raise not_found
        mine = self.records.of_subject(session, uscc)
        record = next((r for r in mine if r.record_id == record_id), None)
        if record is None:
            raise not_found
        if commitment.strip() != commitment_text(uscc, record_id):
            raise InvalidInput(
                "sign the credit commitment exactly as worded (GET /v1/me/dishonesty-records gives it per record)"
            )
        today = now.date()
        if today < record.eligible_from:
            raise InvalidInput(
                f"record {record_id} ({record.grade}) may be repaired once its minimum publicity period of "
                f"{record.min_months} months is served: apply from {record.eligible_from.isoformat()}"
            )
        excluded = RecordBook.excluded(session, where[0], [uscc])
        state = status(record, excluded, today)
        if state != "in_use":
            raise Conflict(f"record {record_id} is no longer used ({state}): there is nothing to repair")
        open_app = session.execute(
            select(RepairApplication.id).where(
                RepairApplication.dataset_id == where[0],
                RepairApplication.record_id == record_id,
                RepairApplication.state.in_(OPEN_STATES),
            )
        ).scalar()
        if open_app is not None:
            raise Conflict(
                f"application {open_app} for record {record_id} is still open; wait for its decision"
            )
        ds = session.get(Dataset, where[0])
        assert ds is not None
        checks = self.corroborate(session, record, mine, [p for p, _ in checked], dataset=where, today=today)
        app_id = new_id("rep")
        dek = new_data_key()
        wrapped = self.kms.wrap(dek, _dek_aad(app_id))
        digest = hashlib.sha256(commitment.strip().encode()).digest()
        app = RepairApplication(
            id=app_id,
            subject_uscc=uscc,
            subject_org_id=subject.id,
            dataset_id=where[0],
            dataset_version=where[1],
            record_id=record_id,
            authority_org_id=ds.provider_org_id,
            state=RepairState.pending,
            commitment_sha256=digest,
            checks_json=json.dumps([c.as_dict() for c in checks], ensure_ascii=False),
            kek_version=wrapped.kek_version,
            wrapped_dek=wrapped.blob,
            due_at=add_working_days(now, self.decision_days),
            created_at=now,
        )
        session.add(app)
        session.flush()
        proof_detail = []
        for position, (p, media_type) in enumerate(checked):
            size = len(p.data)
            sha = hashlib.sha256(p.data).digest()
            session.add(
                RepairProof(
                    application_id=app_id,
                    position=position,
                    kind=p.kind,
                    media_type=media_type,
                    size_bytes=size,
                    sha256=sha,
                    ciphertext=codec.seal(
                        dek, _proof_aad(app_id, position, p.kind, media_type, size), p.data
                    ),
                )
            )
            proof_detail.append(
                {"kind": p.kind, "media_type": media_type, "bytes": size, "sha256": sha.hex()}
            )
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="repair.apply",
                actor=actor,
                objects=(
                    ObjectRef("repair", app_id),
                    ObjectRef("dataset", where[0]),
                    ObjectRef("record", record_id),
                ),
                subjects=(uscc,),
                request_id=request_id,
                detail={
                    "authority": ds.provider_org_id,
                    "version": where[1],
                    "grade": record.grade,
                    "kind": record.kind,
                    "commitment_sha256": digest.hex(),
                    "proofs": proof_detail,
                    "checks": {c.name: c.result for c in checks},
                    "due_at": format_time(app.due_at),
                    "fee": 0,
                },
            ),
            now=now,
        )
        return app

    # --- reads ---------------------------------------------------------------------------------------

    def get(self, session: Session, application_id: str) -> RepairApplication:
        app = session.get(RepairApplication, application_id)
        if app is None:
            raise NotFound(f"repair application {application_id} does not exist")
        return app

    def list_applications(
        self,
        session: Session,
        *,
        subject_uscc: str | None = None,
        authority_org_id: str | None = None,
        state: RepairState | None = None,
        overdue: bool | None = None,
        now: datetime | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> list[RepairApplication]:
        return list_cases(
            session,
            RepairApplication,
            equal=(
                (RepairApplication.subject_uscc, subject_uscc),
                (RepairApplication.authority_org_id, authority_org_id),
            ),
            state=state,
            open_states=OPEN_STATES,
            overdue=overdue,
            now=now or utcnow(),
            after=after,
            limit=limit,
        )

    def proofs_info(self, session: Session, app: RepairApplication) -> list[dict[str, Any]]:
        rows = session.execute(
            select(RepairProof).where(RepairProof.application_id == app.id).order_by(RepairProof.position)
        ).scalars()
        return [
            {
                "position": r.position,
                "kind": r.kind,
                "media_type": r.media_type,
                "bytes": r.size_bytes,
                "sha256": bytes(r.sha256).hex(),
            }
            for r in rows
        ]

    def proof(
        self,
        session: Session,
        app: RepairApplication,
        position: int,
        *,
        actor: Actor,
        request_id: str | None = None,
    ) -> tuple[str, bytes]:
        """Open a proof (the subject or the authority); the reading is a ledger entry the subject sees."""
        row = session.get(RepairProof, (app.id, position))
        if row is None:
            raise NotFound(f"repair application {app.id} has no proof {position}")
        data = codec.open_sealed(
            self._dek(app),
            _proof_aad(app.id, position, row.kind, row.media_type, row.size_bytes),
            bytes(row.ciphertext),
        )
        self.ledger.append(
            session,
            EntryDraft(
                action="repair.proof",
                actor=actor,
                objects=(ObjectRef("repair", app.id),),
                subjects=(app.subject_uscc,),
                request_id=request_id,
                detail={"position": position, "kind": row.kind, "bytes": row.size_bytes},
            ),
        )
        return row.media_type, data

    # --- deciding ------------------------------------------------------------------------------------

    def _lock_open(self, session: Session, app: RepairApplication) -> RepairApplication:
        session.execute(select(RepairApplication.id).where(RepairApplication.id == app.id).with_for_update())
        session.refresh(app)
        if app.state not in OPEN_STATES:
            raise Conflict(f"repair application {app.id} was already {app.state.value}")
        return app

    def approve(
        self,
        session: Session,
        app: RepairApplication,
        *,
        note: str | None = None,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> Decision:
        """The authority approves: the record is excluded from every use from now on, and banks released a result
        built on the records source for this subject get repair notices. All in the caller's transaction."""
        app = self._lock_open(session, app)
        failed = [c["name"] for c in json.loads(app.checks_json) if c["result"] == "fail"]
        if failed:
            raise Conflict(
                f"check(s) {', '.join(failed)} failed: the platform's data does not corroborate the application; "
                "deny it with reasons (the subject may object) instead"
            )
        if note is not None and len(note) > MAX_REASON:
            raise InvalidInput(f"a note has at most {MAX_REASON} characters")
        now = now or utcnow()
        late = app.due_at <= now
        app.state = RepairState.approved
        app.decided_at = now
        app.reasons_json = json.dumps([note.strip()] if note and note.strip() else [], ensure_ascii=False)
        if session.get(RecordExclusion, (app.dataset_id, app.record_id)) is None:
            session.add(
                RecordExclusion(
                    dataset_id=app.dataset_id,
                    record_id=app.record_id,
                    subject_uscc=app.subject_uscc,
                    reason="repaired",
                    repair_id=app.id,
                    excluded_at=now,
                )
            )
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="repair.approve",
                actor=actor,
                objects=(
                    ObjectRef("repair", app.id),
                    ObjectRef("dataset", app.dataset_id),
                    ObjectRef("record", app.record_id),
                ),
                subjects=(app.subject_uscc,),
                request_id=request_id,
                detail={"late": late, "excluded_from": format_time(now)},
            ),
            now=now,
        )
        return Decision(app, self._notify(session, app, actor, request_id, now))

    def deny(
        self,
        session: Session,
        app: RepairApplication,
        *,
        reasons: Sequence[str],
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> RepairApplication:
        cleaned = [r.strip() for r in reasons if isinstance(r, str) and r.strip()]
        if not cleaned or len(cleaned) != len(reasons) or len(cleaned) > MAX_REASONS:
            raise InvalidInput(f"a denial gives 1 to {MAX_REASONS} reasons, none empty")
        if any(len(r) > MAX_REASON for r in cleaned):
            raise InvalidInput(f"each reason has at most {MAX_REASON} characters")
        app = self._lock_open(session, app)
        now = now or utcnow()
        second = app.state is RepairState.reconsidering
        app.state = RepairState.denied
        app.decided_at = now
        app.reasons_json = json.dumps(cleaned, ensure_ascii=False)
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="repair.deny",
                actor=actor,
                objects=(ObjectRef("repair", app.id), ObjectRef("record", app.record_id)),
                subjects=(app.subject_uscc,),
                request_id=request_id,
                detail={
                    "late": app.due_at <= now,
                    "reasons": len(cleaned),
                    "reasons_sha256": hashlib.sha256(
                        json.dumps(cleaned, ensure_ascii=False).encode()
                    ).hexdigest(),
                    "final": second,
                },
            ),
            now=now,
        )
        return app

    def object(
        self,
        session: Session,
        app: RepairApplication,
        *,
        text: str,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> RepairApplication:
        """The subject objects to a denial: the authority decides again, once, within a new deadline."""
        text = text.strip() if isinstance(text, str) else ""
        if not text or len(text) > MAX_REASON:
            raise InvalidInput(f"give the grounds of your objection in 1 to {MAX_REASON} characters")
        session.execute(select(RepairApplication.id).where(RepairApplication.id == app.id).with_for_update())
        session.refresh(app)
        if app.state is not RepairState.denied:
            raise Conflict(
                f"repair application {app.id} is {app.state.value}: only a denial can be objected to"
            )
        if app.objection_text is not None:
            raise Conflict(
                f"the denial of repair application {app.id} was already reconsidered and is final; you may apply "
                "again with new proof"
            )
        now = now or utcnow()
        app.state = RepairState.reconsidering
        app.objection_text = text
        app.due_at = add_working_days(now, self.decision_days)
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="repair.object",
                actor=actor,
                objects=(ObjectRef("repair", app.id), ObjectRef("record", app.record_id)),
                subjects=(app.subject_uscc,),
                request_id=request_id,
                detail={
                    "due_at": format_time(app.due_at),
                    "text_sha256": hashlib.sha256(text.encode()).hexdigest(),
                },
            ),
            now=now,
        )
        return app

    # --- notices -------------------------------------------------------------------------------------

    def _notify(
        self, session: Session, app: RepairApplication, actor: Actor, request_id: str | None, now: datetime
    ) -> list[RepairNotice]:
        ds = session.get(Dataset, app.dataset_id)
        assert ds is not None
        from pps.data.datasets.schema import DatasetSchema

        schema = DatasetSchema.model_validate_json(ds.schema_json)
        keys = set(schema.key_columns)
        fields = [c.name for c in schema.columns if c.name not in keys]
        notices = []
        for index, doc, _used in affected_releases(
            self.ledger, session, app.subject_uscc, app.dataset_id, fields
        ):
            released_at = parse_time(doc["time"])
            if released_at > now:
                continue
            result = doc["objects"][0] if doc.get("objects") else {"kind": "unknown", "id": "unknown"}
            notices.append(
                RepairNotice(
                    id=new_id("rpn"),
                    bank_org_id=str(doc["detail"].get("bank") or doc["released"][0]["to"]),
                    application_id=app.id,
                    subject_uscc=app.subject_uscc,
                    dataset_id=app.dataset_id,
                    record_id=app.record_id,
                    result_kind=str(result["kind"])[:32],
                    result_id=str(result["id"])[:64],
                    operation=str(doc["detail"].get("operation") or "")[:32],
                    purpose=doc.get("purpose"),
                    ledger_index=index,
                    released_at=released_at,
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
                action="repair.notice",
                actor=actor,
                objects=(ObjectRef("repair", app.id), ObjectRef("dataset", app.dataset_id)),
                subjects=(app.subject_uscc,),
                request_id=request_id,
                detail={
                    "banks": sorted({n.bank_org_id for n in notices}),
                    "notices": len(notices),
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

    def notices(
        self, session: Session, bank_org_id: str, *, after: str | None = None, limit: int = 50
    ) -> list[RepairNotice]:
        query = (
            select(RepairNotice)
            .where(RepairNotice.bank_org_id == bank_org_id)
            .order_by(RepairNotice.id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(RepairNotice.id > after)
        return list(session.execute(query).scalars())

    # --- keys ----------------------------------------------------------------------------------------

    def rewrap_all(self, session: Session) -> dict[int, int]:
        target = self.kms.current_version
        moved: dict[int, int] = {}
        for a in session.execute(
            select(RepairApplication).where(RepairApplication.kek_version != target)
        ).scalars():
            new = self.kms.wrap(self._dek(a), _dek_aad(a.id))
            moved[a.kek_version] = moved.get(a.kek_version, 0) + 1
            a.kek_version, a.wrapped_dek = new.kek_version, new.blob
        session.flush()
        return moved

    def keys_by_kek_version(self, session: Session) -> dict[int, int]:
        rows = session.execute(
            select(RepairApplication.kek_version, func.count()).group_by(RepairApplication.kek_version)
        ).all()
        return {int(v): int(n) for v, n in rows}


__all__ = ["SOURCE", "Check", "Decision", "Proof", "RepairService", "commitment_text", "is_overdue"]
