"""Small helpers for tests."""

from __future__ import annotations

import hashlib

from pps.identity.uscc import ALPHABET, make_uscc


def uscc_for(n: int) -> str:
    """A valid USCC derived from ``n`` (distinct for distinct ``n``)."""
    digest = hashlib.sha256(str(n).encode()).digest()
    org_code = "".join(ALPHABET[b % len(ALPHABET)] for b in digest[:9])
    return make_uscc("91" + "320500" + org_code)
