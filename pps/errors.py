"""The error hierarchy of PPS, as the server imports it.

The classes are defined once, in :mod:`pps_wire.errors` (the client SDK reads the same codes); this module is
the server's import path for them. ``api/errors.py`` maps them to status codes in one place.

The libraries below ``pps`` (``protocols``, ``enclave_sim``) raise their own errors; :func:`translate` maps them
onto these classes, once, where they leave the core: at the HTTP edge, in the job runner and the command line.
"""

from __future__ import annotations

from typing import Any

from enclave_sim import errors as ee
from pps_wire.errors import (
    CODES,
    AttestationError,
    AuthenticationError,
    BudgetExhausted,
    ConfigurationError,
    Conflict,
    DataIntegrityError,
    DuplicateJSONKey,
    EnclaveJobFailed,
    EnclaveUnavailable,
    EvidenceRejected,
    Forbidden,
    FreeReportsExhausted,
    Gone,
    InvalidEnrolmentCode,
    InvalidInput,
    InvalidProofRequest,
    InvalidRequest,
    InvalidResidentID,
    InvalidSubjectSignature,
    InvalidToken,
    InvalidUSCC,
    JobCancelled,
    KeyUnavailable,
    LedgerError,
    LedgerIntegrityError,
    MalformedJSON,
    ModelNotApproved,
    ModelRefused,
    NotFound,
    OperatorBounded,
    OutputPolicyViolation,
    PayloadTooLarge,
    PPSError,
    ProofVerificationError,
    ProvisioningFailed,
    RateLimited,
    RealNameRefused,
    Refused,
    RoleNotAllowed,
    SeparateConsentRequired,
    ServiceUnavailable,
    StateDivergent,
    TokenExpired,
    TokenRevoked,
    UnknownSigningKey,
    UnsafeText,
    UploadRejected,
    UploadTooLarge,
)
from protocols import errors as pe

__all__ = [
    "CODES",
    "PROTOCOL_ERRORS",
    "AttestationError",
    "AuthenticationError",
    "BudgetExhausted",
    "ConfigurationError",
    "Conflict",
    "DataIntegrityError",
    "DuplicateJSONKey",
    "EnclaveJobFailed",
    "EnclaveUnavailable",
    "EvidenceRejected",
    "Forbidden",
    "FreeReportsExhausted",
    "Gone",
    "InvalidEnrolmentCode",
    "InvalidInput",
    "InvalidProofRequest",
    "InvalidRequest",
    "InvalidResidentID",
    "InvalidSubjectSignature",
    "InvalidToken",
    "InvalidUSCC",
    "JobCancelled",
    "KeyUnavailable",
    "LedgerError",
    "LedgerIntegrityError",
    "MalformedJSON",
    "ModelNotApproved",
    "ModelRefused",
    "NotFound",
    "OperatorBounded",
    "OutputPolicyViolation",
    "PPSError",
    "PayloadTooLarge",
    "ProofVerificationError",
    "ProvisioningFailed",
    "RateLimited",
    "RealNameRefused",
    "Refused",
    "RoleNotAllowed",
    "SeparateConsentRequired",
    "ServiceUnavailable",
    "StateDivergent",
    "TokenExpired",
    "TokenRevoked",
    "UnknownSigningKey",
    "UnsafeText",
    "UploadRejected",
    "UploadTooLarge",
    "translate",
]


# --- the libraries' errors, mapped once (protocols and enclave_sim know nothing of pps) -----------------------

# What each kind of protocol refusal is to PPS (the first class of a protocol error's MRO found here decides):
# the HTTP status follows from the PPS class, the ``code`` stays the protocol's own.
_PROTOCOL_KINDS: dict[type[pe.ProtocolError], tuple[type[PPSError], ...]] = {
    pe.MessageTooLarge: (PayloadTooLarge, InvalidInput),
    pe.StateError: (Conflict,),
    pe.Aborted: (Conflict,),
    pe.ProtocolError: (InvalidInput,),
}


def _mirror(cls: type[pe.ProtocolError]) -> type[PPSError]:
    """The PPS class of a protocol error class: a subclass of both, with the protocol's code (so an
    ``except SecAggStageError`` and an ``except Conflict`` both catch what the SDK raises for it)."""
    kind = next(_PROTOCOL_KINDS[c] for c in cls.__mro__ if c in _PROTOCOL_KINDS)

    def __reduce__(self: BaseException) -> tuple[Any, ...]:  # pickled as the protocol error, mapped again
        return (_unpickle, (cls, dict(self.__dict__)))

    namespace = {"__module__": __name__, "__doc__": cls.__doc__, "__reduce__": __reduce__}
    mirror: type[PPSError] = type(cls.__name__, (cls, *kind), namespace)
    return mirror


def _unpickle(cls: type[pe.ProtocolError], state: dict[str, Any]) -> PPSError | None:
    exc = cls.__new__(cls)
    Exception.__init__(exc, state.get("message", ""))
    exc.__dict__.update(state)
    return translate(exc)


PROTOCOL_ERRORS: dict[type[pe.ProtocolError], type[PPSError]] = {
    cls: _mirror(cls) for cls in pe.BY_CODE.values()
}
"""Every protocol error class and its PPS class (made here, once, for the whole tree)."""


def _from_enclave(exc: ee.EnclaveError) -> PPSError:
    if isinstance(exc, ee.AttestationError):
        return AttestationError(exc.message, details={"reason": exc.reason})
    if isinstance(exc, ee.ProvisioningError):
        return ProvisioningFailed(exc.message)
    if isinstance(exc, ee.OutputPolicyViolation):
        return OutputPolicyViolation(exc.message)
    if isinstance(exc, ee.ModelRefused):
        return ModelRefused(exc.message)
    if isinstance(exc, ee.EnclaveJobError):
        return EnclaveJobFailed(exc.message)
    if isinstance(exc, ee.EnclaveCrashed):
        return EnclaveUnavailable(f"{exc.message}; nothing was released — submit the job again")
    return InvalidInput(exc.message)


def translate(exc: BaseException) -> PPSError | None:
    """The :class:`PPSError` for an error raised on purpose: a PPSError itself, a ``protocols.errors`` error
    (its PPS class, same message, details and code) or an ``enclave_sim.errors`` error; ``None`` for anything
    else (a bug: the caller reports an internal error)."""
    if isinstance(exc, PPSError):
        return exc
    if isinstance(exc, pe.ProtocolError):  # its class, or the nearest class of the tree above it
        cls = next(PROTOCOL_ERRORS[c] for c in type(exc).__mro__ if c in PROTOCOL_ERRORS)
        err = cls.__new__(cls)
        Exception.__init__(err, exc.message)
        err.__dict__.update(exc.__dict__)
        return err
    if isinstance(exc, ee.EnclaveError):
        return _from_enclave(exc)
    return None
