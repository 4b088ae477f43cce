"""PSI: a bank submits its encrypted customer list; the answer comes back as a job result.

The bank runs the client half (``protocols.psi.PSIClient`` or ``pps_client.Client.psi.run``); the request
holds only its customers' USCCs blinded under a fresh key. The server set is formed from consent.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import APIRouter, status

from api.deps import Caller, RuntimeDep, allow
from api.middleware import current_request_id
from api.schemas import JobPublic, job_public
from pps.errors import InvalidInput
from pps.infra.storage.tables import Role
from pps_wire.schemas import PSIRequestIn

router = APIRouter(prefix="/v1", tags=["psi"])

Bank = Annotated[Caller, allow(Role.bank)]


@router.post(
    "/psi",
    status_code=status.HTTP_202_ACCEPTED,
    summary="which of my customers consented to me (PSI), as a job",
)
def submit_psi(body: PSIRequestIn, caller: Bank, rt: RuntimeDep) -> JobPublic:
    try:
        request = base64.b64decode(body.request, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("request must be base64") from None
    with rt.db.transaction() as session:
        job = rt.psi.submit(
            session,
            actor=caller.actor,
            purpose=body.purpose,
            reveal_intersection=body.reveal == "intersection",
            request=request,
            request_id=current_request_id(),
            operation=body.operation,
        )
        out = job_public(job)
    rt.jobs.enqueue(job.id)
    return out
