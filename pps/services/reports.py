"""The standard credit report (标准化信用信息报告) and authorised queries, through the disclosure modes (issue 23).

A **report** about an enterprise has three parts: its registration and its public records (administrative
penalties and the abnormal-operation and serious-dishonesty listings still in use, with the state of any repair
application; court cases), all lawfully public and shown without consent; and, only under the enterprise's
consent for this bank, purpose and the ``report`` operation, masked summaries of its tax, social-insurance and
utility history over the last 12 months. An **authorised query** asks named fields of named datasets for a
portfolio of subjects under the ``query`` operation; each subject is decided on its own and each field leaves only
through its mode.

The policy engine decides every field (:meth:`pps.governance.policy.PolicyEngine.disclose`): ``public`` needs no
consent, ``masked`` and ``aggregate_only`` need one (which may narrow the mode), ``compute_only`` and ``never``
never leave here. A dishonesty record that was repaired, or whose publicity or retention period ended, is not in
the report (:func:`pps.governance.records.status`).

Every document is signed with the ledger's key (:mod:`pps_wire.report`), stored until it expires, then erased;
each release is a ledger entry (``disclosure.report`` / ``disclosure.query``) naming the subject, the bank, the
consents relied on, the mode of every field let out and every field withheld with its reason: the enterprise
sees it in its access history. The enterprise reads its own report free and unmasked in its portal
(``requested_by: subject``), without a bank's consent and without spending anything.

Who learns what: the bank learns public values, ranges and summaries its consent covers, and why the rest was
withheld; the platform stores only the signed document, and only until it expires.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from pps.data.datasets.schema import DatasetSchema, Disclosure
from pps.data.datasets.service import DatasetService
from pps.data.sources import BoundSource, bind_sources
from pps.errors import Gone, InvalidInput, NotFound
from pps.governance import masking
from pps.governance.policy import FieldDecision, PolicyEngine
from pps.governance.records import DishonestyRecord, RecordBook, status
from pps.identity.persons import is_person_code
from pps.identity.uscc import validate_uscc
from pps.infra.storage.tables import (
    DatasetVersion,
    DisclosureDocument,
    RepairApplication,
    new_id,
    utcnow,
)
from pps.ledger.entry import Actor, EntryDraft, ObjectRef, Release, format_time
from pps.ledger.store import Ledger
from pps_wire.report import QUERY_FORMAT, REPORT_FORMAT, canonical

REPORT_SOURCES: Final = ("registry", "penalties", "court", "tax", "social_insurance", "utilities")
CONSENTED: Final = ("tax", "social_insurance", "utilities")
"""The histories of the report's consented part: every field of each, through its mode (``compute_only`` and
``never`` ones are withheld, naming why)."""
REPORT_MONTHS: Final = 12
MAX_QUERY_SUBJECTS: Final = 1000
MAX_QUERY_MONTHS: Final = 36
_PENALTY_SECTIONS: Final = {
    "administrative_penalty": "penalties",
    "abnormal_operation": "abnormal_operation",
    "serious_dishonesty": "serious_dishonesty",
}


@dataclass(frozen=True)
class Issued:
    """A signed document as released: the row, the document and its signed note, and its ledger entry."""

    row: DisclosureDocument
    document: dict[str, Any]
    note: str
    ledger_index: int | None


def _enterprise(code: str) -> str:
    """An enterprise's USCC, checked; a person's code is refused (a person's report is its own, issue 19)."""
    if isinstance(code, str) and is_person_code(code):
        raise InvalidInput("the standard credit report and queries are about enterprises, not persons")
    return validate_uscc(code)


def _month_back(today: dt.date, months: int) -> str:
    m = today.year * 12 + today.month - 1 - months
    return f"{m // 12:04d}-{m % 12 + 1:02d}"


def _source_info(b: BoundSource, version: DatasetVersion | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "dataset_id": b.dataset_id,
        "source": b.name,
        "provider_org_id": b.provider_org_id,
        "version": b.version,
    }
    published = sorted(
        {c.published_in for c in b.schema.columns if c.mode is Disclosure.public and c.published_in}
    )
    if published:
        out["published_in"] = published
        out["published_on"] = (
            f"column {b.schema.published_on}"
            if b.schema.published_on
            else (version.created_at.date().isoformat() if version is not None else None)
        )
    return out


OWN: Final = "own"
"""The mode named in the subject's own report: its own data as it is (whatever the field's mode for banks)."""


def _value(col: Any, mode: Disclosure | str, value: Any, source: str) -> dict[str, Any]:
    shown = masking.plain(col, value) if mode in (Disclosure.public, OWN) else masking.mask(col, value)
    return {"value": shown, "mode": str(mode), "source": source}


class CreditReports:
    def __init__(
        self,
        ledger: Ledger,
        policy: PolicyEngine,
        datasets: DatasetService,
        *,
        ttl: timedelta = timedelta(hours=24),
    ) -> None:
        self.ledger = ledger
        self.policy = policy
        self.datasets = datasets
        self.records = RecordBook(datasets)
        self.ttl = ttl

    # --- reading one subject's rows of one source, through the decided modes ---------------------------------

    def _rows(self, session: Session, b: BoundSource, uscc: str) -> list[dict[str, Any]]:
        version = session.get(DatasetVersion, (b.dataset_id, b.version))
        return self.datasets.rows_of(session, version, uscc) if version is not None else []

    @staticmethod
    def _through(
        schema: DatasetSchema,
        rows: Sequence[dict[str, Any]],
        decided: Mapping[str, FieldDecision],
        source: str,
    ) -> dict[str, Any]:
        """Rows with each field through its mode; ``aggregate_only`` fields only as a summary."""
        own = any(d.reason is None and d.mode is None for d in decided.values())
        shown = {n: d for n, d in decided.items() if d.mode is not None or own}
        per_row = [n for n, d in shown.items() if own or d.mode is not Disclosure.aggregate_only]
        out: dict[str, Any] = {}
        if per_row:
            period = schema.period_key
            out["rows"] = [
                {
                    **({period: row.get(period)} if period else {}),
                    **{
                        n: _value(schema.column(n), shown[n].mode or OWN, row.get(n), source) for n in per_row
                    },
                }
                for row in rows
            ]
        agg = {n: d for n, d in shown.items() if d.mode is Disclosure.aggregate_only and not own}
        if agg:
            out["summaries"] = {
                n: {
                    **masking.summary(schema.column(n), [r.get(n) for r in rows]),
                    "mode": "aggregate_only",
                    "source": source,
                }
                for n in agg
            }
        return out

    @staticmethod
    def _withheld(decisions: Sequence[FieldDecision], names: Mapping[str, str]) -> list[dict[str, Any]]:
        return [
            {
                "source": names.get(d.dataset_id, d.dataset_id),
                "dataset_id": d.dataset_id,
                "field": d.field,
                "reason": d.reason.value if d.reason else "withheld",
                "detail": d.detail,
            }
            for d in decisions
            if d.mode is None and d.reason is not None
        ]

    # --- the report ---------------------------------------------------------------------------------------------

    def report(
        self,
        session: Session,
        *,
        subject_uscc: str,
        bank_org_id: str | None,
        purpose: str | None,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> Issued:
        """The report about ``subject_uscc`` for a bank (``bank_org_id`` and ``purpose``), or for the subject
        itself (both None: everything about it, unmasked — its own free report)."""
        now = now or utcnow()
        uscc = _enterprise(subject_uscc)
        own = bank_org_id is None
        if not own and not purpose:
            raise InvalidInput("a bank's report names its purpose")
        doc_id = new_id("rpt")
        binding = bind_sources(session, REPORT_SOURCES)
        bound = binding.bound
        names = {b.dataset_id: b.name for b in bound.values()}
        fields: dict[str, tuple[str, ...]] = {}
        for b in bound.values():
            keys = set(b.schema.key_columns) - {b.schema.record_key or ""}
            wanted = tuple(c.name for c in b.schema.columns if c.name not in keys)
            if wanted:
                fields[b.dataset_id] = wanted
        if own:
            # the subject's own data, as it is: no mode applies (a decision without mode and without reason)
            decisions = [FieldDecision(ds, f, None) for ds, fs in fields.items() for f in fs]
        else:
            assert bank_org_id is not None
            assert purpose is not None
            asked = self.policy.disclose(
                session,
                bank_org_id=bank_org_id,
                subjects=(uscc,),
                fields=fields,
                operation="report",
                purpose=purpose,
                now=now,
            )
            decisions = self.policy.release_disclosure(
                session,
                asked,
                bank_org_id=bank_org_id,
                operation="report",
                purpose=purpose,
                job=ObjectRef("report", doc_id),
                actor=actor,
                request_id=request_id,
                now=now,
            )[uscc]
        by_ds: dict[str, dict[str, FieldDecision]] = {}
        for d in decisions:
            by_ds.setdefault(d.dataset_id, {})[d.field] = d
        sources: dict[str, Any] = {}
        sections: dict[str, Any] = {}
        today = now.date()
        cutoff = _month_back(today, REPORT_MONTHS)
        for name in REPORT_SOURCES:
            found = bound.get(name)
            if found is None or found.dataset_id not in by_ds:
                continue
            b = found
            version = session.get(DatasetVersion, (b.dataset_id, b.version))
            sources[name] = _source_info(b, version)
            rows = self._rows(session, b, uscc)
            decided = by_ds[b.dataset_id]
            if name == "registry":
                shown_rows = self._through(b.schema, rows[:1], decided, name).get("rows") or [{}]
                sections["registration"] = shown_rows[0]
            elif name == "penalties":
                sections.update(self._records(session, b, uscc, rows, decided, today))
            elif name == "court":
                sections["court_cases"] = self._through(b.schema, rows, decided, name).get("rows", [])
            else:
                period = b.schema.period_key
                recent = [r for r in rows if not period or str(r.get(period) or "")[:7] > cutoff]
                recent.sort(key=lambda r: str(r.get(period) or "") if period else "")
                part = self._through(b.schema, recent, decided, name)
                if part:
                    sections.setdefault("consented", {})[name] = part
        withheld = self._withheld(decisions, names)
        document = {
            "format": REPORT_FORMAT,
            "id": doc_id,
            "subject_uscc": uscc,
            "requested_by": "subject" if own else bank_org_id,
            "purpose": purpose,
            "issued_at": format_time(now),
            "expires_at": format_time(now + self.ttl),
            "window": {"from_month": _month_back(today, REPORT_MONTHS - 1), "months": REPORT_MONTHS},
            "consents": sorted({d.consent_id for d in decisions if d.consent_id}),
            "sources": sources,
            "sections": sections,
            "withheld": withheld,
            "unavailable": dict(sorted(binding.unavailable.items())),
        }
        return self._issue(
            session, "report", document, decisions, bank_org_id, purpose, actor, request_id, now
        )

    def _records(
        self,
        session: Session,
        b: BoundSource,
        uscc: str,
        rows: Sequence[dict[str, Any]],
        decided: Mapping[str, FieldDecision],
        today: dt.date,
    ) -> dict[str, list[dict[str, Any]]]:
        """The dishonesty records still in use, by kind, each with the state of its repair application."""
        mine = {r.record_id: r for r in self.records.read(session) if r.uscc == uscc}
        excluded = RecordBook.excluded(session, b.dataset_id, [uscc])
        repairs = {
            a.record_id: a.state.value
            for a in session.scalars(
                select(RepairApplication)
                .where(RepairApplication.subject_uscc == uscc, RepairApplication.dataset_id == b.dataset_id)
                .order_by(RepairApplication.created_at)
            )
        }
        out: dict[str, list[dict[str, Any]]] = {s: [] for s in _PENALTY_SECTIONS.values()}
        for row in rows:
            rec: DishonestyRecord | None = mine.get(str(row.get("record_id")))
            if rec is None or status(rec, excluded, today) != "in_use":
                continue  # repaired, past its publicity period or its retention: not in the report
            shown = (self._through(b.schema, [row], decided, b.name).get("rows") or [{}])[0]
            shown["publicity_ends"] = {
                "value": rec.publicity_ends.isoformat(),
                "mode": "public",
                "source": b.name,
            }
            shown["repair"] = repairs.get(rec.record_id, "none")
            out[_PENALTY_SECTIONS.get(rec.kind, "penalties")].append(shown)
        return out

    # --- authorised queries ---------------------------------------------------------------------------------

    def query(
        self,
        session: Session,
        *,
        bank_org_id: str,
        subjects: Sequence[str],
        fields: Mapping[str, Sequence[str]],
        purpose: str,
        months: int = REPORT_MONTHS,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> list[Issued]:
        """One signed result per subject: each field through its mode, the withheld ones with their reason."""
        now = now or utcnow()
        if not 1 <= len(subjects) <= MAX_QUERY_SUBJECTS:
            raise InvalidInput(f"name 1 to {MAX_QUERY_SUBJECTS} subjects")
        if not 1 <= months <= MAX_QUERY_MONTHS:
            raise InvalidInput(f"months must be 1 to {MAX_QUERY_MONTHS}")
        if not fields or not all(fields.values()):
            raise InvalidInput("name at least one field of each dataset queried")
        usccs = tuple(_enterprise(s) for s in subjects)
        decided = self.policy.release_disclosure(
            session,
            self.policy.disclose(
                session,
                bank_org_id=bank_org_id,
                subjects=usccs,
                fields={k: tuple(v) for k, v in fields.items()},
                operation="query",
                purpose=purpose,
                now=now,
            ),
            bank_org_id=bank_org_id,
            operation="query",
            purpose=purpose,
            job=ObjectRef("query", new_id("qry")),
            actor=actor,
            request_id=request_id,
            now=now,
        )
        binding = bind_sources(session)
        bound = {b.dataset_id: b for b in binding.bound.values()}
        cutoff = _month_back(now.date(), months)
        # each dataset read once for every subject something of it is let out about
        needed: dict[str, list[str]] = {}
        for uscc in usccs:
            for ds_id in {d.dataset_id for d in decided[uscc] if d.mode is not None}:
                needed.setdefault(ds_id, []).append(uscc)
        bindings: dict[str, BoundSource] = {}
        read: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for ds_id, who in needed.items():
            b = bindings[ds_id] = bound.get(ds_id) or self._bind_one(session, ds_id)
            version = session.get(DatasetVersion, (b.dataset_id, b.version))
            read[ds_id] = self.datasets.rows_of_many(session, version, who) if version is not None else {}
        issued = []
        for uscc in usccs:
            decisions = decided[uscc]
            by_ds: dict[str, dict[str, FieldDecision]] = {}
            for d in decisions:
                by_ds.setdefault(d.dataset_id, {})[d.field] = d
            results: dict[str, Any] = {}
            sources: dict[str, Any] = {}
            for dataset_id, per_field in by_ds.items():
                if all(d.mode is None for d in per_field.values()):
                    continue
                b = bindings[dataset_id]
                sources[dataset_id] = _source_info(b, session.get(DatasetVersion, (b.dataset_id, b.version)))
                rows = read[dataset_id].get(uscc, [])
                period = b.schema.period_key
                if period:
                    rows = sorted(
                        (r for r in rows if str(r.get(period) or "")[:7] > cutoff),
                        key=lambda r: str(r.get(period) or ""),
                    )
                results[dataset_id] = self._through(b.schema, rows, per_field, dataset_id)
            document = {
                "format": QUERY_FORMAT,
                "id": new_id("qry"),
                "subject_uscc": uscc,
                "requested_by": bank_org_id,
                "purpose": purpose,
                "issued_at": format_time(now),
                "expires_at": format_time(now + self.ttl),
                "window": {"from_month": _month_back(now.date(), months - 1), "months": months},
                "consents": sorted({d.consent_id for d in decisions if d.consent_id}),
                "allowed": any(d.mode is not None for d in decisions),
                "sources": sources,
                "results": results,
                "withheld": self._withheld(decisions, {}),
            }
            issued.append(
                self._issue(
                    session, "query", document, decisions, bank_org_id, purpose, actor, request_id, now
                )
            )
        return issued

    def _bind_one(self, session: Session, dataset_id: str) -> BoundSource:
        from pps.infra.storage.tables import Dataset

        ds = session.get(Dataset, dataset_id)
        if ds is None or ds.current_version is None:
            raise InvalidInput(f"dataset {dataset_id} has no version to query")
        version = session.get(DatasetVersion, (ds.id, ds.current_version))
        assert version is not None
        return BoundSource(
            ds.name,
            ds.id,
            ds.provider_org_id,
            version.version,
            DatasetSchema.model_validate_json(version.schema_json),
        )

    # --- signing, storing, recording -------------------------------------------------------------------------

    def _issue(
        self,
        session: Session,
        kind: str,
        document: dict[str, Any],
        decisions: Sequence[FieldDecision],
        bank_org_id: str | None,
        purpose: str | None,
        actor: Actor,
        request_id: str | None,
        now: datetime,
    ) -> Issued:
        text = canonical(document)
        note = self.ledger.signer.sign(text)
        digest = hashlib.sha256(text.encode()).hexdigest()
        row = DisclosureDocument(
            id=document["id"],
            kind=kind,
            subject_uscc=document["subject_uscc"],
            bank_org_id=bank_org_id,
            purpose=purpose,
            digest=digest,
            created_at=now,
            expires_at=now + self.ttl,
            body=note,
        )
        session.add(row)
        session.flush()
        index = None
        if (
            bank_org_id is not None
        ):  # a bank's access is an entry in the subject's history; its own read is not
            modes = {f"{d.dataset_id}.{d.field}": d.mode.value for d in decisions if d.mode is not None}
            withheld = {
                f"{d.dataset_id}.{d.field}": d.reason.value if d.reason else "withheld"
                for d in decisions
                if d.mode is None
            }
            entry = self.ledger.append(
                session,
                EntryDraft(
                    action=f"disclosure.{kind}",
                    actor=actor,
                    objects=(
                        ObjectRef(kind, row.id),
                        *(ObjectRef("dataset", ds) for ds in sorted({d.dataset_id for d in decisions})),
                    ),
                    subjects=(row.subject_uscc,),
                    purpose=purpose,
                    consent_ids=tuple(document["consents"]),
                    released=(Release(to=bank_org_id, what=f"{kind} {row.id} sha256:{digest}"),)
                    if modes
                    else (),
                    request_id=request_id,
                    detail={
                        "bank": bank_org_id,
                        "operation": kind,
                        "modes": modes,
                        "withheld": withheld,
                        "expires_at": document["expires_at"],
                    },
                ),
                now=now,
            )
            index = entry.index
        return Issued(row, document, note, index)

    def get(
        self,
        session: Session,
        doc_id: str,
        *,
        bank_org_id: str | None,
        uscc: str | None,
        now: datetime | None = None,
    ) -> DisclosureDocument:
        """A stored document for the bank it was released to or the subject it is about; erased (Gone) once
        expired."""
        now = now or utcnow()
        row = session.get(DisclosureDocument, doc_id)
        mine = row is not None and (
            (bank_org_id is not None and row.bank_org_id == bank_org_id)
            or (uscc is not None and row.subject_uscc == uscc)
        )
        if row is None or not mine:
            raise NotFound(f"no document {doc_id}")
        if row.expires_at <= now:
            raise Gone(f"document {doc_id} expired at {format_time(row.expires_at)} and was erased")
        return row

    def sweep(self, session: Session, now: datetime | None = None) -> int:
        """Erase every expired document's body; returns how many."""
        now = now or utcnow()
        rows = session.scalars(
            select(DisclosureDocument).where(
                DisclosureDocument.expires_at <= now, DisclosureDocument.body.is_not(None)
            )
        ).all()
        for r in rows:
            r.body = None
        return len(rows)

    def released_about(self, session: Session, uscc: str) -> list[DisclosureDocument]:
        """Every document released about a subject (what its access history shows, with digests)."""
        return list(
            session.scalars(
                select(DisclosureDocument)
                .where(DisclosureDocument.subject_uscc == uscc)
                .order_by(DisclosureDocument.created_at.desc())
            )
        )
