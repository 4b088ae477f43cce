"""The bank's and auditor's SDK for PPS, the data safe-room.

>>> from pps_client import Client, note_verifier, verify_entry
>>> with Client("https://pps.example", token="pps_...") as client:
...     found = client.psi.run(customers, purpose="loan_underwriting")          # psi extra
...     result = client.scoring.score(key, model, purpose="loan_underwriting")  # he extra
...     checked = verify_entry(client.ledger.entry(7), PINNED_LEDGER_KEY)

* :class:`Client` — one organisation's connection; the API grouped by resource (``client.psi``,
  ``client.scoring``, ``client.ledger``, ...); typed answers (:mod:`pps_wire.schemas`);
* the exception tree rooted at :class:`PPSClientError`: :class:`TransportError` when the service cannot be
  reached, :class:`APIError` (and its subclasses, by the error's code) when it answered with an error,
  :class:`VerificationError` when something it sent does not check out here;
* the verifiers a bank or an auditor runs — :func:`verify_entry`, :func:`verify_checkpoint`,
  :func:`verify_inclusion`, :func:`verify_consistency`, :func:`verify_receipt`, :func:`verify_quote` — which
  return what they verified or raise, against keys the caller pinned;
* the provider's side of a sealed upload: :func:`encrypt_sealed_columns` and friends.

Secret keys are made and kept in this process: the bank's CKKS key (``protocols.he_scoring.BankScoringKey``),
its Paillier keys, its PSI key, its secure-aggregation secrets. The formats client and server share are
:mod:`pps_wire`; the protocol halves, :mod:`protocols`. The bank's command line is ``pps-client`` (``cli`` extra).
"""

from __future__ import annotations

from pps_client._calibration import Recalibration
from pps_client._client import Client
from pps_client._exceptions import (
    APIError,
    AttestationError,
    AuthenticationError,
    BudgetExhausted,
    Conflict,
    Gone,
    InvalidRequest,
    InvalidResponse,
    JobFailed,
    JobTimeout,
    LedgerVerificationError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    PPSClientError,
    RateLimited,
    ReceiptVerificationError,
    Refused,
    ReleaseVerificationError,
    RequestTimeout,
    ServerError,
    ServiceUnavailable,
    TransportError,
    VerificationError,
)
from pps_client._sealed import encrypt_sealed_columns, encrypt_sealed_integer_columns, encrypt_sealed_weights
from pps_client._types import (
    Alignment,
    ConsentReceipt,
    EnclaveQuote,
    GBDTResult,
    ScoringResult,
    SealedContext,
    SealedScores,
    VerifiedEntry,
    VerticalTrainingResult,
)
from pps_client._verify import (
    note_verifier,
    verify_checkpoint,
    verify_consistency,
    verify_entry,
    verify_inclusion,
    verify_quote,
    verify_receipt,
)
from pps_wire.checkpoint import Checkpoint, NoteVerifier

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "Alignment",
    "AttestationError",
    "AuthenticationError",
    "BudgetExhausted",
    "Checkpoint",
    "Client",
    "Conflict",
    "ConsentReceipt",
    "EnclaveQuote",
    "GBDTResult",
    "Gone",
    "InvalidRequest",
    "InvalidResponse",
    "JobFailed",
    "JobTimeout",
    "LedgerVerificationError",
    "NotFound",
    "NoteVerifier",
    "PPSClientError",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "Recalibration",
    "ReceiptVerificationError",
    "Refused",
    "ReleaseVerificationError",
    "RequestTimeout",
    "ScoringResult",
    "SealedContext",
    "SealedScores",
    "ServerError",
    "ServiceUnavailable",
    "TransportError",
    "VerificationError",
    "VerifiedEntry",
    "VerticalTrainingResult",
    "encrypt_sealed_columns",
    "encrypt_sealed_integer_columns",
    "encrypt_sealed_weights",
    "note_verifier",
    "verify_checkpoint",
    "verify_consistency",
    "verify_entry",
    "verify_inclusion",
    "verify_quote",
    "verify_receipt",
]
