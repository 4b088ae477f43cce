"""Unified social credit codes (统一社会信用代码, GB 32100-2015): the identifier of every subject on the wire.

An 18-character code: registration authority (1), organisation type (1), administrative division (6 digits),
organisation code (9) and a check character. Characters come from ``0-9`` and the capital letters without
``I O Z S V``; the check character is ``31 - (sum(value(c_i) * 3**i mod 31) mod 31)``, with 31 mapped to 0.
The organisation code (positions 9-17) is itself a GB 11714-1997 code whose last character checks the eight
before it: ``11 - (sum(value(c_i) * w_i) mod 11)`` with weights ``3 7 9 10 5 8 4 2``, digits worth
themselves and letters ``A``=10 .. ``Z``=35, 10 written ``X`` and 11 written ``0``. Both checks are
validated, so a code made up by completing only the last character is refused.

The server validates every USCC a request names with :func:`validate_uscc`; the bank's PSI half normalises its
customers' codes with the same function before blinding them.
"""

from __future__ import annotations

from pps_wire.errors import InvalidUSCC

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
"""The 31 characters a code may use: digits and capitals without I, O, Z, S, V."""

WEIGHTS = tuple(pow(3, i, 31) for i in range(17))
"""Weight of position i (0-based) in the check sum: 3**i mod 31."""

_VALUE = {c: i for i, c in enumerate(ALPHABET)}

ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
"""GB 11714-1997 weights of the eight body characters of an organisation code."""


def org_code_check(body8: str) -> str:
    """The GB 11714-1997 check character (``0-9`` or ``X``) of an organisation code's eight body characters."""
    if len(body8) != 8:
        raise InvalidUSCC(f"need 8 characters to compute an organisation-code check, got {len(body8)}")
    total = 0
    for c, w in zip(body8, ORG_WEIGHTS, strict=True):
        if c.isdigit():
            v = int(c)
        elif "A" <= c <= "Z":
            v = ord(c) - 55
        else:
            raise InvalidUSCC(f"character {c!r} is not allowed in an organisation code")
        total += v * w
    check = 11 - total % 11
    return "X" if check == 10 else "0" if check == 11 else str(check)


def check_character(first17: str) -> str:
    """The GB 32100-2015 check character of the first 17 characters."""
    if len(first17) != 17:
        raise InvalidUSCC(f"need 17 characters to compute a check character, got {len(first17)}")
    total = 0
    for i, c in enumerate(first17):
        try:
            total += _VALUE[c] * WEIGHTS[i]
        except KeyError:
            raise InvalidUSCC(f"character {c!r} at position {i + 1} is not allowed in a USCC") from None
    return ALPHABET[(31 - total % 31) % 31]


def validate_uscc(value: str) -> str:
    """Return the normalised (upper-case, trimmed) USCC or raise :class:`InvalidUSCC` saying what is wrong."""
    if not isinstance(value, str):
        raise InvalidUSCC("a USCC must be a string")
    code = value.strip().upper()
    if len(code) != 18:
        raise InvalidUSCC(f"a USCC has 18 characters, got {len(code)}")
    for i, c in enumerate(code):
        if c not in _VALUE:
            raise InvalidUSCC(f"character {c!r} at position {i + 1} is not allowed in a USCC")
    if not code[2:8].isdigit():
        raise InvalidUSCC("positions 3-8 of a USCC (administrative division code) must be digits")
    expected = check_character(code[:17])
    if code[17] != expected:
        raise InvalidUSCC(f"check character of {code[:17]}… should be {expected!r}, got {code[17]!r}")
    org = org_code_check(code[8:16])
    if code[16] != org:
        raise InvalidUSCC(
            f"the organisation code {code[8:16]}-{code[16]} (positions 9-17) fails its GB 11714 check: "
            f"position 17 should be {org!r}, got {code[16]!r}"
        )
    return code


def make_uscc(first17: str) -> str:
    """Complete 17 characters with their check character. Position 17 must already be the organisation
    code's GB 11714 check (see :func:`new_uscc`), or the result will not validate."""
    return first17 + check_character(first17)


def new_uscc(head8: str, body8: str) -> str:
    """A valid code from its first eight characters (authority, type, division) and the eight body characters
    of its organisation code: both check characters are computed (for generators and tests)."""
    if len(head8) != 8:
        raise InvalidUSCC(f"need authority, type and division (8 characters), got {len(head8)}")
    return make_uscc(head8 + body8 + org_code_check(body8))


def mask_uscc(code: str) -> str:
    """A display form that hides the organisation code: ``9131****…**7X`` style, keeping 4 + 2 characters."""
    return code[:4] + "*" * 12 + code[-2:]
