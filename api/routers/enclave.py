"""The simulated enclave: quotes for any caller's nonce, and a bank's attested jobs on joint data.

A bank verifies the quote itself (``pps_client.verify_quote``) before it encrypts anything to the enclave; the
formats are in ``docs/protocols.md`` ("Simulated enclave").
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import APIRouter, Query, status

from api.deps import Caller, RuntimeDep, allow
from api.middleware import current_request_id
from api.schemas import JobPublic, job_public
from pps.errors import InvalidInput
from pps.infra.storage.tables import Role
from pps_wire.quote import Quote
from pps_wire.schemas import HEX64, EnclaveJobIn, QuoteOut

router = APIRouter(prefix="/v1/enclave", tags=["enclave"])

JOBS_PATH = "/v1/enclave/jobs"

Anyone = Annotated[Caller, allow()]
Bank = Annotated[Caller, allow(Role.bank)]


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{what} must be base64") from None


@router.get("/quote", summary="an attestation quote of the enclave for your nonce")
def enclave_quote(
    caller: Anyone,
    rt: RuntimeDep,
    nonce: Annotated[str, Query(pattern=HEX64, description="32 random bytes of your choice, hex")],
) -> QuoteOut:
    raw = rt.enclave.quote(bytes.fromhex(nonce))
    with rt.db.transaction() as session:  # the quote leaves only once its issue is on the record
        rt.enclave.record_quote(session, raw, actor=caller.actor, request_id=current_request_id())
    q = Quote.parse(raw)
    return QuoteOut(
        quote=base64.b64encode(raw).decode(),
        quote_hash=q.quote_hash.hex(),
        measurement=q.measurement.hex(),
        isv_svn=q.isv_svn,
        debug=q.debug,
        enclave_key=q.enclave_key.hex(),
        vendor_key=rt.enclave.vendor_public_bytes().hex(),
    )


@router.post(
    "/jobs",
    status_code=status.HTTP_202_ACCEPTED,
    summary="train gradient-boosted trees on your encrypted rows joined with consented platform features",
)
def submit_enclave_job(body: EnclaveJobIn, caller: Bank, rt: RuntimeDep) -> JobPublic:
    enc, ct = _b64(body.rows.enc, "rows.enc"), _b64(body.rows.ciphertext, "rows.ciphertext")
    if len(enc) != 32:
        raise InvalidInput("rows.enc must be 32 bytes (an X25519 encapsulated key)")
    checked = rt.enclave.check_gbdt(
        purpose=body.purpose,
        subjects=None if body.subjects == "all_consented" else list(body.subjects),
        features=body.features,
        params=body.params.model_dump(),
        release=body.output.release,
        recipient_key=body.output.recipient_key.lower() if body.output.recipient_key else None,
    )
    quote_hash = bytes.fromhex(body.quote_hash)
    handle, receipt = rt.enclave.provision(checked, quote_hash=quote_hash, ciphertext=enc + ct)
    try:
        with rt.db.transaction() as session:
            job = rt.enclave.submit(
                session,
                checked,
                handle=handle,
                receipt=receipt,
                quote_hash=quote_hash,
                actor=caller.actor,
                request_id=current_request_id(),
            )
            out = job_public(job)
    except BaseException:
        rt.enclave.drop(handle)  # no job, no entry: the enclave forgets the rows
        raise
    rt.jobs.enqueue(job.id)
    return out
