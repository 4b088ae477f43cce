"""The one error hierarchy of PPS.

Every failure a caller can cause or see is a :class:`PPSError` with a stable, machine-readable ``code``
and a message that says what went wrong and, where it helps, what to do. The HTTP edge maps these classes
to status codes in exactly one place (``api/errors.py``); nothing else in the code chooses a status code.

The libraries below ``pps`` (``protocols``, ``enclave_sim``) raise their own errors; :func:`translate` maps them
onto these classes, once, where they leave the core: at the HTTP edge, in the job runner and the command line.

A denial always names its reason: ``RoleNotAllowed`` says which roles may call the route, ``TokenExpired``
says when the token expired, and so on.
"""

from __future__ import annotations

from typing import Any

from enclave_sim import errors as ee
from protocols import errors as pe


class PPSError(Exception):
    """Base of every error PPS raises on purpose."""

    code: str = "pps_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


# --- input -------------------------------------------------------------------------------------------


class InvalidInput(PPSError):
    """The request or argument is malformed or violates a rule; nothing was changed."""

    code = "invalid_input"


class InvalidRequest(InvalidInput):
    """The request does not match the route's schema (unknown fields, wrong types, missing fields)."""

    code = "invalid_request"


class MalformedJSON(InvalidInput):
    """The request body is not JSON."""

    code = "malformed_json"


class InvalidUSCC(InvalidInput):
    """An 18-character unified social credit code fails the GB 32100-2015 format or check character."""

    code = "invalid_uscc"


class UploadRejected(InvalidInput):
    """An upload does not fit its schema; nothing was stored. ``details["problems"]`` names the rows."""

    code = "upload_rejected"


class PayloadTooLarge(PPSError):
    code = "payload_too_large"


class ConfigurationError(PPSError):
    """Settings that must not be used (e.g. a placeholder secret outside development)."""

    code = "configuration_error"


# --- identity ----------------------------------------------------------------------------------------


class AuthenticationError(PPSError):
    """No usable credential was presented."""

    code = "unauthenticated"


class InvalidToken(AuthenticationError):
    code = "invalid_token"


class TokenExpired(AuthenticationError):
    code = "token_expired"


class TokenRevoked(AuthenticationError):
    code = "token_revoked"


class Forbidden(PPSError):
    """The caller is known but may not do this."""

    code = "forbidden"


class RoleNotAllowed(Forbidden):
    code = "role_not_allowed"


# --- objects -----------------------------------------------------------------------------------------


class NotFound(PPSError):
    """The object does not exist *for this caller*: another tenant's objects are reported as not found."""

    code = "not_found"


class Gone(PPSError):
    """The object existed but what was asked for is no longer there (an expired or deleted job result)."""

    code = "gone"


class Conflict(PPSError):
    """The request contradicts the current state (a duplicate, a second bootstrap, ...)."""

    code = "conflict"


# --- output controls ---------------------------------------------------------------------------------


class RateLimited(PPSError):
    """Too many requests of a kind in a window; ``details["retry_after_s"]`` says when to try again."""

    code = "rate_limited"


class Refused(Forbidden):
    """An output control refused to answer (too small a cohort, differencing, an exhausted budget).

    The caller may make the request; this *answer* would disclose too much. The message names the control.
    """

    code = "refused"


class BudgetExhausted(Refused):
    """The bank's privacy-loss budget (epsilon) cannot cover this query."""

    code = "budget_exhausted"


# --- ledger ------------------------------------------------------------------------------------------


class LedgerError(PPSError):
    code = "ledger_error"


class InvalidProofRequest(LedgerError, InvalidInput):
    """A proof was asked for sizes or indices the tree cannot answer (e.g. first > second)."""

    code = "invalid_proof_request"


class ProofVerificationError(LedgerError):
    """A Merkle inclusion or consistency proof, or a checkpoint signature, does not verify."""

    code = "proof_verification_failed"


class LedgerIntegrityError(LedgerError):
    """The stored ledger does not match itself or a signed checkpoint: it has been tampered with."""

    code = "ledger_integrity_error"

    def __init__(self, message: str, *, first_bad_index: int | None = None) -> None:
        super().__init__(message, details={"first_bad_index": first_bad_index})
        self.first_bad_index = first_bad_index


# --- keys and data -----------------------------------------------------------------------------------


class KeyUnavailable(PPSError):
    """A key needed to open data is missing, retired, or does not fit (wrong binding or tampering)."""

    code = "key_unavailable"


class DataIntegrityError(PPSError):
    """Stored encrypted data does not authenticate: it was changed, swapped or truncated."""

    code = "data_integrity_error"


class JobCancelled(PPSError):
    """Raised inside a running job when its cancellation was requested."""

    code = "job_cancelled"


class ServiceUnavailable(PPSError):
    code = "service_unavailable"


# --- the simulated enclave (issue 6; enclave_sim's own errors are mapped onto these in pps) ----------------


class AttestationError(PPSError):
    """An enclave's quote is malformed, signed by a key the verifier does not pin, or fails its policy
    (measurement, security version, debug, nonce, replay, age); ``details["reason"]`` says which."""

    code = "attestation_failed"


class ProvisioningFailed(InvalidInput):
    """Data provisioned to the enclave does not open there (another enclave instance or quote, tampering)
    or does not have the shape the job expects; nothing was stored."""

    code = "provisioning_failed"


class OutputPolicyViolation(Refused):
    """An enclave job would have released something its owner's output policy does not allow."""

    code = "output_policy_violation"


class EnclaveJobFailed(InvalidInput):
    """A job inside the enclave could not run on the data given (too few rows, one class, bad parameters)."""

    code = "enclave_job_failed"


class EnclaveUnavailable(ServiceUnavailable):
    """The enclave process stopped (or restarted) and lost what it held; nothing was released."""

    code = "enclave_unavailable"


# --- objections (pps.governance.objections) -----------------------------------------------------------------------


class EvidenceRejected(InvalidInput):
    """An objection's evidence file is not an accepted type, does not match its declared type, is malformed,
    too large, or carries active content; nothing was stored."""

    code = "evidence_rejected"


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
