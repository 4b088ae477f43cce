"""Small helpers for tests."""

from __future__ import annotations

import hashlib

from pps.identity.uscc import ALPHABET, new_uscc


def uscc_for(n: int) -> str:
    """A valid USCC derived from ``n`` (distinct for distinct ``n``)."""
    digest = hashlib.sha256(str(n).encode()).digest()
    org_body = "".join(ALPHABET[b % len(ALPHABET)] for b in digest[:8])
    return new_uscc("91" + "630100", org_body)
