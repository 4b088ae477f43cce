"""PSI as a service: a bank learns which of its customers consented to it for a purpose (or only how many).

The bank runs the client half (``protocols.psi.PSIClient``, or any client that speaks the wire format in
``docs/protocols.md``) and sends its REQUEST message; the safe-room answers in a job:

1. the server set is formed **from consent**, not from the request: the USCCs of the subjects whose consent
   allows ``psi`` for this bank and purpose now (the policy engine decides);
2. the setup for that exact set comes from the per-(bank, purpose) cache, or is prepared (sharded, in
   parallel) and cached; a changed set never reuses a cached setup;
3. the REQUEST is answered; the result (SETUP + RESPONSE) is released only if, at release, the consented
   set is still the same one — a revocation while the job ran fails the job and releases nothing;
4. the release is a ledger entry naming every subject in the server set and their consents, so each of them
   sees that the bank ran a PSI over a set that contained it (redacted to itself).

With ``operation="train"`` the same job aligns rows for a vertical training (:mod:`pps.services.vertical`):
the server set is then the subjects whose consent allows *training* for this bank and purpose.

PSI spends no consent *uses*: the safe-room cannot know whose records matched. What the bank and the
safe-room learn is stated in ``protocols.psi``; the setup cache and the price of reusing a server key in
:mod:`pps.services.psi_cache`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from pps.errors import Conflict, InvalidInput
from pps.governance.consent import check_purpose
from pps.governance.policy import PolicyEngine, Request
from pps.infra.jobs import JobContext, JobOutcome, JobService
from pps.infra.storage.db import Database
from pps.infra.storage.tables import Job
from pps.ledger.entry import Actor, ObjectRef
from pps.services.psi_cache import SetupCache
from pps_wire.frames import PSI_RESULT_MEDIA_TYPE, pack_psi_result
from protocols.psi import PSIParams, PSIServer, ServerSet, decode_request

PSI_OPERATIONS = frozenset({"psi", "train"})


@dataclass
class PSIService:
    db: Database
    policy: PolicyEngine
    jobs: JobService
    cache: SetupCache
    params: PSIParams
    workers: int | None = None

    def __post_init__(self) -> None:
        self.jobs.register("psi", self._run)

    def submit(
        self,
        session: Session,
        *,
        actor: Actor,
        purpose: str,
        reveal_intersection: bool,
        request: bytes,
        request_id: str | None = None,
        operation: str = "psi",
    ) -> Job:
        """Check the request at the door and queue the job (enqueue it after the commit).

        ``operation`` is the consent operation that forms the server set: ``psi`` (which customers consented
        to me) or ``train`` (alignment for a vertical training)."""
        check_purpose(purpose)
        if operation not in PSI_OPERATIONS:
            raise InvalidInput(f"operation must be one of {sorted(PSI_OPERATIONS)}")
        msg = decode_request(request)  # InvalidPSIMessage for garbage, before anything is stored
        if msg.reveal_intersection != reveal_intersection:
            raise InvalidInput("the request message and the requested mode (intersection or size) disagree")
        if len(msg.points) > self.params.max_client_items:
            raise InvalidInput(f"a PSI request may hold at most {self.params.max_client_items} items")
        return self.jobs.submit(
            session,
            kind="psi",
            actor=actor,
            purpose=purpose,
            params={
                "reveal": "intersection" if reveal_intersection else "size",
                "client_set_size": len(msg.points),
                **({} if operation == "psi" else {"operation": operation}),
            },
            input_blob=request,
            input_media_type="application/vnd.pps.psi-request",
            request_id=request_id,
        )

    def _run(self, ctx: JobContext) -> JobOutcome:
        if ctx.purpose is None or ctx.input is None:
            raise InvalidInput("a PSI job needs a purpose and a request")
        bank, purpose = ctx.owner_org_id, ctx.purpose
        reveal = ctx.params["reveal"] == "intersection"
        operation = str(ctx.params.get("operation", "psi"))
        cache_key = purpose if operation == "psi" else f"{purpose}#{operation}"
        with self.db.transaction(write=False) as s:
            admitted = self.policy.consented_subjects(
                s, bank_org_id=bank, purpose=purpose, operation=operation
            )
        subjects = tuple(d.subject for d in admitted)
        ctx.progress(1, 3)
        server_set = ServerSet.of(subjects)
        setup, outcome = self.cache.get_or_prepare(
            bank, cache_key, server_set, self.params, workers=self.workers
        )
        ctx.progress(2, 3)
        server = PSIServer(setup, reveal_intersection=reveal)
        response = server.process_request(ctx.input)
        ctx.progress(3, 3)

        def finalize(session: Session) -> dict[str, Any]:
            now_allowed = self.policy.consented_subjects(
                session, bank_org_id=bank, purpose=purpose, operation=operation
            )
            if {d.subject for d in now_allowed} != set(subjects):
                self.cache.invalidate(bank, cache_key)
                raise Conflict("consent changed while the PSI ran; nothing was released — submit it again")
            self.policy.record(
                session,
                "policy.release",
                Request(bank, subjects, {}, operation, purpose),
                now_allowed,
                job=ObjectRef("job", ctx.job_id),
                actor=Actor(None, "service", "job"),
                what=f"psi:{ctx.params['reveal']}",
            )
            return {
                "server_set_size": len(subjects),
                "client_set_size": int(ctx.params["client_set_size"]),
                "reveal": ctx.params["reveal"],
                "setup_cache": outcome.value,
            }

        return JobOutcome(
            result=pack_psi_result(server.setup_message(), response),
            media_type=PSI_RESULT_MEDIA_TYPE,
            finalize=finalize,
            released_what=str(ctx.params["reveal"]),  # the job entry reads "psi:<mode>"
        )
