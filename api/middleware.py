"""ASGI middleware: request ids, request body limits (pure ASGI, so bodies stream and are counted) and the
one strict reading of JSON bodies (no duplicate keys, no control or bidirectional-override characters)."""

from __future__ import annotations

import json
import re
import uuid
from contextvars import ContextVar
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pps.errors import DuplicateJSONKey, UnsafeText
from pps.infra.text import first_unsafe_in
from pps_wire.envelope import error_body
from pps_wire.errors import PayloadTooLarge

_request_id: ContextVar[str | None] = ContextVar("pps_request_id", default=None)
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
REQUEST_ID_HEADER = b"x-request-id"


def current_request_id() -> str | None:
    return _request_id.get()


class RequestIdMiddleware:
    """Takes a well-formed ``X-Request-ID`` from the caller or makes one; echoes it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(REQUEST_ID_HEADER, b"").decode("latin-1")
        rid = given if _VALID_ID.match(given) else uuid.uuid4().hex
        token = _request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER]
                headers.append((REQUEST_ID_HEADER, rid.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _request_id.reset(token)


class ResponseTracker:
    """Wraps ``send`` to remember whether the response has started (after which no error page can be sent)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


class _BodyTooLarge(HTTPException):
    """Raised from ``receive``; an HTTPException so that FastAPI's body parsing passes it through as 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")


class BodySizeLimitMiddleware:
    """Refuses request bodies over the limit with 413, by Content-Length or by counting streamed bytes.

    ``max_bytes`` applies everywhere except paths matching one of ``overrides`` (regex → limit), such as
    dataset uploads.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, overrides: dict[str, int] | None = None) -> None:
        self.app = app
        self.default = max_bytes
        self.overrides = [(re.compile(p), n) for p, n in (overrides or {}).items()]

    def limit_for(self, path: str) -> int:
        for pattern, limit in self.overrides:
            if pattern.fullmatch(path):
                return limit
        return self.default

    async def _reject(self, send: Send, limit: int) -> None:
        body = json.dumps(
            error_body(
                PayloadTooLarge.code, f"request body exceeds the limit of {limit} bytes", current_request_id()
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                too_big = False
            if too_big:
                await self._reject(send, limit)
                return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge(limit)
            return message

        tracker = ResponseTracker(send)
        try:
            await self.app(scope, counting_receive, tracker)
        except _BodyTooLarge:
            if not tracker.started:
                await self._reject(send, limit)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateJSONKey(
                f"the JSON body names the key {key!r} more than once; each key may appear once "
                "(parsers disagree on which value would win)",
                details={"key": key},
            )
        seen[key] = value
    return seen


def check_json_body(body: bytes) -> None:
    """Raise :class:`~pps.errors.DuplicateJSONKey` or :class:`~pps.errors.UnsafeText` for a JSON document
    that names a key twice or holds a control or bidirectional-override character in any string; return
    quietly for a sound document and for anything that is not JSON (the route reports that itself)."""
    try:
        document = json.loads(body, object_pairs_hook=_no_duplicate_keys)
    except (ValueError, RecursionError):  # not JSON (UnicodeDecodeError is a ValueError)
        return
    problem = first_unsafe_in(document)
    if problem is not None:
        raise problem


def _json_typed(content_type: bytes | None) -> bool:
    """Would FastAPI parse this body as JSON? (It does when the type is absent, JSON or ``+json``.)"""
    if content_type is None:
        return True
    main = content_type.split(b";", 1)[0].strip().lower()
    return main == b"application/json" or main.endswith(b"+json")


class StrictJSONMiddleware:
    """Every JSON request body, once, before any route reads it: duplicate keys are refused (400), and so are
    control and bidirectional-override characters in any key or string (422). Bodies of other types (CSV,
    NDJSON and Parquet uploads) pass through unread. Sits inside the body-size limit, which bounds what it
    buffers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        if not _json_typed(dict(scope.get("headers") or []).get(b"content-type")):
            await self.app(scope, receive, send)
            return
        parts: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message]), send)
                return
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(parts)
        try:
            check_json_body(body)
        except (DuplicateJSONKey, UnsafeText) as exc:
            status = 400 if isinstance(exc, DuplicateJSONKey) else 422
            payload = json.dumps(
                error_body(exc.code, exc.message, current_request_id(), exc.details)
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(payload)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": payload})
            return
        await self.app(scope, _replay([{"type": "http.request", "body": body, "more_body": False}]), send)


def _replay(messages: list[Message]) -> Receive:
    queue = list(messages)

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        return {"type": "http.disconnect"}

    return receive
