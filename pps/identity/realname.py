"""The real-name step: a subject's key is enrolled only after its legal representative is verified.

In production this is a call to an identity authority (the market regulator's legal-representative check for
an enterprise, a public-security ID check with a live face match for a person); here it is simulated behind
the interface such a check would have, :class:`RealNameVerifier`:

``verify(uscc, representative) -> Verification`` — raises :class:`~pps.errors.RealNameRefused` naming why,
or returns a reference to the check (kept with the key and in the ledger entry), its method and time.

:class:`SimulatedRealName` accepts a representative whose name is non-empty and whose resident ID number is
well formed (GB 11643-1999: 17 digits and the ISO 7064 MOD 11-2 check character) and refuses anything else.
It cannot know whether that person really represents the enterprise: that is the authority's part, and the
residual risk is stated in ``docs/security.md``. The ID number itself is never stored: only an HMAC of it.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pps.errors import RealNameRefused
from pps.infra.storage.tables import utcnow

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"


@dataclass(frozen=True)
class Representative:
    name: str
    id_number: str
    """resident ID number (GB 11643); used for the check, never stored in clear"""


@dataclass(frozen=True)
class Verification:
    reference: str
    method: str
    verified_at: datetime


class RealNameVerifier(Protocol):
    def verify(self, uscc: str, representative: Representative) -> Verification: ...


def valid_resident_id(number: str) -> bool:
    if len(number) != 18 or not number[:17].isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(number[:17], _WEIGHTS, strict=True))
    return number[17].upper() == _CHECK[total % 11]


class SimulatedRealName:
    """Stands in for the identity authority (see the module's docstring)."""

    method = "simulated-legal-representative-check"

    def __init__(self, key: bytes) -> None:
        self._key = key

    def verify(self, uscc: str, representative: Representative) -> Verification:
        name = representative.name.strip()
        if not name or len(name) > 50:
            raise RealNameRefused("the legal representative's name is missing or longer than 50 characters")
        if not valid_resident_id(representative.id_number):
            raise RealNameRefused(
                "the legal representative's resident ID number is not valid (GB 11643: 17 digits and a check "
                "character); check the number on the ID card"
            )
        digest = hmac.new(self._key, f"{uscc}|{representative.id_number}".encode(), hashlib.sha256)
        return Verification("rn_" + digest.hexdigest()[:24], self.method, utcnow())


def representative_hash(key: bytes, representative: Representative) -> bytes:
    return hmac.new(
        key, b"representative|" + representative.id_number.upper().encode(), hashlib.sha256
    ).digest()
