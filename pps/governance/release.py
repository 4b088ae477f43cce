"""Decide at admission, decide again at release, refuse what was lost: the one sequence every computation on
subjects' data follows (scoring, sealed queries, aggregates, enclave jobs, vertical training and scoring).

1. **Admission** — the policy engine decides per subject, before any work, and records ``policy.admit``
   (``PolicyEngine.admit``; for computations on features, ``pps.data.features.admit_on_features``).
2. The computation runs on the admitted subjects only.
3. **Release** — in the transaction that makes the result visible, a :class:`Gate` decides again and spends
   one use of each consent relied on (``PolicyEngine.release``, a ``policy.release`` entry): a consent revoked,
   expired or used up meanwhile stops that subject. What happens to a lost subject depends on the result:
   * :meth:`Gate.release_all` — results that cannot leave without every subject (a model, a cohort
     statistic, a sealed score batch, an enclave release): any loss refuses the release with a
     :class:`~pps.errors.Conflict` naming how many were lost, and the caller's transaction rolls back;
   * :meth:`Gate.release_some` — results made per subject (scores): the lost are named with their reasons,
     the caller recomputes without them, and the rest leave;
   * :meth:`Gate.confirm_all` — the final result of a computation that released as it went and spent its uses
     when the first value left (a vertical training, which also decides again before every mini-batch,
     :mod:`pps.services.vertical`): decided again (:meth:`PolicyEngine.in_force`), nothing spent twice.

Dishonesty records are decided again the same way: a gate given the records a computation counted per subject
(``records``, from :attr:`pps.data.features.Admission.records`) holds back a subject one of whose counted
records was repaired, or reached the end of its publicity or retention period, since admission
(``record_excluded``; :mod:`pps.governance.records`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from sqlalchemy.orm import Session

from pps.errors import Conflict
from pps.governance.policy import Decision, DenyReason, PolicyEngine, Request
from pps.governance.records import Counted, RecordBook
from pps.ledger.entry import Actor, ObjectRef


@dataclass(frozen=True)
class Released:
    """The subjects whose consent held at release, in request order, and the decisions of those it did not."""

    kept: tuple[str, ...]
    lost: tuple[Decision, ...]


@dataclass(frozen=True)
class Gate:
    """The release half of a computation: what it was admitted for (``request``: the bank, the fields, the
    operation and the purpose) and under which admission decisions (``admitted``, optional: they make the
    second decision one guarded spend per consent for a large batch)."""

    policy: PolicyEngine
    request: Request
    job: ObjectRef
    actor: Actor
    request_id: str | None = None
    records: Mapping[str, Sequence[Counted]] | None = None
    """per subject, the dishonesty records the computation counted (None: it reads none)"""

    def for_subjects(self, subjects: Sequence[str]) -> Gate:
        """The same gate for the subjects the computation actually used."""
        return replace(self, request=replace(self.request, subjects=tuple(subjects)))

    def _decide(self, session: Session, what: str, admitted: Sequence[Decision] | None) -> Released:
        withheld = RecordBook.withheld(session, self.records, self.request.subjects) if self.records else None
        final = self.policy.release(
            session,
            self.request,
            job=self.job,
            what=what,
            actor=self.actor,
            request_id=self.request_id,
            admitted=admitted,
            withheld=withheld,
        )
        return Released(
            tuple(d.subject for d in final if d.allowed), tuple(d for d in final if not d.allowed)
        )

    def release_some(
        self, session: Session, *, what: str, admitted: Sequence[Decision] | None = None
    ) -> Released:
        """Decide again and spend uses; the caller releases the kept subjects' results only."""
        return self._decide(session, what, admitted)

    def release_all(
        self, session: Session, *, what: str, refusal: str, admitted: Sequence[Decision] | None = None
    ) -> tuple[str, ...]:
        """Decide again and spend uses; if any subject was lost, raise :class:`Conflict`: ``"the consent of N
        subject(s) " + refusal`` (say what was not released and what to do)."""
        released = self._decide(session, what, admitted)
        if released.lost:
            # how many, never who: a cohort's or a training's members are not the bank's to learn
            records = any(d.reason is DenyReason.record_excluded for d in released.lost)
            what_changed = "the consent or dishonesty records" if records else "the consent"
            raise Conflict(f"{what_changed} of {len(released.lost)} subject(s) {refusal}")
        return released.kept

    def confirm_all(
        self, session: Session, *, what: str, refusal: str, admitted: Sequence[Decision]
    ) -> tuple[str, ...]:
        """:meth:`release_all` for a computation that already spent its uses when it first released (a vertical
        training, at its first mini-batch): decide again whether the consents relied on still hold, record it,
        spend nothing; raise :class:`Conflict` if any subject was lost."""
        withheld = RecordBook.withheld(session, self.records, self.request.subjects) if self.records else None
        final = self.policy.confirm(
            session,
            self.request,
            admitted=admitted,
            job=self.job,
            what=what,
            actor=self.actor,
            request_id=self.request_id,
            withheld=withheld,
        )
        lost = [d for d in final if not d.allowed]
        if lost:
            records = any(d.reason is DenyReason.record_excluded for d in lost)
            what_changed = "the consent or dishonesty records" if records else "the consent"
            raise Conflict(f"{what_changed} of {len(lost)} subject(s) {refusal}")
        return tuple(d.subject for d in final)
