"""The one error hierarchy of PPS, and with it the list of error codes both sides of the wire know.

Every failure a caller can cause or see is a :class:`PPSError` with a stable, machine-readable ``code`` and a
message that says what went wrong and, where it helps, what to do. The server raises these classes (``pps.errors``
re-exports them) and its HTTP edge maps them to status codes in exactly one place (``api/errors.py``); the
response carries the code in the error envelope (:mod:`pps_wire.envelope`). The client SDK reads the code and
maps it, through :data:`CODES` and this hierarchy, onto its own exception tree (``pps_client``).

A denial always names its reason: ``RoleNotAllowed`` says which roles may call the route, ``TokenExpired``
says when the token expired, and so on.

This module imports nothing but the standard library.
"""

from __future__ import annotations

from typing import Any


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


class DuplicateJSONKey(MalformedJSON):
    """A JSON object names the same key twice. Parsers disagree on which value wins (the last, the first, an
    error), so the body is refused rather than read one way here and another way by whoever signed it."""

    code = "duplicate_json_key"


class UnsafeText(InvalidInput):
    """Text holds a control character (NUL, C0/C1 controls) or a bidirectional override, embedding or isolate
    (U+202A-U+202E, U+2066-U+2069) — characters that hide or reorder what a person reads. Names also refuse
    line breaks, tabs and bidirectional marks. ``details`` names the field and the character."""

    code = "unsafe_text"


class InvalidUSCC(InvalidInput):
    """An 18-character unified social credit code fails the GB 32100-2015 format or check character."""

    code = "invalid_uscc"


class InvalidResidentID(InvalidInput):
    """An 18-character resident identity number fails GB 11643-1999: its format, date of birth or check
    character. The message never repeats the number."""

    code = "invalid_resident_id"


class SeparateConsentRequired(InvalidInput):
    """A person's consent lacks a separate grant (单独同意, PIPL Art. 23, 29) for providing data to the bank,
    for a sensitive field, or the acknowledgement of the Art. 14 warning; ``details`` names what is missing."""

    code = "separate_consent_required"


class UploadRejected(InvalidInput):
    """An upload does not fit its schema; nothing was stored. ``details["problems"]`` names the rows."""

    code = "upload_rejected"


class PayloadTooLarge(PPSError):
    code = "payload_too_large"


class UploadTooLarge(PayloadTooLarge):
    """An upload declares or holds more rows, columns or expanded bytes than the service takes; it was refused
    before that work was done (the Parquet footer is read first, CSV and NDJSON are counted as they stream).
    ``details`` names the limit, its setting and what the file holds."""

    code = "upload_too_large"


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


class OperatorBounded(Forbidden):
    """The platform operator tried to act as an organisation: mint its credential, sign or take its consent,
    or do alone what needs a second operator (break-glass). The attempt is refused and is a ledger entry."""

    code = "operator_bounded"


class InvalidSubjectSignature(InvalidInput):
    """A consent action does not carry a valid signature by a key its subject enrolled (unknown or revoked
    key, another subject's key, a signature over other terms, a nonce used before); nothing was changed."""

    code = "invalid_subject_signature"


class RealNameRefused(InvalidInput):
    """The real-name check of the legal representative did not pass; no key was enrolled."""

    code = "real_name_refused"


class InvalidEnrolmentCode(AuthenticationError):
    """An enrolment code is unknown, used, expired, or its organisation is disabled."""

    code = "invalid_enrolment_code"


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


class FreeReportsExhausted(Refused):
    """A person has had the two free credit reports of this calendar year (征信业管理条例 Art. 17)."""

    code = "free_reports_exhausted"


class BudgetExhausted(Refused):
    """The bank's privacy-loss budget (epsilon) cannot cover this query."""

    code = "budget_exhausted"


class ModelRefused(Refused):
    """The enclave checked a bank's model against the published model policy and refused it; the message
    names every rule it breaks (a model that concentrates on, packs or isolates a feature reads it back)."""

    code = "model_refused"


class ModelNotApproved(Refused):
    """Encrypted scoring runs only a model the enclave approved and encrypted for this bank; this one is not
    (never approved, altered, for another context, or its approval is not the enclave's)."""

    code = "model_not_approved"


class StateDivergent(Refused):
    """The governed state this request relies on (a consent, a privacy budget) differs from what the ledger
    records — its row was changed outside the service — so it is not acted on until the operator reconciles it
    (``pps audit verify --state`` names the row, the column and both values)."""

    code = "state_divergent"


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


class UnknownSigningKey(LedgerError):
    """A checkpoint is signed by a key this verifier was not given (a restored copy without its key directory,
    or a key that was replaced): its signature cannot be checked either way. Not evidence of tampering — the
    entries and the Merkle tree were checked — but nothing is vouched for until the verifier key is supplied
    (``pps audit verify --verifier-key``) and checked again."""

    code = "unknown_signing_key"


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


def _codes() -> dict[str, type[PPSError]]:
    found: dict[str, type[PPSError]] = {}
    stack: list[type[PPSError]] = [PPSError]
    while stack:
        cls = stack.pop()
        found.setdefault(cls.code, cls)
        stack.extend(cls.__subclasses__())
    return found


CODES: dict[str, type[PPSError]] = _codes()
"""Every error code of the hierarchy above -> its class (the classes defined in this module only)."""

OTHER_CODES: dict[str, str] = {
    "method_not_allowed": "the route does not take this method (405)",
    "internal_error": "an unexpected failure; nothing was changed; quote the request id (500)",
    "busy": "the database is busy with another write; retry shortly (503)",
    "database_unavailable": "the database could not complete the request (503)",
}
"""Codes the HTTP edge sends for failures that are not a :class:`PPSError` (framework and database errors)."""
