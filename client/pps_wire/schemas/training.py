"""Vertical training sessions: the bank (guest) trains with the safe-room (host); the coordinator is in the enclave.

The exchange body is binary (:func:`pps_wire.frames.pack_frames`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

from pps_wire.schemas.common import Request, Response


class VerticalStartIn(Request):
    name: str = Field(max_length=128)
    purpose: str = Field(max_length=64)
    subjects: list[Annotated[str, Field(max_length=18)]] = Field(
        max_length=200_000, description="the aligned subjects (the PSI intersection), in the bank's row order"
    )
    features: list[Annotated[str, Field(max_length=64)]] = Field(max_length=200)
    quote_hash: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="hash of the enclave quote the bank verified"
    )
    ciphertext: str = Field(
        max_length=65_536, description="the coordinator's set-up, encrypted to the enclave"
    )


class TrainingPublic(Response):
    id: str
    name: str
    purpose: str
    state: str
    rows: int
    features: list[str]
    epochs_done: int
    model_id: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime


class VerticalStarted(TrainingPublic):
    subjects: list[str] = Field(
        description="the rows the safe-room uses, in order: align your labels to these"
    )
    excluded: dict[str, int] = Field(description="subjects left out, by reason")
    public_key: str = Field(description="the coordinator's PUBLIC_KEY message, base64")
