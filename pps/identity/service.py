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
    InvalidEnrolmentCode,
    InvalidInput,
    InvalidToken,
    NotFound,
    OperatorBounded,
    TokenExpired,
    TokenRevoked,
)
from pps.identity.uscc import validate_uscc
from pps.infra.storage.tables import (
    ApiToken,
    BreakGlass,
    EnrolmentCode,
    Organization,
    Role,
    new_id,
    utcnow,
)
from pps.infra.text import check_name
from pps.ledger.entry import Actor, EntryDraft, ObjectRef, Release, format_time
from pps.ledger.store import Ledger

TOKEN_PREFIX = "pps_"  # noqa: S105 - a prefix, not a secret
MAX_TOKEN_LENGTH = 128
ENROLMENT_PREFIX = "enr_"
ENROLMENT_TTL = timedelta(days=14)
SELF_CREDENTIALED = frozenset({Role.subject, Role.bank})
"""Roles whose credentials only the organisation itself mints (from its one-time enrolment code, then with
its own token): the operator can onboard a bank or a subject but never act as one."""
BREAK_GLASS_ACTIONS = ("revoke_tokens", "disable_org")
"""What two operators may do together to another organisation: take its credentials away, never give any."""


@dataclass(frozen=True)
class IssuedCode:
    code: EnrolmentCode
    secret: str
    """The one-time code, to be delivered to the organisation out of band. Shown once; only its HMAC is kept."""


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
        if org.role in SELF_CREDENTIALED and actor.org_id != org.id:
            raise OperatorBounded(
                f"a {org.role.value}'s credentials are minted only by the organisation itself: {org.id} gets its "
                "first token by redeeming its one-time enrolment code (POST /v1/enrol), then issues its own",
                details={"org": org.id},
            )
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

    # --- enrolment codes: an organisation's first credential ------------------------------------------

    def _code_hash(self, code: str) -> bytes:
        return hmac.new(self._key, b"enrolment|" + code.encode(), hashlib.sha256).digest()

    def issue_enrolment_code(
        self,
        session: Session,
        *,
        org: Organization,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> IssuedCode:
        """A one-time code for ``org``'s first credential, to deliver out of band (a letter to the legal
        representative, the bank's security officer in person). Only for an organisation that has never
        enrolled: a second code for a subject or bank would let whoever holds it act as that organisation."""
        if org.disabled_at is not None:
            raise Conflict(f"organisation {org.id} is disabled")
        now = now or utcnow()
        if org.role in SELF_CREDENTIALED:
            used = session.execute(
                select(EnrolmentCode.id).where(
                    EnrolmentCode.org_id == org.id, EnrolmentCode.used_at.is_not(None)
                )
            ).first()
            if used is not None:
                raise OperatorBounded(
                    f"{org.id} has already enrolled; a new enrolment code would let its holder act as it. The "
                    "organisation issues its own tokens; if it lost them all it is offboarded and onboarded anew",
                    details={"org": org.id},
                )
        secret = ENROLMENT_PREFIX + secrets.token_urlsafe(24)
        row = EnrolmentCode(
            id=new_id("enr"),
            org_id=org.id,
            code_hash=self._code_hash(secret),
            created_at=now,
            expires_at=now + ENROLMENT_TTL,
            used_at=None,
        )
        session.add(row)
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="org.enrolment_code",
                actor=actor,
                objects=(ObjectRef("enrolment_code", row.id), ObjectRef("org", org.id)),
                subjects=(org.uscc,) if org.uscc else (),
                request_id=request_id,
                detail={"expires_at": format_time(row.expires_at), "for_org": org.id},
            ),
            now=now,
        )
        return IssuedCode(row, secret)

    def redeem_enrolment_code(
        self,
        session: Session,
        *,
        code: str,
        label: str,
        ttl: timedelta,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> tuple[Organization, IssuedToken]:
        """The organisation's first API token, minted by the organisation itself from its one-time code."""
        now = now or utcnow()
        if not code.startswith(ENROLMENT_PREFIX) or len(code) > MAX_TOKEN_LENGTH:
            raise InvalidEnrolmentCode("not a PPS enrolment code (expected enr_...)")
        row = session.execute(
            select(EnrolmentCode).where(EnrolmentCode.code_hash == self._code_hash(code))
        ).scalar_one_or_none()
        if row is None:
            raise InvalidEnrolmentCode("unknown enrolment code; check the letter you received")
        if row.used_at is not None:
            raise InvalidEnrolmentCode(
                f"this enrolment code was used at {row.used_at.isoformat()}; if that was not you, tell the "
                "platform operator and your bank at once"
            )
        if row.expires_at <= now:
            raise InvalidEnrolmentCode(f"this enrolment code expired at {row.expires_at.isoformat()}")
        org = self.get_org(session, row.org_id)
        if org.disabled_at is not None:
            raise InvalidEnrolmentCode(f"organisation {org.id} is disabled")
        row.used_at = now
        session.flush()
        actor = Actor(org_id=org.id, role=org.role.value, via="api", token_id=None)
        self.ledger.append(
            session,
            EntryDraft(
                action="org.enrol",
                actor=actor,
                objects=(ObjectRef("enrolment_code", row.id), ObjectRef("org", org.id)),
                subjects=(org.uscc,) if org.uscc else (),
                request_id=request_id,
            ),
            now=now,
        )
        issued = self.issue_token(
            session, org=org, label=label, ttl=ttl, actor=actor, request_id=request_id, now=now
        )
        return org, issued

    # --- refusals and break-glass ---------------------------------------------------------------------

    def record_refusal(
        self,
        session: Session,
        *,
        action: str,
        actor: Actor,
        org_id: str | None,
        reason: str,
        request_id: str | None = None,
    ) -> None:
        """A refused operator power, as a ledger entry the affected organisation sees in its history."""
        org = session.get(Organization, org_id) if org_id else None
        self.ledger.append(
            session,
            EntryDraft(
                action=action,
                actor=actor,
                objects=(ObjectRef("org", org.id),) if org else (),
                subjects=(org.uscc,) if org and org.uscc else (),
                request_id=request_id,
                detail={"refused": reason[:400], "for_org": org_id},
            ),
        )

    def propose_break_glass(
        self,
        session: Session,
        *,
        org: Organization,
        action: str,
        reason: str,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> BreakGlass:
        """One operator proposes an emergency action on another organisation; a second operator must do it."""
        if actor.role != Role.platform_admin.value or actor.org_id is None:
            raise OperatorBounded(
                "break-glass is proposed by a platform operator signed in with its own token"
            )
        if action not in BREAK_GLASS_ACTIONS:
            raise InvalidInput(f"break-glass action must be one of {', '.join(BREAK_GLASS_ACTIONS)}")
        reason = reason.strip()
        if len(reason) < 10:
            raise InvalidInput("a break-glass action needs a reason of at least 10 characters")
        if org.id == actor.org_id:
            raise InvalidInput("break-glass acts on another organisation")
        now = now or utcnow()
        row = BreakGlass(
            id=new_id("brk"),
            org_id=org.id,
            action=action,
            reason=reason[:500],
            proposed_by=actor.org_id,
            proposed_at=now,
            approved_by=None,
            done_at=None,
        )
        session.add(row)
        session.flush()
        self._break_glass_entry(session, "break_glass.propose", row, org, actor, request_id, now)
        return row

    def approve_break_glass(
        self,
        session: Session,
        row: BreakGlass,
        *,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> BreakGlass:
        """A second operator approves and so performs a proposed break-glass action."""
        if actor.role != Role.platform_admin.value or actor.org_id is None:
            raise OperatorBounded(
                "break-glass is approved by a platform operator signed in with its own token"
            )
        if row.done_at is not None:
            raise Conflict(f"break-glass {row.id} was done at {row.done_at.isoformat()}")
        if actor.org_id == row.proposed_by:
            raise OperatorBounded(
                f"break-glass {row.id} was proposed by {row.proposed_by}: a second operator must approve it"
            )
        now = now or utcnow()
        org = self.get_org(session, row.org_id)
        row.approved_by = actor.org_id
        row.done_at = now
        session.flush()
        self._break_glass_entry(session, "break_glass.do", row, org, actor, request_id, now)
        if row.action == "revoke_tokens":
            for token in self.list_tokens(session, org.id):
                if token.revoked_at is None:
                    self.revoke_token(session, token, actor=actor, request_id=request_id, now=now)
        elif row.action == "disable_org" and org.disabled_at is None:
            self.disable_org(
                session, org, reason=f"break-glass {row.id}: {row.reason}", actor=actor, request_id=request_id
            )
        return row

    def _break_glass_entry(
        self,
        session: Session,
        action: str,
        row: BreakGlass,
        org: Organization,
        actor: Actor,
        request_id: str | None,
        now: datetime,
    ) -> None:
        self.ledger.append(
            session,
            EntryDraft(
                action=action,
                actor=actor,
                objects=(ObjectRef("break_glass", row.id), ObjectRef("org", org.id)),
                subjects=(org.uscc,) if org.uscc else (),
                request_id=request_id,
                detail={
                    "action": row.action,
                    "reason": row.reason,
                    "proposed_by": row.proposed_by,
                    "approved_by": row.approved_by,
                    "for_org": org.id,
                },
            ),
            now=now,
        )

    def break_glass_for(self, session: Session, org_id: str | None) -> list[BreakGlass]:
        query = select(BreakGlass).order_by(BreakGlass.proposed_at, BreakGlass.id)
        if org_id is not None:
            query = query.where(BreakGlass.org_id == org_id)
        return list(session.execute(query).scalars())

    def get_break_glass(self, session: Session, bg_id: str) -> BreakGlass:
        row = session.get(BreakGlass, bg_id)
        if row is None:
            raise NotFound(f"break-glass {bg_id} does not exist")
        return row
