"""Dependencies shared by the routes: the runtime, the caller, role guards and page sizes.

Every route declares who may call it, with exactly one guard:

* ``allow(Role.bank, ...)`` — an authenticated caller with one of these roles; returns the :class:`Caller`;
* ``PUBLIC`` — no credential needed (health, the ledger's public key).

A test walks the app's routes and fails if a route has no guard, and a role × route matrix checks that
each guard lets in exactly the roles it names. Object-level checks (an organisation only ever sees its own
objects) are made in the routes, and report another tenant's objects as not found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pps.errors import AuthenticationError, InvalidInput, RoleNotAllowed
from pps.infra.storage.tables import Role
from pps.ledger.entry import Actor
from pps.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

_bearer = HTTPBearer(auto_error=False, description="an API token: `Authorization: Bearer pps_...`")


@dataclass(frozen=True)
class Caller:
    org_id: str
    name: str
    role: Role
    uscc: str | None
    token_id: str

    @property
    def actor(self) -> Actor:
        return Actor(org_id=self.org_id, role=self.role.value, via="api", token_id=self.token_id)

    @property
    def sees_everything(self) -> bool:
        """Platform admins and auditors may read every organisation's metadata and every ledger entry."""
        return self.role in (Role.platform_admin, Role.auditor)


def authenticate(
    rt: RuntimeDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Caller:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthenticationError("this route needs an API token: send 'Authorization: Bearer pps_...'")
    with rt.db.transaction(write=False) as session:
        org, token = rt.identity.authenticate(session, credentials.credentials)
        return Caller(org_id=org.id, name=org.name, role=org.role, uscc=org.uscc, token_id=token.id)


class RoleGuard:
    """Lets in authenticated callers whose role is in ``roles``; its ``roles`` are what the route declares."""

    def __init__(self, roles: frozenset[Role]) -> None:
        if not roles:
            raise ValueError("a route must allow at least one role")
        self.roles = roles

    def __call__(self, caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
        if caller.role not in self.roles:
            allowed = ", ".join(sorted(r.value for r in self.roles))
            raise RoleNotAllowed(
                f"a {caller.role.value} may not call this route; it is for: {allowed}",
                details={"role": caller.role.value, "allowed": sorted(r.value for r in self.roles)},
            )
        return caller


class PublicRoute:
    """Declares a route that needs no credential."""

    roles: frozenset[Role] = frozenset()

    def __call__(self) -> None:
        return None


ALL_ROLES = frozenset(Role)


def allow(*roles: Role) -> Any:
    return Depends(RoleGuard(frozenset(roles) if roles else ALL_ROLES))


PUBLIC = Depends(PublicRoute())


PAGE_SIZE_CEILING = 1000
"""The most any deployment may set as ``PPS_PAGE_SIZE_MAX`` (the OpenAPI document states it as ``limit``'s
maximum; the server's own maximum may be lower and is checked too)."""


def page_limit(
    rt: RuntimeDep,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=PAGE_SIZE_CEILING,
            description="page size (default and maximum set by the server, never above 1000)",
        ),
    ] = None,
) -> int:
    if limit is None:
        return rt.settings.page_size_default
    if limit > rt.settings.page_size_max:
        raise InvalidInput(f"limit may be at most {rt.settings.page_size_max}")
    return limit


PageLimit = Annotated[int, Depends(page_limit)]


def declared_roles(route: APIRoute) -> frozenset[Role] | None:
    """The roles a route's guard lets in (empty for a public route), or None if it declares no guard.

    A route with more than one guard is refused too: which one wins would be unclear to a reader.
    """
    found: list[frozenset[Role]] = []
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, RoleGuard | PublicRoute):
            found.append(dep.call.roles)
        stack.extend(dep.dependencies)
    return found[0] if len(found) == 1 else None


MAX_INDEX = 2**63 - 1
"""Largest value a BIGINT column holds: bigger ids and cursors are refused at the door (422)."""
