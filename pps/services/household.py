"""Authorised rating queries over farm and herding households (农牧户信用评定数据授权查询, seed measure 13).

A bank asks, for a purpose such as 农牧贷 (``farm_herding_loan``), for the 信用户 grade and rating date of
households it names by person code. Who learns what: the bank learns the grade and date of each household
whose consent (with its separate grants, ``pps.governance.persons``) covers exactly those two fields of the
``household_ratings`` dataset, and the reason for every other one — nothing else of the dataset, and not
whether a household without consent is on the platform (its answer is "no consent", like a stranger's).
The safe-room learns which households the bank asked about. The policy engine decides at admission and again
at release (spending one use of each consent), and the release is a ledger entry naming the consents.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy.orm import Session

from pps.data.datasets.service import DatasetService
from pps.data.sources import bind_sources
from pps.errors import InvalidInput
from pps.governance.policy import PolicyEngine, Request
from pps.identity.uscc import validate_uscc
from pps.infra.storage.tables import DatasetVersion, new_id, utcnow
from pps.ledger.entry import Actor, ObjectRef

RATINGS_SOURCE = "household_ratings"
RATING_FIELDS = ("grade", "rated_on")
MAX_SUBJECTS = 1_000


@dataclass(frozen=True)
class RatingAnswer:
    subject: str
    grade: str | None = None
    rated_on: str | None = None
    denied: str | None = None
    """the reason, when no rating is released for this subject"""


class HouseholdRatings:
    def __init__(self, policy: PolicyEngine, datasets: DatasetService) -> None:
        self.policy = policy
        self.datasets = datasets

    def query(
        self,
        session: Session,
        *,
        bank_org_id: str,
        subjects: list[str],
        purpose: str,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> list[RatingAnswer]:
        if not subjects or len(subjects) > MAX_SUBJECTS:
            raise InvalidInput(f"name between 1 and {MAX_SUBJECTS} households")
        codes = [validate_uscc(s) for s in subjects]
        if len(set(codes)) != len(codes):
            raise InvalidInput("name each household once")
        binding = bind_sources(session, (RATINGS_SOURCE,))
        bound = binding.bound.get(RATINGS_SOURCE)
        if bound is None:
            raise InvalidInput(f"no household ratings to query: {binding.unavailable.get(RATINGS_SOURCE)}")
        now = now or utcnow()
        req = Request(bank_org_id, tuple(codes), {bound.dataset_id: RATING_FIELDS}, "score", purpose)
        job = ObjectRef("rating_query", new_id("rq"))
        admitted = self.policy.admit(session, req, job=job, actor=actor, request_id=request_id, now=now)
        allowed = [d.subject for d in admitted if d.allowed]
        values: dict[str, tuple[str | None, str | None]] = {}
        if allowed:
            version = session.get(DatasetVersion, (bound.dataset_id, bound.version))
            assert version is not None
            cols = self.datasets.read_columns(session, version, [bound.schema.subject_key, *RATING_FIELDS])
            keys = np.asarray(cols[bound.schema.subject_key].values, dtype=object)
            wanted = set(allowed)
            for i in np.flatnonzero(np.fromiter((k in wanted for k in keys.tolist()), bool, len(keys))):
                grade = cols["grade"].values[i] if cols["grade"].valid[i] else None
                rated = cols["rated_on"].values[i] if cols["rated_on"].valid[i] else None
                values[str(keys[i])] = (
                    None if grade is None else str(grade),
                    None if rated is None else str(rated),
                )
        final = []
        if allowed:
            final = self.policy.release(
                session,
                Request(bank_org_id, tuple(allowed), req.fields, "score", purpose),
                job=job,
                what="household_rating",
                actor=actor,
                request_id=request_id,
                now=now,
                admitted=[d for d in admitted if d.allowed],
            )
        released = {d.subject: d for d in final}
        answers = []
        for d in admitted:
            r = released.get(d.subject)
            if not d.allowed:
                answers.append(RatingAnswer(d.subject, denied=f"{d.reason}: {d.detail}"))
            elif r is None or not r.allowed:
                answers.append(
                    RatingAnswer(d.subject, denied=f"{r.reason}: {r.detail}" if r else "not released")
                )
            elif d.subject not in values:
                answers.append(
                    RatingAnswer(d.subject, denied="no_data: the household has no rating on record")
                )
            else:
                grade, rated = values[d.subject]
                answers.append(RatingAnswer(d.subject, grade=grade, rated_on=rated))
        return answers
