"""Resident identity numbers (公民身份号码, GB 11643-1999): how a natural person is named, and never stored.

An 18-character number: the administrative division of household registration (6 digits), the date of birth
(``YYYYMMDD``), a sequence code (3 digits, odd for men, even for women) and a check character:
``(12 - sum(d_i * w_i) mod 11) mod 11`` with weights ``w_i = 2**(17 - i) mod 11``, 10 written ``X``.

PPS keys a person by a keyed pseudonym of this number (``pps.identity.persons``); the number itself is only
validated here and masked for display (:func:`mask_resident_id`: the first 6 and the last 4 characters).
Error messages never repeat the number.
"""

from __future__ import annotations

import datetime as dt

from pps_wire.errors import InvalidResidentID

ID_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))
"""GB 11643 weights of the 17 digits: 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2."""

_CHECK = "10X98765432"


def id_check_character(first17: str) -> str:
    """The GB 11643-1999 check character (``0-9`` or ``X``) of the first 17 digits."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise InvalidResidentID("need 17 digits to compute a resident ID check character")
    return _CHECK[sum(int(c) * w for c, w in zip(first17, ID_WEIGHTS, strict=True)) % 11]


def validate_resident_id(value: str, *, today: dt.date | None = None) -> str:
    """The normalised (trimmed, ``x`` upper-cased) number, or :class:`InvalidResidentID` naming what is wrong
    (length, characters, date of birth or check character) without repeating the number."""
    if not isinstance(value, str):
        raise InvalidResidentID("a resident ID number must be a string")
    number = value.strip().upper()
    if len(number) != 18:
        raise InvalidResidentID(f"a resident ID number has 18 characters, got {len(number)}")
    if not (number[:17].isascii() and number[:17].isdigit()) or number[17] not in "0123456789X":
        raise InvalidResidentID("a resident ID number is 17 digits and a check character (0-9 or X)")
    if number[0] == "0" or number[:2] in ("00", "10", "20", "30", "40", "60", "70", "80", "90"):
        raise InvalidResidentID("the first two digits of a resident ID number must be a province code")
    try:
        born = dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        raise InvalidResidentID("positions 7-14 of a resident ID number must be a date of birth") from None
    if born < dt.date(1900, 1, 1) or born > (today or dt.date.today()):
        raise InvalidResidentID("the date of birth in a resident ID number is out of range")
    if number[17] != id_check_character(number[:17]):
        raise InvalidResidentID("the check character of the resident ID number is wrong: check for a typo")
    return number


def make_resident_id(first17: str) -> str:
    """Complete 17 digits with their check character (for generators and tests)."""
    return first17 + id_check_character(first17)


def mask_resident_id(number: str) -> str:
    """The display form: the first 6 and the last 4 characters, ``632801********123X``."""
    return number[:6] + "*" * 8 + number[-4:]
