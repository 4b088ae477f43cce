"""The audit ledger: checkpoints, entries with inclusion proofs, consistency proofs (``docs/audit.md``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from pps_wire.checkpoint import Checkpoint
from pps_wire.schemas.common import Response, b64


class CheckpointOut(Response):
    origin: str
    tree_size: int
    root_hash: str = Field(description="base64 SHA-256 root of the tree of tree_size entries")
    note: str = Field(description="the C2SP tlog-checkpoint signed note")

    @classmethod
    def of(cls, cp: Checkpoint) -> CheckpointOut:
        return cls(origin=cp.origin, tree_size=cp.tree_size, root_hash=b64(cp.root_hash), note=cp.note)


class PublicKeyOut(Response):
    origin: str
    key_name: str
    key_id: str = Field(description="hex, the 4-byte signed-note key id")
    verifier_key: str = Field(description="signed-note verifier key: <name>+<key id hex>+<base64(0x01||key)>")
    public_key_pem: str


class EntryOut(Response):
    index: int
    leaf_hash: str = Field(description="base64 SHA-256(0x00 || entry bytes)")
    entry_b64: str = Field(
        description="the exact canonical bytes that were hashed, base64 (empty where USCCs are masked)"
    )
    entry: dict[str, Any] = Field(description="the same entry, parsed")


class ProvenEntry(EntryOut):
    tree_size: int
    inclusion_proof: list[str] = Field(description="base64 hashes, leaf to root (RFC 9162 §2.1.3)")
    checkpoint: CheckpointOut | None = Field(
        None, description="the signed checkpoint at tree_size, if one was published"
    )


class ConsistencyOut(Response):
    first: int
    second: int
    proof: list[str]


class MineOut(Response):
    checkpoint: CheckpointOut
    items: list[ProvenEntry]
    next_after: int | None


# --- the entry document (the ``entry`` of EntryOut; pps.ledger.entry writes it) -------------------------------


class EntryActor(Response):
    org: str | None
    role: str
    via: str
    token: str | None = None


class EntryObject(Response):
    kind: str
    id: str


class EntryRelease(Response):
    to: str
    what: str


class LedgerEntry(Response):
    """A ledger entry's document (``docs/audit.md`` is the reference). ``redacted``: a view that withholds the
    other subjects, consent ids and details of an entry that touched several subjects (its bytes are not shown,
    so only its presence in the log can be checked)."""

    v: int
    index: int
    time: datetime
    actor: EntryActor
    action: str
    objects: list[EntryObject] = Field(default_factory=list)
    subjects: list[str] = Field(default_factory=list)
    purpose: str | None = None
    consent_ids: list[str] = Field(default_factory=list)
    released: list[EntryRelease] = Field(default_factory=list)
    request_id: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict, description="action-specific facts")
    redacted: bool = False
