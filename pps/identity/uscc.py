"""Unified social credit codes (GB 32100-2015), as the server imports them.

Defined once in :mod:`pps_wire.uscc` (the bank's SDK validates its customers' codes the same way); this module
is the server's import path.
"""

from __future__ import annotations

from pps_wire.uscc import (
    ALPHABET,
    ORG_WEIGHTS,
    WEIGHTS,
    check_character,
    make_uscc,
    mask_uscc,
    new_uscc,
    org_code_check,
    validate_uscc,
)

__all__ = [
    "ALPHABET",
    "ORG_WEIGHTS",
    "WEIGHTS",
    "check_character",
    "make_uscc",
    "mask_uscc",
    "new_uscc",
    "org_code_check",
    "validate_uscc",
]
