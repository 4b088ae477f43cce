"""The one place where errors become HTTP responses.

Every error body is the error envelope of :mod:`pps_wire.envelope`::

    {"error": {"code": "token_expired", "message": "token tok_… expired at …; issue a new one",
               "request_id": "…", "details": {…}}}

``code`` is stable and machine-readable; ``message`` is for people and says what to do where it can. Errors of
the libraries below ``pps`` (``protocols``, ``enclave_sim``) are mapped by :func:`pps.errors.translate` first.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from api.middleware import ResponseTracker, current_request_id
from enclave_sim.errors import EnclaveError
from pps import errors as e
from pps_wire import envelope
from protocols.errors import ProtocolError

log = logging.getLogger("pps.api")

# Most specific first; the first class in an error's MRO that appears here decides the status.
STATUS: dict[type[e.PPSError], int] = {
    e.PayloadTooLarge: 413,
    e.InvalidProofRequest: 400,
    e.MalformedJSON: 400,
    e.InvalidInput: 422,
    e.AuthenticationError: 401,
    e.Forbidden: 403,
    e.NotFound: 404,
    e.Gone: 410,
    e.Conflict: 409,
    e.ProofVerificationError: 422,
    e.AttestationError: 422,
    e.LedgerIntegrityError: 500,
    e.ConfigurationError: 500,
    e.ServiceUnavailable: 503,
    e.RateLimited: 429,
}


def status_for(exc: e.PPSError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return envelope.error_body(code, message, current_request_id(), details)


def _pps_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, e.PPSError)
    status = status_for(exc)
    if status >= 500:
        log.error("request %s failed: %s", current_request_id(), exc.message)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status == 429 and exc.details and "retry_after_s" in exc.details:
        headers = {"Retry-After": str(max(1, int(float(exc.details["retry_after_s"]) + 0.999)))}
    return JSONResponse(error_body(exc.code, exc.message, exc.details), status_code=status, headers=headers)


def _library_error(request: Request, exc: Exception) -> JSONResponse:
    """A protocol or enclave library error: its PPS error (:func:`pps.errors.translate`), then as above."""
    translated = e.translate(exc)
    assert translated is not None
    return _pps_error(request, translated)


def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    malformed = False
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            malformed = True
        problems.append(
            {
                "loc": [str(p) for p in err.get("loc", ())],
                "type": err.get("type"),
                "message": err.get("msg"),
            }
        )
    if malformed:
        return JSONResponse(
            error_body(e.MalformedJSON.code, "the request body is not valid JSON", {"problems": problems}),
            status_code=400,
        )
    summary = "; ".join(f"{'.'.join(p['loc'])}: {p['message']}" for p in problems[:5])
    return JSONResponse(
        error_body(
            e.InvalidRequest.code, f"the request does not match the schema: {summary}", {"problems": problems}
        ),
        status_code=422,
    )


def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthenticated", 413: "payload_too_large"}
    return JSONResponse(
        error_body(codes.get(exc.status_code, f"http_{exc.status_code}"), str(exc.detail)),
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


class UnhandledErrorMiddleware:
    """Turns any unexpected exception into a 500 with the error body and the request id; the process lives on.

    It sits inside the request-id middleware (so the id is known) and the transaction of the failed request
    has already rolled back when the exception reaches it. Internals are logged, never sent.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracker = ResponseTracker(send)
        try:
            await self.app(scope, receive, tracker)
        except Exception:
            log.exception("unhandled error in request %s", current_request_id())
            if tracker.started:
                raise
            response = JSONResponse(
                error_body(
                    "internal_error", "an internal error occurred; nothing was changed. Quote the request id."
                ),
                status_code=500,
            )
            await response(scope, receive, send)


def _database_busy(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OperationalError)
    text = str(exc.orig).lower() if exc.orig is not None else ""
    if "locked" in text or "busy" in text or "deadlock" in text or "could not serialize" in text:
        return JSONResponse(
            error_body(
                "busy", "the database is busy with another write; nothing was changed — retry shortly"
            ),
            status_code=503,
            headers={"Retry-After": "2"},
        )
    log.error("database error in request %s: %s", current_request_id(), exc)
    return JSONResponse(
        error_body(
            "database_unavailable", "the database could not complete the request; nothing was changed"
        ),
        status_code=503,
        headers={"Retry-After": "5"},
    )


def install(app: FastAPI) -> None:
    """Register the handlers. The app must also wrap itself in :class:`UnhandledErrorMiddleware`."""
    app.add_exception_handler(e.PPSError, _pps_error)
    app.add_exception_handler(ProtocolError, _library_error)
    app.add_exception_handler(EnclaveError, _library_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_busy)
