"""The SDK's exception tree, and the one place where the server's error envelope becomes one of its classes.

::

    PPSClientError
    ├── TransportError            the service could not be reached (refused, DNS, TLS) ...
    │   └── RequestTimeout        ... or did not answer in time
    ├── APIError                  the service answered with an error (status, code, message, request_id, details)
    │   ├── InvalidRequest        400, 422: the request is malformed or breaks a rule
    │   │   └── PayloadTooLarge   413
    │   ├── AuthenticationError   401: no usable token (missing, unknown, expired, revoked)
    │   ├── PermissionDenied      403: the caller may not do this
    │   │   └── Refused           an output control refused this answer (small cohort, differencing, ...)
    │   │       └── BudgetExhausted   the privacy budget cannot cover the query
    │   ├── NotFound              404 (another organisation's objects are reported as not found)
    │   ├── Gone                  410: what was asked for is no longer there (an expired job result)
    │   ├── Conflict              409: the request contradicts the current state
    │   ├── RateLimited           429: retry after ``retry_after`` seconds
    │   └── ServerError           5xx
    │       └── ServiceUnavailable    503: busy or down; nothing was changed, retry
    ├── JobFailed                 a job ended failed or cancelled (its error code and message)
    ├── JobTimeout                a job did not finish within the time the caller waited
    ├── InvalidResponse           the service's answer is not in the API's format
    └── VerificationError         a check made here failed (``reason`` says which)
        ├── LedgerVerificationError   a checkpoint signature, an inclusion or a consistency proof
        ├── ReceiptVerificationError  a consent receipt
        ├── AttestationError          an enclave quote (or a context it should bind)
        └── ReleaseVerificationError  a result that should come unaltered from the enclave or the bank's key

An :class:`APIError`'s class is chosen by :func:`api_error` from the envelope's ``code`` — through the error
hierarchy both sides share (:mod:`pps_wire.errors`), so a code this SDK does not know by name still lands in its
category — and from the HTTP status when the body is not an envelope (a proxy's error page).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pps_wire import enclave_errors, envelope
from pps_wire import errors as wire


class PPSClientError(Exception):
    """Base of every error the SDK raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- transport --------------------------------------------------------------------------------------------------


class TransportError(PPSClientError):
    """The PPS service could not be reached: nothing was sent, or no answer came back."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class RequestTimeout(TransportError):
    """The PPS service did not answer within the timeout (it may still have acted on the request)."""


# --- API errors ---------------------------------------------------------------------------------------------


class APIError(PPSClientError):
    """The PPS service answered with an error (:mod:`pps_wire.envelope`)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        request_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.request_id = request_id
        self.details: dict[str, Any] = details or {}

    def __str__(self) -> str:
        return f"{self.message} [{self.code}]"


class InvalidRequest(APIError):
    """The request is malformed or breaks a rule (``details["problems"]`` may name them); nothing was changed."""


class PayloadTooLarge(InvalidRequest):
    pass


class AuthenticationError(APIError):
    """No usable token: missing, unknown, expired or revoked (the message says which)."""


class PermissionDenied(APIError):
    """The caller is known but may not do this (its role, or not its object)."""


class Refused(PermissionDenied):
    """An output control refused to answer: this answer would disclose too much (the message names the control)."""


class BudgetExhausted(Refused):
    """The bank's privacy budget (epsilon) cannot cover this query."""


class NotFound(APIError):
    """The object does not exist for this caller (another organisation's objects are reported as not found)."""


class Gone(APIError):
    """The object existed but what was asked for is no longer there (an expired or deleted job result)."""


class Conflict(APIError):
    """The request contradicts the current state (a duplicate, a decision already taken)."""


class RateLimited(APIError):
    """Too many requests of a kind; ``retry_after`` says how many seconds to wait (if the service said)."""

    @property
    def retry_after(self) -> float | None:
        value = self.details.get("retry_after_s")
        return float(value) if isinstance(value, int | float) else None


class ServerError(APIError):
    """The service failed (5xx); quote the request id to its operator."""


class ServiceUnavailable(ServerError):
    """The service is busy or a component is down; nothing was changed — retry shortly."""


# --- jobs, answers, checks ----------------------------------------------------------------------------------


