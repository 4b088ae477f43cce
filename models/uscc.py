"""The GB 32100-2015 unified social credit code: its alphabet and check-character weights.

Kept here, free of any dependency, so that the data generators in ``models`` can make valid codes without
importing the service (``pps.identity.uscc`` builds validation on top of these constants).
"""

from __future__ import annotations

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
"""The 31 characters a code may use: digits and capitals without I, O, Z, S, V."""

WEIGHTS = tuple(pow(3, i, 31) for i in range(17))
"""Weight of position i (0-based) in the check sum: 3**i mod 31."""
