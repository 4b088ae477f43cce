"""The error envelope: the body of every error response of the PPS API.

::

    {"error": {"code": "token_expired", "message": "token tok_… expired at …; issue a new one",
               "request_id": "…", "details": {…}}}

``code`` is stable and machine-readable (:data:`pps_wire.errors.CODES`, :data:`pps_wire.errors.OTHER_CODES`);
``message`` is for people and says what to do where it can; ``request_id`` names the request in the server's
logs; ``details`` (optional) carries structured facts, e.g. the problems of a refused upload. The server builds
it with :func:`error_body` (``api/errors.py``), the client reads it with :func:`parse_error`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ErrorInfo:
    """One error envelope, parsed."""

    code: str
    message: str
    request_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The envelope as the server sends it (``details`` only when there are any)."""
        return error_body(self.code, self.message, self.request_id, self.details)


def error_body(
    code: str, message: str, request_id: str | None, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``{"error": {"code", "message", "request_id"[, "details"]}}``."""
    body: dict[str, Any] = {"code": code, "message": message, "request_id": request_id}
    if details:
        body["details"] = details
    return {"error": body}


def parse_error(content: bytes | str) -> ErrorInfo | None:
    """The envelope in a response body, or None if the body is not one (a proxy's page, an empty body)."""
    try:
        doc = json.loads(content)
        err = doc["error"]
        code, message = err["code"], err["message"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(code, str) or not isinstance(message, str):
        return None
    request_id = err.get("request_id")
    details = err.get("details")
    return ErrorInfo(
        code=code,
        message=message,
        request_id=request_id if isinstance(request_id, str) else None,
        details=details if isinstance(details, dict) else {},
    )