class JobFailed(PPSClientError):
    """A job ended failed or cancelled; ``code`` is its error code (:mod:`pps_wire.errors`)."""

    def __init__(self, job_id: str, code: str, message: str) -> None:
        super().__init__(f"job {job_id} failed: {message} [{code}]")
        self.job_id = job_id
        self.code = code
        self.reason = message


class JobTimeout(PPSClientError):
    """A job did not finish within the time the caller waited; it may still finish (wait again)."""

    def __init__(self, job_id: str, waited: float) -> None:
        super().__init__(f"job {job_id} did not finish in {waited:g} s; wait again or raise the timeout")
        self.job_id = job_id


class InvalidResponse(PPSClientError):
    """The service's answer is not in the API's format (another service, a proxy, or a version mismatch)."""


class VerificationError(PPSClientError):
    """A check made here failed: what the service sent does not prove what it should. ``reason`` says which
    check (e.g. ``signature``, ``inclusion``, ``measurement``)."""

    def __init__(self, message: str, *, reason: str = "failed") -> None:
        super().__init__(message)
        self.reason = reason


class LedgerVerificationError(VerificationError):
    """A checkpoint signature, an entry's leaf hash, or an inclusion or consistency proof does not verify."""


class ReceiptVerificationError(VerificationError):
    """A consent receipt's signature or form does not verify."""


class AttestationError(VerificationError):
    """An enclave quote is malformed, signed by a key not pinned, or fails the policy (measurement, security
    version, debug, nonce, age, replay); or a context the quote should bind does not match it."""


class ReleaseVerificationError(VerificationError):
    """A result that should come unaltered from the enclave (its tag under the result key) or be readable with the
    bank's key does not open, or answers another query."""


# --- the mapping ----------------------------------------------------------------------------------------------

_BY_CATEGORY: tuple[tuple[type[wire.PPSError], type[APIError]], ...] = (
    (wire.BudgetExhausted, BudgetExhausted),
    (wire.Refused, Refused),
    (wire.Forbidden, PermissionDenied),
    (wire.AuthenticationError, AuthenticationError),
    (wire.PayloadTooLarge, PayloadTooLarge),
    (wire.InvalidInput, InvalidRequest),
    (wire.NotFound, NotFound),
    (wire.Gone, Gone),
    (wire.Conflict, Conflict),
    (wire.RateLimited, RateLimited),
    (wire.ServiceUnavailable, ServiceUnavailable),
)
"""A wire class (and its subclasses) -> the SDK's class; most specific first."""

_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    405: InvalidRequest,
    409: Conflict,
    410: Gone,
    413: PayloadTooLarge,
    422: InvalidRequest,
    429: RateLimited,
    503: ServiceUnavailable,
}


def error_class(code: str, status: int) -> type[APIError]:
    """The SDK's class for an error ``code`` answered with HTTP ``status``."""
    known = wire.CODES.get(code)
    if known is not None:
        for wire_cls, cls in _BY_CATEGORY:
            if issubclass(known, wire_cls):
                return cls
    by_status = _BY_STATUS.get(status)
    if by_status is not None:
        return by_status
    return ServerError if status >= 500 else APIError


def api_error(status: int, body: bytes, *, fallback: str = "") -> APIError:
    """The :class:`APIError` for an error response: its envelope if it has one, else its status and text."""
    info = envelope.parse_error(body)
    if info is None:
        text = body[:500].decode("utf-8", "replace").strip() or fallback
        code = f"http_{status}"
        return error_class(code, status)(status, code, text or f"HTTP {status}")
    cls = error_class(info.code, status)
    return cls(status, info.code, info.message, info.request_id, info.details)


@contextmanager
def verification(cls: type[VerificationError], reason: str | None = None) -> Iterator[None]:
    """Raise what a check of :mod:`pps_wire` refuses as the SDK's ``cls``, with ``reason`` (default: the
    check's own)."""
    try:
        yield
    except enclave_errors.AttestationError as exc:
        raise AttestationError(exc.message, reason=exc.reason) from None
    except enclave_errors.EnclaveError as exc:
        raise cls(exc.message, reason=reason or exc.code) from None
    except wire.PPSError as exc:
        raise cls(exc.message, reason=reason or str(exc.details.get("reason", exc.code))) from None
