"""Small helpers for tests."""

from __future__ import annotations

import hashlib

from pps.identity.uscc import ALPHABET, make_uscc


def uscc_for(n: int) -> str:
    """A valid USCC derived from ``n`` (distinct for distinct ``n``)."""
    digest = hashlib.sha256(str(n).encode()).digest()
    org_code = "".join(ALPHABET[b % len(ALPHABET)] for b in digest[:9])
    return make_uscc("91" + "320500" + org_code)


# --- subjects' own keys (issue 24): every consent is signed by its subject ---------------------------------

from demo.keyring import REPRESENTATIVE_ID, remember_key, signed, signed_grant, subject_key  # noqa: E402

__all__ = ["REPRESENTATIVE_ID", "remember_key", "signed", "signed_grant", "subject_key", "uscc_for"]
