"""The audit ledger: checkpoints, entries with inclusion proofs, consistency proofs — and their verification."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from pps_client._resources._base import Resource
from pps_client._types import VerifiedEntry
from pps_client._verify import Verifier, verify_checkpoint, verify_consistency, verify_entry
from pps_wire.checkpoint import Checkpoint
from pps_wire.schemas import (
    CheckpointOut,
    ConsistencyOut,
    EntryOut,
    MineOut,
    Page,
    ProvenEntry,
    PublicKeyOut,
)


class Ledger(Resource):
    def public_key(self) -> PublicKeyOut:
        """The key that verifies checkpoints, as the service says it. Fetch it once, compare it with the one
        published out of band, and pin it (:func:`pps_client.note_verifier`)."""
        return self._client._call("GET", "/v1/audit/public-key", PublicKeyOut)

    def checkpoint(self) -> CheckpointOut:
        """The signed checkpoint of the current ledger (published if the ledger grew)."""
        return self._client._call("GET", "/v1/audit/checkpoint", CheckpointOut)

    def checkpoint_note(self) -> str:
        """The same checkpoint as the bare signed note (``format=note``)."""
        return self._client._request("GET", "/v1/audit/checkpoint", params={"format": "note"}).text

    def checkpoints(self) -> list[CheckpointOut]:
        """Every published checkpoint, oldest first (auditors, admins), following the pages."""
        return self._client._pages("/v1/audit/checkpoints", CheckpointOut)

    def entries(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        subject: str | None = None,
        purpose: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: int | None = None,
        limit: int | None = None,
    ) -> Page[EntryOut]:
        """One page of entries in index order (auditors, admins): ``action`` exact or a prefix ending in
        ``.*``; times need a timezone. Continue with ``after=page.next_after``."""
        params: dict[str, Any] = {
            "actor": actor,
            "action": action,
            "subject": subject,
            "purpose": purpose,
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
            "after": after,
            "limit": limit,
        }
        return self._client._call("GET", "/v1/audit/entries", Page[EntryOut], params=params)

    def entry(self, index: int, *, tree_size: int | None = None) -> ProvenEntry:
        """One entry with its inclusion proof in the current checkpoint (or in the tree of ``tree_size``)."""
        return self._client._call(
            "GET", f"/v1/audit/entries/{index}", ProvenEntry, params={"tree_size": tree_size}
        )

    def consistency(self, first: int, second: int) -> ConsistencyOut:
        """The consistency proof between two tree sizes."""
        return self._client._call(
            "GET", "/v1/audit/consistency", ConsistencyOut, params={"first": first, "second": second}
        )

    def mine(self, *, after: int | None = None, limit: int | None = None) -> MineOut:
        """One page of the entries this organisation made and, for a subject, those that touch its USCC — each
        with its inclusion proof in the returned checkpoint."""
        return self._client._call("GET", "/v1/audit/mine", MineOut, params={"after": after, "limit": limit})

    # --- verification (here, against a pinned key) --------------------------------------------------

    def verified_entry(self, index: int, verifier: Verifier) -> VerifiedEntry:
        """Fetch entry ``index`` with its proof and verify it against the pinned ``verifier``
        (:func:`pps_client.verify_entry`)."""
        return verify_entry(self.entry(index), verifier)

    def verify_consistency(
        self, old_note: str, new_note: str, verifier: Verifier
    ) -> tuple[Checkpoint, Checkpoint]:
        """Verify two signed checkpoints and that the newer extends the older, fetching the proof between
        them; returns both parsed."""
        verifiers = [verifier] if not isinstance(verifier, list | tuple) else list(verifier)
        origin = getattr(verifiers[0], "name", None) if verifiers else None
        old = verify_checkpoint(old_note, verifier, origin=origin)
        new = verify_checkpoint(new_note, verifier, origin=origin)
        proof: list[bytes] = []
        if 0 < old.tree_size <= new.tree_size:
            proof = [base64.b64decode(p) for p in self.consistency(old.tree_size, new.tree_size).proof]
        verify_consistency(old, new, proof)
        return old, new
