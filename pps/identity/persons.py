"""Natural persons as subjects: farm and herding households (农牧户) and individual-business owners.

A person is named by the resident identity number (GB 11643-1999, :mod:`pps_wire.resident_id`), which PPS
validates and then forgets: the subject is keyed by a **keyed pseudonym**, an 18-character *person code* in the
shape of a USCC so that every path built for enterprises (consent, PSI, scoring, ledger, objections) carries it
unchanged::

    P | 1 (a natural person) | division (the ID's first 6 digits)
      | 8 characters of HMAC-SHA256(pseudonym key, ID number) | GB 11714 check | GB 32100 check

No GB 32100 registration authority uses ``P`` (they are 1-9, A, N, Y), so a person code never collides with
an enterprise's USCC, and :func:`is_person_code` tells them apart. The HMAC key is a 32-byte secret in the
server's key directory (``person-pseudonym-hmac.bin``); it is never rotated, since rotating it would re-key
every person. Only the masked number (first 6 and last 4 characters) is stored, to show the person what
they onboarded with. Who learns what: the operator's database, logs, ledger and every result hold the code
and the masked number; recovering the ID from a code needs the key *and* a search over the ~10^3 sequence
and check combinations per birth date and division, which is why the key stays on the server.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pps.errors import Conflict, InvalidInput, NotFound
from pps.identity.service import IdentityService
from pps.identity.uscc import ALPHABET, new_uscc, validate_uscc
from pps.infra.keys import load_or_create_secret
from pps.infra.storage.tables import Organization, Person, Role, utcnow
from pps.ledger.entry import Actor, EntryDraft, ObjectRef
from pps_wire.resident_id import mask_resident_id, validate_resident_id

PSEUDONYM_KEY_FILE = "person-pseudonym-hmac.bin"
PERSON_AUTHORITY = "P"


class PersonKind(StrEnum):
    household = "household"
    individual_business = "individual_business"


KIND_NAMES_ZH = {PersonKind.household: "农牧户", PersonKind.individual_business: "个体工商户经营者"}


def is_person_code(code: str) -> bool:
    """Whether a subject key is a person code (a pseudonym), not an enterprise's USCC."""
    return code[:1] == PERSON_AUTHORITY


INDIVIDUAL_BUSINESS_PREFIX = "92"
"""GB 32100: registration authority 9 (market regulation), organisation type 2 (个体工商户)."""


def is_individual_business(uscc: str) -> bool:
    """Whether a USCC is an individual business's (prefix 92): its owner is a natural person."""
    return uscc[:2] == INDIVIDUAL_BUSINESS_PREFIX


def is_personal(session: Session, subject: str) -> bool:
    """Whether ``subject`` is handled with the person rules: a person code, or the USCC of an individual business
    (个体工商户, owned by a natural person — its tax, utilities and court data are the owner's personal
    information under PIPL) that the operator onboarded with its owner (:meth:`PersonRegistry.onboard_business`).
    """
    if is_person_code(subject):
        return True
    return is_individual_business(subject) and session.get(Person, subject) is not None


