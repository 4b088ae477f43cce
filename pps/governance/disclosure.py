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

from sqlalchemy import insert, select, update
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
        session.flush()  # rows of this transaction are read below, and written back in bulk
        # one read per chunk of every row of (bank, subject): those in the window count against the budget,
        # an older one of this model is counted again from now (no statement per subject on the hot path)
        seen: dict[str, dict[str, int]] = {}  # subject -> {model digest in the window: releases}
        stale: dict[str, int] = {}  # subject -> releases of this model, counted before the window
        for chunk in _chunks(list(dict.fromkeys(subjects))):
            rows = session.execute(
                select(
                    Disclosure.subject_uscc, Disclosure.model_digest, Disclosure.last_at, Disclosure.releases
                ).where(Disclosure.bank_org_id == bank, Disclosure.subject_uscc.in_(chunk))
            )
            for subject, digest, last_at, releases in rows:
                if last_at > since:
                    seen.setdefault(subject, {})[digest] = releases
                elif digest == model_digest:
                    stale[subject] = releases
        kept: list[str] = []
        refused: dict[str, str] = {}
        updates: list[dict[str, Any]] = []
        inserts: list[dict[str, Any]] = []
        for s in dict.fromkeys(subjects):
            mine = seen.get(s, {})
            key = {"bank_org_id": bank, "subject_uscc": s, "model_digest": model_digest}
            if model_digest in mine:
                updates.append(key | {"last_at": now, "releases": mine[model_digest] + 1})
                kept.append(s)
                continue
            if len(mine) >= self.budget:
                refused[s] = (
                    f"results of {len(mine)} distinct models already reached this bank about this subject in "
                    f"the last {self.window_days} days (budget {self.budget}); a new model may score it after "
                    "the oldest leaves the window, or with the models already counted"
                )
                continue
            fresh = {"first_at": now, "last_at": now, "granularity": granularity.get(s, "decision")}
            if s in stale:  # counted before the window: counts again from now
                updates.append(key | fresh | {"releases": stale[s] + 1})
            else:
                inserts.append(key | fresh | {"releases": 1})
            kept.append(s)
        if inserts:
            session.execute(insert(Disclosure), inserts)
        if updates:
            session.execute(update(Disclosure), updates)  # by primary key, one executemany
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
