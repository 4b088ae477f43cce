"""What every page shares: the browser session, the CSRF check, role checks borrowed from the API, rendering.

Threats and answers:

* a stolen cookie is a session, not a credential: it names a server-side row (by SHA-256 of a random id),
  expires after :data:`SESSION_TTL` (or with its API token), and ends at log-out; the API token itself is
  checked at log-in and never stored in the browser or the database;
* nor can a cookie be turned into a credential: a page issues an API token only after the person types a
  valid API token of the session's organisation again (:func:`reauthenticate`), and the new token expires no
  later than the token the session was opened with (:attr:`Web.token_expires_at`);
* the ledger tells page actions apart: their actor says ``via: "web"`` (:class:`PageCaller`);
* cross-site requests: the cookie is ``SameSite=Strict`` and ``HttpOnly`` (``Secure`` over https), and every
  state-changing form carries a synchronizer token bound to the session, compared in constant time;
* a page does no more than the API: each page action calls the API route's own function, after the role
  guard that route declares (:func:`call`), so object-level checks (another tenant's objects are "not found")
  are the API's, not a copy.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar
from urllib.parse import parse_qs, quote

import jinja2
from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError
from sqlalchemy import delete

from api.deps import Caller, RoleGuard, RuntimeDep, declared_roles
from api.errors import status_for
from api.routers import aggregates, audit, consent, datasets, identity, jobs, persons, scoring
from api.routers import models as model_routes
from api.routers import objections as objection_routes
from api.routers import repairs as repair_routes
from api.routers import reports as report_routes
from pps.errors import AuthenticationError, Forbidden, InvalidInput, PayloadTooLarge, PPSError
from pps.identity.service import MAX_TOKEN_LENGTH
from pps.infra.storage.tables import ApiToken, Organization, Role, WebSession, utcnow
from pps.ledger.entry import Actor

from .i18n import LANGS, translate

PREFIX = "/ui"
COOKIE = "pps_session"
LOGIN_COOKIE = "pps_login_csrf"
LANG_COOKIE = "pps_lang"
SESSION_TTL = timedelta(hours=8)
MAX_FORM_BYTES = 64 * 1024

HOME = {
    Role.subject: f"{PREFIX}/subject",
    Role.bank: f"{PREFIX}/bank",
    Role.auditor: f"{PREFIX}/auditor",
    Role.platform_admin: f"{PREFIX}/operator",
    Role.data_provider: f"{PREFIX}/datasets",
}

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


class LoginRequired(AuthenticationError):
    """No live browser session: the page sends the visitor to the log-in form."""

    code = "login_required"


class CSRFRefused(Forbidden):
    """A state-changing form without the session's synchronizer token (or from another origin)."""

    code = "csrf_refused"


class ReauthenticationFailed(Forbidden):
    """An action that mints a credential, without a valid API token of the session's organisation typed again."""

    code = "reauthentication_failed"


