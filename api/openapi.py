"""The OpenAPI document as the server behaves, and its pages served without a CDN.

FastAPI documents every route's 422 as its own ``{"detail": [...]}`` and nothing else; this server answers
every error with one envelope, ``{"error": {"code", "message", "request_id"[, "details"]}}``
(:mod:`pps_wire.envelope`), from one place (``api/errors.py``). :func:`document` rewrites the generated
document once, at the first request for it:

* the envelope is a component (``ErrorEnvelope``) and every error answer refers to it;
* each operation lists the statuses it can answer with: 400 (a body that is not JSON), 401 and 403 (guarded
  routes: no or a bad token; a role not allowed, or an output control's refusal), 404 (another tenant's
  objects, or none), 409 (a state conflict), 413 (a body over the limit), 422 (a request that does not fit
  its schema or a rule), 429 (rate limits), 500 (a bug: the message names the request id) and 503 (the
  database busy or an enclave down);
* binary answers name their vendor media types (:data:`RESULT_MEDIA_TYPES`).

The bounded schemathesis run in the tests (``tests/api/test_openapi_conformance.py``) holds the document to the
server: no server errors, no undocumented status or content type.

``/docs`` (Swagger UI) and ``/redoc`` load their scripts and styles from this server (the ``fastapi-offline``
package ships them), so they work on a network without internet access.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from pps_wire.frames import PSI_RESULT_MEDIA_TYPE, SCORE_RESULT_MEDIA_TYPE

ENVELOPE = "ErrorEnvelope"
RESULT_MEDIA_TYPES: tuple[str, ...] = (
    PSI_RESULT_MEDIA_TYPE,
    SCORE_RESULT_MEDIA_TYPE,
    "application/vnd.pps.enclave-release+json",
)
"""What a job's result can be (``GET /v1/jobs/{job_id}/result``): one per job kind."""

_ERRORS: dict[int, str] = {
    400: "a request that cannot be answered as asked (a body that is not JSON, a proof for sizes the log has not)",
    401: "no usable API token (missing, unknown, expired or revoked)",
    403: "this role may not call the route, or an output control refused the answer (the message says which)",
    404: "no such object for this caller (another organisation's objects are not found)",
    409: "the request contradicts the current state (a duplicate, a consent that changed meanwhile, ...)",
    413: "the body is larger than this route accepts",
    422: "the request does not fit the route's schema or breaks a rule; nothing was changed",
    429: "too many requests of this kind; `details.retry_after_s` says when to try again",
    500: "an internal error; the message names the request id to report",
    503: "the service cannot answer now (the database is busy, an enclave restarted); try again",
}

_ENVELOPE_SCHEMA: dict[str, Any] = {
    "title": ENVELOPE,
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "request_id"],
            "properties": {
                "code": {
                    "type": "string",
                    "description": "stable, machine-readable (e.g. `invalid_request`)",
                },
                "message": {
                    "type": "string",
                    "description": "what went wrong and, where it helps, what to do",
                },
                "request_id": {"type": ["string", "null"]},
                "details": {"type": "object", "additionalProperties": True},
            },
        }
    },
}


def _statuses(operation: dict[str, Any], method: str) -> list[int]:
    public = operation.get("x-pps-roles") == ["public"]
    out = [400, 404, 409, 422, 429, 500, 503]
    if method in ("post", "put", "patch"):
        out.append(413)
    if not public:
        out += [401, 403]
    elif operation.get("x-pps-credential-in-body"):
        out.append(401)  # a public route that redeems a credential carried in its body (an enrolment code)
    return sorted(out)


def rewrite(schema: dict[str, Any]) -> dict[str, Any]:
    """The generated document with the real error envelope, every error status and the vendor media types."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components[ENVELOPE] = _ENVELOPE_SCHEMA
    ref = {"$ref": f"#/components/schemas/{ENVELOPE}"}
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = operation.setdefault("responses", {})
            for status in _statuses(operation, method):
                responses[str(status)] = {
                    "description": _ERRORS[status],
                    "content": {"application/json": {"schema": ref}},
                }
            if path == "/v1/jobs/{job_id}/result" and method == "get":
                binary = {"schema": {"type": "string", "format": "binary"}}
                responses["200"]["content"] = dict.fromkeys(RESULT_MEDIA_TYPES, binary)
    return schema


def document(app: FastAPI) -> None:
    """Replace ``app.openapi`` with the rewritten document (built once)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = rewrite(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
