"""A person withdraws and has its data deleted (PIPL Art. 47; Art. 15: withdrawal through a convenient channel).

What :meth:`Erasure.erase` does, in the caller's transaction (all of it or nothing):

* **consents end**: every active consent of the person is revoked, every pending request denied — no
  computation is admitted or released with them afterwards (the policy engine decides again at release);
* **its rows go**: in every dataset holding rows keyed by the person's code, the current version is copied
  without them under a new data key and every version that held them is crypto-shredded
  (:meth:`pps.data.datasets.service.DatasetService.erase_subject`: data keys are per version, not per
  subject, so shredding a version is how its copy of the person's rows becomes unreadable);
* **what the platform kept about it goes**: free reports, notices, disclosure accounting and the separate-grant
  records (the warning text named its fields); its account is closed and renamed, the masked ID number emptied;
* **the ledger keeps only the pseudonymous fact**: one ``person.erase`` entry naming the person code and the
  counts; earlier entries stay (they hold the code, never the number) and the log still verifies;
* **later uploads** naming the person are refused (``upload_rejected``) until the provider drops its rows.

Who learns what: the operator learns that the person asked for erasure (the code and the counts), nothing more.
Kept on purpose: the revoked consent rows (pseudonymous, the lawful basis of what was done before) and the
impact assessments (not about one person). Recovering the person needs the pseudonym key and the ID number.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from pps.data.datasets.service import DatasetService
from pps.errors import Conflict
from pps.governance.consent import ConsentService
from pps.infra.storage.tables import (
    Consent,
    ConsentState,
    Dataset,
    Disclosure,
    FreeReport,
    Organization,
    Person,
    PersonConsentTerms,
    PersonNotice,
    utcnow,
)
from pps.ledger.entry import Actor, EntryDraft, ObjectRef
from pps.ledger.store import Ledger


@dataclass(frozen=True)
class Erased:
    code: str
    consents_ended: int
    datasets: int
    rows_removed: int
    versions_shredded: int
    records_deleted: int
    erased_at: datetime


@dataclass
class Erasure:
    ledger: Ledger
    consents: ConsentService
    datasets: DatasetService

    def erase(
        self,
        session: Session,
        *,
        person: Person,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> Erased:
        if person.erased_at is not None:
            raise Conflict(f"the data of {person.code} was already erased at {person.erased_at.isoformat()}")
        now = now or utcnow()
        code = person.code
        ended = 0
        for consent in session.scalars(select(Consent).where(Consent.subject_uscc == code)).all():
            if consent.state is ConsentState.active:
                self.consents.revoke(session, consent, actor=actor, request_id=request_id, now=now)
                ended += 1
            elif consent.state is ConsentState.requested:
                self.consents.deny(
                    session, consent, reason="the person erased its data", actor=actor, request_id=request_id
                )
                ended += 1
        datasets = rows = versions = 0
        for ds in session.scalars(
            select(Dataset).where(Dataset.deleted_at.is_(None)).order_by(Dataset.id)
        ).all():
            done = self.datasets.erase_subject(session, ds, code, actor=actor, request_id=request_id, now=now)
            if done is not None:
                datasets += 1
                rows += done[0]
                versions += len(done[1])
        records = 0
        for table, column in (
            (FreeReport, FreeReport.subject_code),
            (PersonNotice, PersonNotice.subject_code),
            (PersonConsentTerms, PersonConsentTerms.subject_code),
            (Disclosure, Disclosure.subject_uscc),
        ):
            result = session.execute(delete(table).where(column == code))
            records += int(getattr(result, "rowcount", 0) or 0)
        person.erased_at = now
        person.id_masked = ""
        org = session.get(Organization, person.org_id)
        if org is not None:
            org.name = f"erased person ({code[-6:]})"
            if org.disabled_at is None:
                org.disabled_at = now  # its tokens stop working at once
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="person.erase",
                actor=actor,
                objects=(ObjectRef("org", person.org_id),),
                subjects=(code,),
                request_id=request_id,
                detail={
                    "consents_ended": ended,
                    "datasets": datasets,
                    "rows_removed": rows,
                    "versions_shredded": versions,
                    "records_deleted": records,
                },
            ),
            now=now,
        )
        return Erased(code, ended, datasets, rows, versions, records, now)