def session_key(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


# --- the session --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageCaller(Caller):
    """The caller of a page: the API's :class:`Caller`, whose ledger entries say ``via: "web"``."""

    @property
    def actor(self) -> Actor:
        return replace(super().actor, via="web")


@dataclass(frozen=True)
class Web:
    """A logged-in page request: who calls, the session's CSRF token, the label language.

    ``token_expires_at`` is when the API token the session was opened with expires: no token issued from
    a page outlives it.
    """

    caller: Caller
    csrf: str
    lang: str
    request: Request
    token_expires_at: datetime

    def t(self, key: str) -> str:
        return translate(key, self.lang)


def lang_of(request: Request) -> str:
    asked = request.query_params.get("lang")
    if asked in LANGS:
        return asked
    kept = request.cookies.get(LANG_COOKIE)
    return kept if kept in LANGS else "en"


def open_session(rt: RuntimeDep, org: Organization, token: ApiToken) -> tuple[str, datetime]:
    """Store a new session for ``token``'s organisation; returns the cookie value and its expiry."""
    session_id = secrets.token_urlsafe(32)
    now = utcnow()
    expires = min(now + SESSION_TTL, token.expires_at)
    with rt.db.transaction() as session:
        session.execute(delete(WebSession).where(WebSession.expires_at <= now))
        session.add(
            WebSession(
                id_hash=session_key(session_id),
                org_id=org.id,
                token_id=token.id,
                csrf_token=secrets.token_urlsafe(32),
                created_at=now,
                expires_at=expires,
            )
        )
    return session_id, expires


def close_session(rt: RuntimeDep, session_id: str) -> None:
    with rt.db.transaction() as session:
        session.execute(delete(WebSession).where(WebSession.id_hash == session_key(session_id)))


def web(request: Request, rt: RuntimeDep) -> Web:
    """The logged-in caller of a page, or :class:`LoginRequired`; re-checks the token on every request."""
    session_id = request.cookies.get(COOKIE)
    if not session_id or len(session_id) > 100:
        raise LoginRequired("log in to see this page")
    now = utcnow()
    with rt.db.transaction(write=False) as session:
        row = session.get(WebSession, session_key(session_id))
        if row is None or row.expires_at <= now:
            raise LoginRequired("your session has ended; log in again")
        token = session.get(ApiToken, row.token_id)
        org = session.get(Organization, row.org_id)
        usable = (
            token is not None
            and org is not None
            and token.revoked_at is None
            and token.expires_at > now
            and org.disabled_at is None
        )
        if not usable or org is None or token is None:
            raise LoginRequired("the token behind this session was revoked or expired; log in again")
        caller = PageCaller(org_id=org.id, name=org.name, role=org.role, uscc=org.uscc, token_id=row.token_id)
        return Web(
            caller=caller,
            csrf=row.csrf_token,
            lang=lang_of(request),
            request=request,
            token_expires_at=token.expires_at,
        )


WebDep = Annotated[Web, Depends(web)]


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:  # not sent by every client for same-origin posts; the CSRF token still decides
        return True
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


async def read_form(request: Request) -> dict[str, list[str]]:
    """A url-encoded form body, parsed; bad encoding or an oversized body is refused."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise InvalidInput("send the form as application/x-www-form-urlencoded")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise PayloadTooLarge(f"a form may carry at most {MAX_FORM_BYTES} bytes")
    try:
        text = body.decode("ascii")
        return parse_qs(text, keep_blank_values=True, strict_parsing=False, max_num_fields=500)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"the form could not be read: {exc}") from None


async def csrf_form(request: Request, page: WebDep) -> dict[str, list[str]]:
    """The form of a state-changing request, after the synchronizer-token and origin checks."""
    if not _same_origin(request):
        raise CSRFRefused("this form was sent from another site")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise CSRFRefused("a form must carry its security token; reload the page and try again")
    form = await read_form(request)
    sent = (form.get("csrf") or [""])[0]
    if not sent or not hmac.compare_digest(sent.encode(), page.csrf.encode()):
        raise CSRFRefused("the form's security token is missing or stale; reload the page and try again")
    return form


FormDep = Annotated[dict[str, list[str]], Depends(csrf_form)]


def one(form: dict[str, list[str]], name: str, default: str = "") -> str:
    values = form.get(name)
    return values[0].strip() if values else default


# --- role checks: the API route's own guard ------------------------------------------------------------

_API_ROUTERS = (
    identity.router,
    audit.router,
    datasets.router,
    consent.router,
    jobs.router,
    aggregates.router,
    model_routes.router,
    objection_routes.router,
    repair_routes.router,
    persons.router,
    report_routes.router,
    scoring.router,
)
P = ParamSpec("P")
R = TypeVar("R")


def api_roles(endpoint: Callable[..., Any]) -> frozenset[Role]:
    """The roles the API route served by ``endpoint`` declares (it must have exactly one guard)."""
    for router in _API_ROUTERS:
        for route in router.routes:
            if isinstance(route, APIRoute) and route.endpoint is endpoint:
                roles = declared_roles(route)
                if roles is None:
                    raise RuntimeError(f"API route {route.path} declares no guard")
                return roles
    raise RuntimeError(f"{endpoint.__qualname__} is not an API route")


def allowed(page: Web, endpoint: Callable[..., Any]) -> bool:
    roles = api_roles(endpoint)
    return not roles or page.caller.role in roles


def guard(page: Web, endpoint: Callable[..., Any]) -> None:
    """Apply the role guard of the API route served by ``endpoint`` to ``page``'s caller."""
    roles = api_roles(endpoint)
    if roles:
        RoleGuard(roles)(page.caller)


def call(page: Web, endpoint: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Call an API route function as ``page``'s caller, after that route's role guard."""
    guard(page, endpoint)
    return endpoint(*args, **kwargs)


def require(page: Web, *roles: Role) -> None:
    RoleGuard(frozenset(roles))(page.caller)


# --- rendering -----------------------------------------------------------------------------------------


def render(
    page: Web | None, request: Request, template: str, status_code: int = 200, **ctx: Any
) -> HTMLResponse:
    lang = page.lang if page else lang_of(request)
    html = _templates.get_template(template).render(
        page=page,
        lang=lang,
        t=lambda key: translate(key, lang),
        prefix=PREFIX,
        home=HOME,
        path=request.url.path,
        flash=ctx.pop("flash", None),
        **ctx,
    )
    response = HTMLResponse(html, status_code=status_code)
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    if request.query_params.get("lang") in LANGS:
        response.set_cookie(LANG_COOKIE, lang, path=PREFIX, samesite="strict", max_age=365 * 86400)
    return response


def redirect(url: str, **query: str) -> RedirectResponse:
    if query:
        url += "?" + "&".join(f"{k}={quote(v)}" for k, v in query.items())
    return RedirectResponse(url, status_code=303)


def _error_page(request: Request, status_code: int, code: str, message: str) -> Response:
    return render(
        None,
        request,
        "error.html",
        status_code=status_code,
        status=status_code,
        code=code,
        message=message,
        back=request.headers.get("referer") if _same_origin(request) else None,
    )


class PageRoute(APIRoute):
    """A page route: errors become an HTML page with the API's status code; no session → the log-in form."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                if request.method == "GET":
                    return redirect(f"{PREFIX}/login", next=request.url.path)
                return _error_page(request, 401, LoginRequired.code, "your session has ended; log in again")
            except PPSError as exc:
                return _error_page(request, status_for(exc), exc.code, exc.message)
            except (RequestValidationError, ValidationError) as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in err.get('loc', ()) if p != 'body')}: {err.get('msg')}"
                    for err in exc.errors()
                )
                return _error_page(request, 422, "invalid_input", problems or "the input is invalid")

        return page_handler


