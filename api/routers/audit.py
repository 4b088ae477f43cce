"""The audit ledger over HTTP: checkpoints, entries with inclusion proofs, consistency proofs.

Auditors and platform admins read every entry. Any other organisation reads the entries it made and, for a
subject (an enterprise), the entries that touch its USCC; other entries are answered with 404. Proof hashes
are standard base64, as in the transparency-dev test vectors; ``docs/audit.md`` describes every format.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import PlainTextResponse, Response
from sqlalchemy.orm import Session

from api.deps import MAX_INDEX, PUBLIC, Caller, PageLimit, RuntimeDep, allow
from api.middleware import current_request_id
from api.schemas import (
    CheckpointOut,
    ConsistencyOut,
    EntryOut,
    MineOut,
    Page,
    ProvenEntry,
    PublicKeyOut,
    b64,
)
from pps.errors import InvalidInput, InvalidProofRequest, NotFound
from pps.identity.uscc import mask_uscc, validate_uscc
from pps.infra.storage.tables import Role
from pps.ledger.store import EntryFilter, Ledger, StoredEntry
from pps.runtime import Runtime
from pps_wire.checkpoint import Checkpoint

router = APIRouter(prefix="/v1/audit", tags=["audit"])

AnyRole = Annotated[Caller, allow()]
Reader = Annotated[Caller, allow(Role.auditor, Role.platform_admin)]


def entry_out(e: StoredEntry) -> EntryOut:
    return EntryOut(
        index=e.index, leaf_hash=b64(e.leaf_hash), entry_b64=b64(e.entry), entry=json.loads(e.entry)
    )


REDACTED_KEEP = ("v", "index", "time", "actor", "action", "objects", "purpose", "released", "request_id")


def masked_entry_out(e: StoredEntry, caller: Caller) -> EntryOut:
    """An entry for an organisation that may see that it happened but not whom it touched (a provider's
    lineage): entries it made itself are whole; in others, USCCs are masked and consent ids and details
    (counts, fields) are withheld. The exact bytes are withheld too (they would reveal the USCCs), so such a
    reader cannot check the leaf hash itself; auditors can.
    """
    doc = json.loads(e.entry)
    if doc.get("actor", {}).get("org") == caller.org_id:
        return entry_out(e)
    shown = {k: doc[k] for k in REDACTED_KEEP if k in doc}
    shown.update(
        subjects=[mask_uscc(s) for s in doc.get("subjects", [])], consent_ids=[], detail={}, redacted=True
    )
    return EntryOut(index=e.index, leaf_hash=b64(e.leaf_hash), entry_b64="", entry=shown)


def entry_for(e: StoredEntry, caller: Caller) -> EntryOut:
    """An entry as ``caller`` may see it.

    Auditors and admins, the entry's own actor, and an enterprise that is the entry's only subject get the
    exact bytes. An enterprise named in an entry together with others (a bank's batch request) gets a
    redacted view — its own USCC, what was done, by whom, why, and what was released to whom, but not the
    other enterprises, the consent ids or the counts — with the leaf hash and proof but not the bytes, so it
    can check that the entry is in the signed log but not re-hash it (auditors can).
    """
    doc = json.loads(e.entry)
    own_action = doc.get("actor", {}).get("org") == caller.org_id
    only_subject = caller.uscc is not None and doc.get("subjects") == [caller.uscc]
    if caller.sees_everything or own_action or only_subject or caller.uscc is None:
        return EntryOut(index=e.index, leaf_hash=b64(e.leaf_hash), entry_b64=b64(e.entry), entry=doc)
    redacted = {k: doc[k] for k in REDACTED_KEEP if k in doc}
    redacted.update(subjects=[caller.uscc], consent_ids=[], detail={}, redacted=True)
    return EntryOut(index=e.index, leaf_hash=b64(e.leaf_hash), entry_b64="", entry=redacted)


def proven(
    session: Session, ledger: Ledger, e: StoredEntry, cp: Checkpoint, caller: Caller | None = None
) -> ProvenEntry:
    proof = ledger.inclusion_proof(session, e.index, cp.tree_size)
    shown = entry_for(e, caller) if caller is not None else entry_out(e)
    return ProvenEntry(
        **shown.model_dump(),
        tree_size=cp.tree_size,
        inclusion_proof=[b64(p) for p in proof],
        checkpoint=CheckpointOut.of(cp),
    )


def _current_checkpoint(rt: Runtime) -> Checkpoint:
    """The checkpoint of the current tree, publishing one if the ledger grew since the last."""
    with rt.db.transaction(write=False) as session:
        latest = rt.ledger.latest_checkpoint(session)
        if latest is not None and latest.tree_size == rt.ledger.size(session):
            return latest
    with rt.db.transaction() as session:
        return rt.ledger.publish_checkpoint(session)


@router.get("/public-key", dependencies=[PUBLIC], summary="the key that verifies checkpoints")
def public_key(rt: RuntimeDep) -> PublicKeyOut:
    signer = rt.ledger.signer
    return PublicKeyOut(
        origin=rt.ledger.origin,
        key_name=signer.name,
        key_id=signer.key_id.hex(),
        verifier_key=signer.verifier_key,
        public_key_pem=signer.public_key_pem,
    )


@router.get(
    "/checkpoint",
    summary="the signed checkpoint of the current ledger",
    responses={200: {"content": {"text/plain": {}}}},
)
def checkpoint(
    caller: AnyRole,
    rt: RuntimeDep,
    format: Annotated[
        str, Query(pattern="^(json|note)$", description="json, or note for the bare signed note")
    ] = "json",
) -> Response:
    cp = _current_checkpoint(rt)
    if format == "note":
        return PlainTextResponse(cp.note)
    return Response(CheckpointOut.of(cp).model_dump_json(), media_type="application/json")


@router.get("/checkpoints", summary="published checkpoints, oldest first")
def checkpoints(
    caller: Reader,
    rt: RuntimeDep,
    limit: PageLimit,
    after: Annotated[int | None, Query(ge=0, le=MAX_INDEX, description="tree size to continue after")] = None,
) -> Page[CheckpointOut]:
    with rt.db.transaction(write=False) as session:
        cps = rt.ledger.checkpoints(session, after_size=after, limit=limit)
    return Page(
        items=[CheckpointOut.of(c) for c in cps], next_after=cps[-1].tree_size if len(cps) == limit else None
    )


@router.get("/entries", summary="ledger entries, filtered, in index order")
def entries(
    caller: Reader,
    rt: RuntimeDep,
    limit: PageLimit,
    actor: Annotated[str | None, Query(max_length=40, description="actor organisation id")] = None,
    action: Annotated[str | None, Query(max_length=64, description="exact, or a prefix ending in .*")] = None,
    subject: Annotated[str | None, Query(max_length=18, description="USCC of a touched subject")] = None,
    purpose: Annotated[str | None, Query(max_length=64)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: Annotated[int | None, Query(ge=-1, le=MAX_INDEX, description="index to continue after")] = None,
) -> Page[EntryOut]:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InvalidInput(f"{name} needs a timezone, e.g. 2026-11-25T00:00:00Z")
        if value is not None:
            try:
                value.astimezone(UTC)
            except OverflowError:
                raise InvalidInput(f"{name} is out of range") from None
    flt = EntryFilter(
        actor_org_id=actor,
        action=action,
        subject=validate_uscc(subject) if subject else None,
        purpose=purpose,
        since=since,
        until=until,
    )
    with rt.db.transaction(write=False) as session:
        found = rt.ledger.entries(session, flt, after=after, limit=limit)
    if found:  # an overseer reading the record of every access: noted, written in batches
        rt.reads.note(
            actor=caller.actor,
            what="ledger.entries",
            subjects=[flt.subject] if flt.subject else (),
            request_id=current_request_id(),
        )
    return Page(
        items=[entry_out(e) for e in found], next_after=found[-1].index if len(found) == limit else None
    )


@router.get("/entries/{index}", summary="one entry with its inclusion proof")
def entry(
    index: Annotated[int, Path(le=MAX_INDEX)],
    caller: AnyRole,
    rt: RuntimeDep,
    tree_size: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_INDEX,
            description="prove inclusion in the tree of this size (default: the current checkpoint)",
        ),
    ] = None,
) -> ProvenEntry:
    if index < 0:
        raise NotFound(f"ledger entry {index} does not exist")
    with rt.db.transaction(write=False) as session:
        stored = rt.ledger.entry(session, index)
        if not caller.sees_everything and not rt.ledger.touches(
            session, index, org_id=caller.org_id, uscc=caller.uscc
        ):
            raise NotFound(f"ledger entry {index} does not exist")
        if tree_size is not None:
            if tree_size <= index:
                raise InvalidProofRequest(f"entry {index} is not in a tree of size {tree_size}")
            proof = rt.ledger.inclusion_proof(session, index, tree_size)
            try:
                cp_out: CheckpointOut | None = CheckpointOut.of(rt.ledger.checkpoint_at(session, tree_size))
            except NotFound:
                cp_out = None
            return ProvenEntry(
                **entry_for(stored, caller).model_dump(),
                tree_size=tree_size,
                inclusion_proof=[b64(p) for p in proof],
                checkpoint=cp_out,
            )
    cp = _current_checkpoint(rt)
    with rt.db.transaction(write=False) as session:
        return proven(session, rt.ledger, stored, cp, caller)


@router.get("/consistency", summary="consistency proof between two tree sizes")
def consistency(
    caller: AnyRole,
    rt: RuntimeDep,
    first: Annotated[int, Query(ge=1, le=MAX_INDEX)],
    second: Annotated[int, Query(ge=1, le=MAX_INDEX)],
) -> ConsistencyOut:
    with rt.db.transaction(write=False) as session:
        proof = rt.ledger.consistency_proof(session, first, second)
    return ConsistencyOut(first=first, second=second, proof=[b64(p) for p in proof])


@router.get("/mine", summary="entries I made and, for a subject, entries that touch my USCC, with proofs")
def mine(
    caller: AnyRole,
    rt: RuntimeDep,
    limit: PageLimit,
    after: Annotated[int | None, Query(ge=-1, le=MAX_INDEX)] = None,
) -> MineOut:
    flt = EntryFilter(involving=(caller.org_id, caller.uscc))
    cp = _current_checkpoint(rt)
    with rt.db.transaction(write=False) as session:
        found = [
            e for e in rt.ledger.entries(session, flt, after=after, limit=limit) if e.index < cp.tree_size
        ]
        items = [proven(session, rt.ledger, e, cp, caller) for e in found]
    return MineOut(
        checkpoint=CheckpointOut.of(cp),
        items=items,
        next_after=found[-1].index if len(found) == limit else None,
    )
