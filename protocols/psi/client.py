"""The bank's half of one PSI session: a fresh client key per session that never leaves the object, the REQUEST,
and the answer computed from the server's SETUP and RESPONSE (:class:`PSIResult`)."""

from __future__ import annotations

import enum
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from private_set_intersection import python as _psi

from protocols.errors import InvalidParameters, InvalidPSIMessage, PSISetTooLarge, PSIStageError
from protocols.psi.messages import (
    DEFAULT_FPR,
    DEFAULT_MAX_CLIENT_ITEMS,
    MAX_CLIENT_ITEMS,
    Normalise,
    RequestMessage,
    SetupStructure,
    decode_response,
    decode_setup,
    library_setup,
    message_digest,
)
from protocols.psi.server import first_line


class ClientStage(enum.Enum):
    NEW = "new"
    AWAITING_RESPONSE = "awaiting_response"
    DONE = "done"


# --- the client half ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PSIResult:
    reveal_intersection: bool
    size: int
    intersection: frozenset[str] | None
    """The client's items found in the server set; ``None`` in size-only mode."""
    client_set_size: int
    server_set_size: int
    """As the SETUP message states it (the data structures reveal it anyway)."""
    fpr: float
    """The bound on false members in this answer (0.0 for RAW)."""


class PSIClient:
    """The bank's half of one PSI session. The client key is fresh per session and never leaves the object.

    Stages: ``NEW`` --:meth:`create_request`--> ``AWAITING_RESPONSE`` --:meth:`finish`--> ``DONE``.
    Items are put in their canonical form by the caller's ``normalise`` (which raises the caller's error for an
    invalid item; the item's position is added to it as a note) and deduplicated; a list longer than
    ``max_items`` (the server's ``max_client_items``) is refused before any work.
    ``max_fpr`` refuses a setup whose false-positive bound is worse than the bank accepts.
    """

    def __init__(
        self,
        items: Iterable[str],
        *,
        normalise: Normalise,
        reveal_intersection: bool,
        max_items: int = DEFAULT_MAX_CLIENT_ITEMS,
        max_fpr: float = DEFAULT_FPR,
    ) -> None:
        if isinstance(items, str | bytes):
            raise TypeError("items must be an iterable of strings, not a single string")
        if not isinstance(reveal_intersection, bool):
            raise TypeError("reveal_intersection must be a bool")
        if (
            isinstance(max_items, bool)
            or not isinstance(max_items, int)
            or not 1 <= max_items <= MAX_CLIENT_ITEMS
        ):
            raise InvalidParameters(f"max_items must be an int in [1, {MAX_CLIENT_ITEMS}], got {max_items!r}")
        if not (isinstance(max_fpr, float | int) and 0.0 < max_fpr < 1.0):
            raise InvalidParameters(f"max_fpr must be in (0, 1), got {max_fpr!r}")
        raw = list(items)
        if len(raw) > max_items:
            raise PSISetTooLarge(f"the customer list has {len(raw)} items; at most {max_items} are allowed")
        if not raw:
            raise InvalidParameters("the customer list is empty")
        normalised: set[str] = set()
        for i, x in enumerate(raw):
            try:
                normalised.add(normalise(x))
            except Exception as exc:  # the caller's error for an invalid item, as it raised it
                exc.add_note(f"customer list item {i}")
                raise
        ordered = list(normalised)
        secrets.SystemRandom().shuffle(ordered)
        self._items: tuple[str, ...] = tuple(ordered)
        self.reveal_intersection = reveal_intersection
        self.max_fpr = float(max_fpr)
        self.stage = ClientStage.NEW
        self._client = _psi.client.CreateWithNewKey(reveal_intersection)
        self._request: bytes | None = None

    @property
    def set_size(self) -> int:
        return len(self._items)

    def create_request(self) -> bytes:
        if self.stage is not ClientStage.NEW:
            raise PSIStageError(f"this PSI session already made its request (stage {self.stage.value})")
        library_request = self._client.CreateRequest(list(self._items))
        points = tuple(bytes(p) for p in library_request.encrypted_elements)
        self._request = RequestMessage(self.reveal_intersection, points).to_bytes()
        self.stage = ClientStage.AWAITING_RESPONSE
        return self._request

    def finish(self, setup: bytes, response: bytes) -> PSIResult:
        """Check both server messages and compute the result. A failure changes nothing (retry allowed)."""
        if self.stage is not ClientStage.AWAITING_RESPONSE or self._request is None:
            raise PSIStageError(f"finish() needs a request in flight (stage {self.stage.value})")
        setup_msg = decode_setup(setup)
        response_msg = decode_response(response)
        if response_msg.request_digest != message_digest(self._request):
            raise InvalidPSIMessage("the response does not answer this session's request")
        if response_msg.setup_digest != message_digest(bytes(setup)):
            raise InvalidPSIMessage("the response was not made with this setup (different server key or set)")
        if len(response_msg.points) != self.set_size:
            raise InvalidPSIMessage(
                f"the response has {len(response_msg.points)} points for {self.set_size} items"
            )
        if self.set_size > setup_msg.max_client_items:
            raise PSISetTooLarge(
                f"the setup allows at most {setup_msg.max_client_items} client items, this set has {self.set_size}"
            )
        if setup_msg.structure is SetupStructure.GCS and setup_msg.fpr > self.max_fpr:
            raise InvalidPSIMessage(
                f"the setup's false-positive rate {setup_msg.fpr} is above max_fpr {self.max_fpr}"
            )
        library_response = _psi.Response()
        library_response.encrypted_elements.extend(response_msg.points)
        indices: set[int] = set()
        size = 0
        try:
            for parsed in setup_msg._parsed:
                shard = library_setup(parsed, setup_msg.structure)
                if self.reveal_intersection:
                    indices.update(self._client.GetIntersection(shard, library_response))
                else:
                    size += int(self._client.GetIntersectionSize(shard, library_response))
        except (RuntimeError, ValueError) as exc:
            raise InvalidPSIMessage(
                f"the server's messages could not be processed: {first_line(exc)}"
            ) from None
        if any(not 0 <= i < self.set_size for i in indices):  # pragma: no cover - library contract
            raise InvalidPSIMessage("the library returned an index outside the request")
        intersection = frozenset(self._items[i] for i in indices) if self.reveal_intersection else None
        self.stage = ClientStage.DONE
        return PSIResult(
            reveal_intersection=self.reveal_intersection,
            size=len(indices) if self.reveal_intersection else min(size, self.set_size),
            intersection=intersection,
            client_set_size=self.set_size,
            server_set_size=setup_msg.server_set_size,
            fpr=setup_msg.fpr if setup_msg.structure is SetupStructure.GCS else 0.0,
        )
