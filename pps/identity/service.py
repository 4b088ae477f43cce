"""Organisations and API tokens.

Tokens are ``pps_`` followed by 43 url-safe characters (256 random bits). Only an HMAC-SHA256 of the token
under the server secret (``PPS_SECRET_KEY``) is stored, so neither a database dump nor a log line holds a
usable credential; the token itself is shown once, when it is issued. Every change here is a ledger entry
written in the caller's transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pps.errors import (
    Conflict,
    InvalidInput,
    InvalidToken,
    NotFound,
    TokenExpired,
    TokenRevoked,
)
from pps.identity.uscc import validate_uscc
from pps.infra.storage.tables import ApiToken, Organization, Role, new_id, utcnow
from pps.infra.text import check_name
from pps.ledger.entry import Actor, EntryDraft, ObjectRef, Release, format_time
from pps.ledger.store import Ledger

TOKEN_PREFIX = "pps_"  # noqa: S105 - a prefix, not a secret
MAX_TOKEN_LENGTH = 128


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str
    """The token to hand to the organisation. It is not stored and cannot be shown again."""


OnDisable = Callable[[Session, Organization, Actor, str | None], None]


class IdentityService:
    def __init__(self, ledger: Ledger, secret_key: bytes) -> None:
        self.ledger = ledger
        self._key = secret_key
        self.on_disable: list[OnDisable] = []
        """what else ends when an organisation is offboarded (its consents), in the same transaction"""

    def hash_token(self, token: str) -> bytes:
        return hmac.new(self._key, token.encode(), hashlib.sha256).digest()

    # --- organisations -------------------------------------------------------------------------------

    def create_org(
        self,
        session: Session,
        *,
        name: str,
        role: Role,
        uscc: str | None,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> Organization:
        name = name.strip()
        if not name:
            raise InvalidInput("an organisation needs a non-empty name")
        check_name(name, "the organisation name")
        if role is Role.subject:
            if uscc is None:
                raise InvalidInput("a subject organisation (an enterprise) needs its USCC")
            uscc = validate_uscc(uscc)
        elif uscc is not None:
            raise InvalidInput(f"only subject organisations carry a USCC; {role.value} organisations do not")
        if session.execute(select(Organization.id).where(Organization.name == name)).first():
            raise Conflict(f"an organisation named {name!r} already exists")
        if uscc and session.execute(select(Organization.id).where(Organization.uscc == uscc)).first():
            raise Conflict(f"an organisation with USCC {uscc} already exists")
        org = Organization(id=new_id("org"), name=name, role=role, uscc=uscc, created_at=now or utcnow())
        session.add(org)
        try:
            session.flush()
        except IntegrityError as exc:  # a concurrent create won the race
            raise Conflict(f"an organisation named {name!r} or with that USCC already exists") from exc
        self.ledger.append(
            session,
            EntryDraft(
                action="org.create",
                actor=actor,
                objects=(ObjectRef("org", org.id),),
                subjects=(uscc,) if uscc else (),
                request_id=request_id,
                detail={"name": name, "role": role.value},
            ),
            now=now,
        )
        return org

    def disable_org(
        self,
        session: Session,
        org: Organization,
        *,
        reason: str,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> Organization:
        """Offboard an organisation: its tokens stop working at once; its records and history stay."""
        if org.disabled_at is not None:
            raise Conflict(f"organisation {org.id} was already disabled at {org.disabled_at.isoformat()}")
        if org.id == actor.org_id:
            raise InvalidInput("an organisation cannot disable itself; ask another platform admin")
        now = now or utcnow()
        org.disabled_at = now
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="org.disable",
                actor=actor,
                objects=(ObjectRef("org", org.id),),
                subjects=(org.uscc,) if org.uscc else (),
                request_id=request_id,
                detail={"reason": reason},
            ),
            now=now,
        )
        for hook in self.on_disable:
            hook(session, org, actor, request_id)
        return org

    def get_org(self, session: Session, org_id: str) -> Organization:
        org = session.get(Organization, org_id)
        if org is None:
            raise NotFound(f"organisation {org_id} does not exist")
        return org

    def list_orgs(
        self, session: Session, *, role: Role | None = None, after: str | None = None, limit: int = 50
    ) -> list[Organization]:
        query = select(Organization).order_by(Organization.id).limit(limit)
        if role is not None:
            query = query.where(Organization.role == role)
        if after is not None:
            query = query.where(Organization.id > after)
        return list(session.execute(query).scalars())

    def admin_exists(self, session: Session) -> bool:
        count = session.execute(
            select(func.count()).select_from(Organization).where(Organization.role == Role.platform_admin)
        ).scalar_one()
        return count > 0

    # --- tokens --------------------------------------------------------------------------------------

    def issue_token(
        self,
        session: Session,
        *,
        org: Organization,
        label: str,
        ttl: timedelta,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> IssuedToken:
        if org.disabled_at is not None:
            raise Conflict(f"organisation {org.id} is disabled; no tokens can be issued for it")
        if ttl <= timedelta(0):
            raise InvalidInput("a token's lifetime must be positive")
        now = now or utcnow()
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = ApiToken(
            id=new_id("tok"),
            org_id=org.id,
            label=label.strip() or "default",
            secret_hash=self.hash_token(secret),
            created_at=now,
            expires_at=now + ttl,
        )
        session.add(token)
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="token.issue",
                actor=actor,
                objects=(ObjectRef("token", token.id), ObjectRef("org", org.id)),
                subjects=(org.uscc,) if org.uscc else (),
                # the secret goes to whoever asked for it: the organisation itself, or an admin acting for it
                released=(Release(to=actor.org_id or "operator", what=f"api_token:{token.id}"),),
                request_id=request_id,
                detail={"label": token.label, "expires_at": format_time(token.expires_at), "for_org": org.id},
            ),
            now=now,
        )
        return IssuedToken(token, secret)

    def get_token(self, session: Session, token_id: str) -> ApiToken:
        token = session.get(ApiToken, token_id)
        if token is None:
            raise NotFound(f"token {token_id} does not exist")
        return token

    def list_tokens(self, session: Session, org_id: str) -> list[ApiToken]:
        return list(
            session.execute(
                select(ApiToken).where(ApiToken.org_id == org_id).order_by(ApiToken.created_at, ApiToken.id)
            ).scalars()
        )

    def revoke_token(
        self,
        session: Session,
        token: ApiToken,
        *,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> ApiToken:
        if token.revoked_at is not None:
            raise Conflict(f"token {token.id} was already revoked at {token.revoked_at.isoformat()}")
        now = now or utcnow()
        token.revoked_at = now
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="token.revoke",
                actor=actor,
                objects=(ObjectRef("token", token.id), ObjectRef("org", token.org_id)),
                subjects=(token.org.uscc,) if token.org.uscc else (),
                request_id=request_id,
            ),
            now=now,
        )
        return token

    def authenticate_at_time(
        self, session: Session, token: str, now: datetime
    ) -> tuple[Organization, ApiToken]:
        """The organisation behind a bearer token at time ``now``; raises the precise reason if unusable."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken("not a PPS API token (expected 'Authorization: Bearer pps_...')")
        row = session.execute(
            select(ApiToken).where(ApiToken.secret_hash == self.hash_token(token))
        ).scalar_one_or_none()
        if row is None:
            raise InvalidToken("unknown API token; ask your platform operator for a new one")
        if row.revoked_at is not None:
            raise TokenRevoked(f"token {row.id} was revoked at {row.revoked_at.isoformat()}")
        if row.expires_at <= now:
            raise TokenExpired(f"token {row.id} expired at {row.expires_at.isoformat()}; issue a new one")
        org = row.org
        if org.disabled_at is not None:
            raise InvalidToken(f"organisation {org.id} is disabled")
        return org, row

    def authenticate(self, session: Session, token: str) -> tuple[Organization, ApiToken]:
        return self.authenticate_at_time(session, token, utcnow())
