"""Jobs: a long computation's state, progress and outcome (its result is fetched separately, by its owner)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pps_wire.schemas.common import Response

TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class JobProgress(Response):
    done: int
    total: int


class JobError(Response):
    """Why a job failed: an error code of :mod:`pps_wire.errors` and a message."""

    code: str
    message: str


class JobPublic(Response):
    id: str
    kind: str
    owner_org_id: str
    purpose: str | None
    state: str
    progress: JobProgress
    params: dict[str, Any]
    """what the job was asked (kind-specific; never the submitted ciphertexts)"""
    summary: dict[str, Any] | None
    """what the job reports when done (kind-specific counts)"""
    error: JobError | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime
    result_available: bool

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES
