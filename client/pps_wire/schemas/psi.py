"""PSI: a bank's blinded customer list, answered as a job (:mod:`pps_wire.frames` has the result's format)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pps_wire.schemas.common import Request


class PSIRequestIn(Request):
    purpose: str = Field(max_length=64)
    reveal: Literal["intersection", "size"] = Field(
        description="learn the matching customers, or only how many"
    )
    request: str = Field(max_length=50_000_000, description="the PSI REQUEST message, base64")
    operation: Literal["psi", "train"] = Field(
        "psi",
        description="the consent operation that forms the server set: psi, or train (row alignment for a "
        "vertical training)",
    )