class Pseudonymizer:
    """Keyed pseudonyms of resident ID numbers (HMAC-SHA256 under a server key)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the pseudonym key must have at least 32 bytes")
        self._key = key

    @classmethod
    def from_key_dir(cls, key_dir: Path) -> Pseudonymizer:
        return cls(load_or_create_secret(key_dir / PSEUDONYM_KEY_FILE))

    def code(self, resident_id: str) -> str:
        """The person code of a (valid) resident ID number; the same number always gives the same code (a
        person who is both a herder and an individual-business owner is one subject)."""
        number = validate_resident_id(resident_id)
        digest = hmac.new(self._key, b"pps/person/v1\x00" + number.encode(), hashlib.sha256).digest()
        value = int.from_bytes(digest[:8], "big")
        body = "".join(ALPHABET[(value // 31**k) % 31] for k in range(8))
        return new_uscc(PERSON_AUTHORITY + "1" + number[:6], body)


@dataclass(frozen=True)
class Onboarded:
    person: Person
    org: Organization


class PersonRegistry:
    """Onboards persons as subject organisations keyed by their code; the ID number goes no further."""

    def __init__(self, identity: IdentityService, pseudonyms: Pseudonymizer) -> None:
        self.identity = identity
        self.pseudonyms = pseudonyms

    def onboard(
        self,
        session: Session,
        *,
        resident_id: str,
        kind: PersonKind,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> Onboarded:
        now = now or utcnow()
        number = validate_resident_id(resident_id)
        code = self.pseudonyms.code(number)
        masked = mask_resident_id(number)
        del number
        if session.get(Person, code) is not None:
            raise Conflict(f"this person is already on the platform as {code}")
        name = f"{KIND_NAMES_ZH[kind]} {masked} ({code[-6:]})"
        org = self.identity.create_org(
            session, name=name, role=Role.subject, uscc=code, actor=actor, request_id=request_id, now=now
        )
        person = Person(code=code, org_id=org.id, kind=kind.value, id_masked=masked, created_at=now)
        session.add(person)
        try:
            session.flush()
        except IntegrityError as exc:
            raise Conflict(f"this person is already on the platform as {code}") from exc
        self.identity.ledger.append(
            session,
            EntryDraft(
                action="person.onboard",
                actor=actor,
                objects=(ObjectRef("org", org.id),),
                subjects=(code,),
                request_id=request_id,
                detail={"kind": kind.value, "id_masked": masked},
            ),
            now=now,
        )
        return Onboarded(person, org)

    def onboard_business(
        self,
        session: Session,
        *,
        uscc: str,
        owner_resident_id: str,
        actor: Actor,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> Onboarded:
        """An individual business (USCC prefix 92) whose owner is a natural person: the business is the subject
        (its data is keyed by its USCC) and is handled with the person rules; the owner's ID number is checked
        and kept only masked. The subject organisation of that USCC is used if it exists, else created."""
        uscc = validate_uscc(uscc)
        if not is_individual_business(uscc):
            raise InvalidInput(
                f"{uscc} is not an individual business's code (GB 32100: an individual business's starts with 92)"
            )
        number = validate_resident_id(owner_resident_id)
        masked = mask_resident_id(number)
        del number
        if session.get(Person, uscc) is not None:
            raise Conflict(f"this individual business is already handled as a person ({uscc})")
        now = now or utcnow()
        org = session.execute(select(Organization).where(Organization.uscc == uscc)).scalar_one_or_none()
        if org is None:
            org = self.identity.create_org(
                session,
                name=f"{KIND_NAMES_ZH[PersonKind.individual_business]} {masked} ({uscc[-6:]})",
                role=Role.subject,
                uscc=uscc,
                actor=actor,
                request_id=request_id,
                now=now,
            )
        elif org.role is not Role.subject:
            raise Conflict(f"organisation {org.id} with code {uscc} is not a data subject")
        person = Person(
            code=uscc,
            org_id=org.id,
            kind=PersonKind.individual_business.value,
            id_masked=masked,
            created_at=now,
        )
        session.add(person)
        session.flush()
        self.identity.ledger.append(
            session,
            EntryDraft(
                action="person.onboard",
                actor=actor,
                objects=(ObjectRef("org", org.id),),
                subjects=(uscc,),
                request_id=request_id,
                detail={"kind": PersonKind.individual_business.value, "id_masked": masked, "by": "uscc"},
            ),
            now=now,
        )
        return Onboarded(person, org)

    def code_for(self, resident_id: str) -> str:
        return self.pseudonyms.code(resident_id)

    def of_org(self, session: Session, org: Organization) -> Person:
        person = session.execute(select(Person).where(Person.org_id == org.id)).scalar_one_or_none()
        if person is None:
            raise InvalidInput(
                f"organisation {org.id} is not a person (a household or individual-business owner)"
            )
        return person

    def get(self, session: Session, code: str) -> Person:
        person = session.get(Person, code)
        if person is None:
            raise NotFound(f"no person with code {code} is on the platform")
        return person
