"""The GB 32100-2015 unified social credit code: its alphabet and check-character weights.

Defined once in :mod:`pps_wire.uscc` (dependency-free, as the data generators in ``models`` need: they make valid
codes without importing the service).
"""

from __future__ import annotations

from pps_wire.uscc import ALPHABET, ORG_WEIGHTS, WEIGHTS, new_uscc

__all__ = ["ALPHABET", "ORG_WEIGHTS", "WEIGHTS", "new_uscc"]
