"""Per-subject disclosure accounting across jobs and models, and the granularity each subject allowed.

Every release of a function of a subject's features to a bank is counted against that (bank, subject): the
distinct approved models (by digest) whose results reached the bank in the window. A model already counted
costs nothing more (the same function again reveals nothing new beyond noise, which graded outputs do not
have); a new one is refused once ``budget`` distinct models are counted, so k models cannot be solved for k
features one subject at a time. The subject sees the rows (``GET /v1/me/disclosures``) and each release is in
its access history (the ledger entry of the release names the model digest).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pps.infra.storage.tables import Consent, Disclosure, utcnow

DEFAULT_BUDGET = 3
DEFAULT_WINDOW_DAYS = 90
_CHUNK = 5000


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def granularity_of(session: Session, consent_ids: Mapping[str, str | None]) -> dict[str, str]:
    """Per subject, the granularity of the consent relied on (``subject -> consent id``)."""
    ids = sorted({c for c in consent_ids.values() if c})
    found: dict[str, str] = {}
    for chunk in _chunks(ids):
        for cid, level in session.execute(
            select(Consent.id, Consent.granularity).where(Consent.id.in_(chunk))
        ):
            found[cid] = level
    return {s: found.get(c or "", "decision") for s, c in consent_ids.items()}


@dataclass(frozen=True)
class Accounted:
    kept: list[str]
    refused: dict[str, str]
    """subject -> why (names the budget, the window and the models already counted)"""


@dataclass
class DisclosureAccounting:
    budget: int = DEFAULT_BUDGET
    window_days: int = DEFAULT_WINDOW_DAYS

    def spend(
        self,
        session: Session,
        *,
        bank: str,
        subjects: Sequence[str],
        model_digest: str,
        granularity: Mapping[str, str],
        now: datetime | None = None,
    ) -> Accounted:
        """Count this release for each subject (in the caller's transaction); subjects over budget are
        returned as refused and nothing is counted for them."""
        now = now or utcnow()
        since = now - timedelta(days=self.window_days)
        seen: dict[str, dict[str, Disclosure]] = {}
        for chunk in _chunks(list(subjects)):
            rows = session.scalars(
                select(Disclosure).where(
                    Disclosure.bank_org_id == bank,
                    Disclosure.subject_uscc.in_(chunk),
                    Disclosure.last_at > since,
                )
            )
            for row in rows:
                seen.setdefault(row.subject_uscc, {})[row.model_digest] = row
        kept: list[str] = []
        refused: dict[str, str] = {}
        for s in subjects:
            mine = seen.get(s, {})
            counted = mine.get(model_digest)
            if counted is not None:
                counted.last_at, counted.releases = now, counted.releases + 1
                kept.append(s)
                continue
            if len(mine) >= self.budget:
                refused[s] = (
                    f"results of {len(mine)} distinct models already reached this bank about this subject in "
                    f"the last {self.window_days} days (budget {self.budget}); a new model may score it after "
                    "the oldest leaves the window, or with the models already counted"
                )
                continue
            stale = session.get(Disclosure, (bank, s, model_digest))
            if stale is not None:  # counted before the window: counts again from now
                stale.first_at, stale.last_at, stale.releases = now, now, stale.releases + 1
                stale.granularity = granularity.get(s, "decision")
            else:
                session.add(
                    Disclosure(
                        bank_org_id=bank,
                        subject_uscc=s,
                        model_digest=model_digest,
                        granularity=granularity.get(s, "decision"),
                        first_at=now,
                        last_at=now,
                        releases=1,
                    )
                )
            kept.append(s)
        session.flush()
        return Accounted(kept, refused)

    def for_subject(self, session: Session, subject: str) -> list[dict[str, Any]]:
        """What the subject sees: per bank and model, when and how often, at which granularity."""
        rows = session.scalars(
            select(Disclosure).where(Disclosure.subject_uscc == subject).order_by(Disclosure.last_at.desc())
        )
        since = utcnow() - timedelta(days=self.window_days)
        return [
            {
                "bank_org_id": r.bank_org_id,
                "model_digest": r.model_digest,
                "granularity": r.granularity,
                "first_at": r.first_at,
                "last_at": r.last_at,
                "releases": r.releases,
                "in_window": r.last_at > since,
            }
            for r in rows
        ]