def safe_next(target: str | None) -> str | None:
    """A post-log-in target only if it is one of our pages (no open redirect)."""
    if target and target.startswith(PREFIX + "/") and "//" not in target and "\\" not in target:
        return target
    return None


def reauthenticate(page: Web, rt: RuntimeDep, token_text: str) -> None:
    """Raise :class:`ReauthenticationFailed` unless ``token_text`` is a usable API token of the session's
    organisation: the one the session was opened with, or another of the same organisation.

    Asked before a page mints a credential, so that a stolen session cookie alone cannot.
    """
    token_text = token_text.strip()
    if not token_text:
        raise ReauthenticationFailed("enter your current API token to confirm it is you")
    if len(token_text) > MAX_TOKEN_LENGTH:
        raise ReauthenticationFailed("that is not a PPS API token")
    try:
        with rt.db.transaction(write=False) as session:
            org, token = rt.identity.authenticate(session, token_text)
            same_org = token.id == page.caller.token_id or org.id == page.caller.org_id
    except AuthenticationError as exc:
        raise ReauthenticationFailed(f"the API token you entered was not accepted: {exc.message}") from None
    if not same_org:
        raise ReauthenticationFailed("the API token you entered belongs to another organisation")


def check_token_shape(token: str) -> str:
    token = token.strip()
    if not token:
        raise InvalidInput("enter your API token")
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidInput("that is not a PPS API token")
    return token
