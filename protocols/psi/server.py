"""The safe-room's half of one PSI session: it re-encrypts the client's REQUEST under the server key of a prepared
(possibly cached) setup and records what it saw (:class:`ServerTranscript`: sizes and digests, no items, no key)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from private_set_intersection import python as _psi

from protocols.errors import InvalidPSIMessage, PSISetTooLarge, PSIStageError
from protocols.psi.messages import ResponseMessage, decode_request, message_digest
from protocols.psi.setup import PreparedSetup


class ServerStage(enum.Enum):
    AWAITING_REQUEST = "awaiting_request"
    RESPONDED = "responded"


# --- the server half ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerTranscript:
    """What the server saw and sent in one session: what the service records in the ledger. No secrets."""

    reveal_intersection: bool
    server_set_size: int
    server_set_digest: str
    setup_digest: str
    client_set_size: int | None
    """The only thing the server learns about the client's set."""
    request_digest: str | None
    response_digest: str | None


class PSIServer:
    """The safe-room's half of one PSI session, over a prepared (possibly cached) setup.

    Stages: ``AWAITING_REQUEST`` --:meth:`process_request`--> ``RESPONDED``. :meth:`setup_message` may be
    sent at any stage. One request per session; a malformed request changes nothing.
    """

    def __init__(self, setup: PreparedSetup, *, reveal_intersection: bool) -> None:
        if not isinstance(setup, PreparedSetup):
            raise TypeError(f"setup must be a PreparedSetup, got {type(setup).__name__}")
        if not isinstance(reveal_intersection, bool):
            raise TypeError("reveal_intersection must be a bool")
        self._setup = setup
        self.reveal_intersection = reveal_intersection
        self.stage = ServerStage.AWAITING_REQUEST
        self._client_set_size: int | None = None
        self._request_digest: bytes | None = None
        self._response_digest: bytes | None = None

    def setup_message(self) -> bytes:
        return self._setup.message

    def process_request(self, request: bytes) -> bytes:
        """Re-encrypt the client's points under the server key; return the RESPONSE message."""
        if self.stage is not ServerStage.AWAITING_REQUEST:
            raise PSIStageError(f"this PSI session already answered a request (stage {self.stage.value})")
        msg = decode_request(request)
        if msg.reveal_intersection != self.reveal_intersection:
            wanted, offered = (
                ("the intersection", "only its size")
                if msg.reveal_intersection
                else ("only the size", "the intersection")
            )
            raise InvalidPSIMessage(f"the request asks for {wanted}, but this session reveals {offered}")
        limit = self._setup.params.max_client_items
        if len(msg.points) > limit:
            raise PSISetTooLarge(
                f"the request holds {len(msg.points)} items; this setup allows at most {limit}"
            )
        library_request = _psi.Request()
        library_request.reveal_intersection = self.reveal_intersection
        library_request.encrypted_elements.extend(msg.points)
        server = _psi.server.CreateFromKey(self._setup._server_key, self.reveal_intersection)
        try:
            library_response = server.ProcessRequest(library_request)
        except (RuntimeError, ValueError) as exc:
            raise InvalidPSIMessage(f"the request holds an invalid point: {first_line(exc)}") from None
        points = tuple(bytes(p) for p in library_response.encrypted_elements)
        response = ResponseMessage(
            message_digest(bytes(request)), self._setup.setup_digest, points
        ).to_bytes()
        self._client_set_size = len(msg.points)
        self._request_digest = message_digest(bytes(request))
        self._response_digest = message_digest(response)
        self.stage = ServerStage.RESPONDED
        return response

    def transcript(self) -> ServerTranscript:
        return ServerTranscript(
            reveal_intersection=self.reveal_intersection,
            server_set_size=self._setup.server_set_size,
            server_set_digest=self._setup.set_digest,
            setup_digest=self._setup.setup_digest.hex(),
            client_set_size=self._client_set_size,
            request_digest=self._request_digest.hex() if self._request_digest else None,
            response_digest=self._response_digest.hex() if self._response_digest else None,
        )


def first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
