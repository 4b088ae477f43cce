"""Private set intersection (ECDH-PSI over P-256, via ``openmined-psi``) of a bank's list with a server's set.

Who learns what (*semi-honest* parties: each follows the protocol and may compute on what it sees; messages,
the cache's price and the figures: ``docs/protocols.md``, "PSI"):

* the **client** (the bank) learns ``C ∩ S`` (or only ``|C ∩ S|``) and ``|S|``, nothing else about ``S``; a GCS
  setup may report false members with probability at most ``fpr``, so a result is never evidence of consent;
* the **server** (the safe-room) learns ``|C|`` after deduplication and the mode: not the items (points under a
  fresh client key) and not the intersection or its size. It cannot check that the points are real items;
* a reused server key (a cached setup) lets a bank link its own repeated queries: the caller bounds its life.

The protocol knows nothing of what the items are: the caller passes ``normalise`` (canonical form or its own
error). Parties: :mod:`~protocols.psi.client` (:class:`PSIClient`), :mod:`~protocols.psi.setup`
(:func:`prepare_setup`, the expensive, cacheable half) and :mod:`~protocols.psi.server` (:class:`PSIServer`);
the frames are in :mod:`~protocols.psi.messages`.
"""

from protocols.errors import InvalidPSIMessage, PSISetTooLarge, PSIStageError
from protocols.parallel import default_workers
from protocols.psi.client import ClientStage, PSIClient, PSIResult
from protocols.psi.driver import run_locally
from protocols.psi.messages import (
    DEFAULT_FPR,
    DEFAULT_MAX_CLIENT_ITEMS,
    MAX_CLIENT_ITEMS,
    MessageType,
    Normalise,
    PSIParams,
    RequestMessage,
    ResponseMessage,
    SetupMessage,
    SetupStructure,
    decode_request,
    decode_response,
    decode_setup,
    message_digest,
)
from protocols.psi.server import PSIServer, ServerStage, ServerTranscript
from protocols.psi.setup import PreparedSetup, ServerSet, prepare_setup

__all__ = [
    "DEFAULT_FPR",
    "DEFAULT_MAX_CLIENT_ITEMS",
    "MAX_CLIENT_ITEMS",
    "ClientStage",
    "InvalidPSIMessage",
    "MessageType",
    "Normalise",
    "PSIClient",
    "PSIParams",
    "PSIResult",
    "PSIServer",
    "PSISetTooLarge",
    "PSIStageError",
    "PreparedSetup",
    "RequestMessage",
    "ResponseMessage",
    "ServerSet",
    "ServerStage",
    "ServerTranscript",
    "SetupMessage",
    "SetupStructure",
    "decode_request",
    "decode_response",
    "decode_setup",
    "default_workers",
    "message_digest",
    "prepare_setup",
    "run_locally",
]
