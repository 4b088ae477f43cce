"""Named kill points for the chaos tests: ``PPS_UNSAFE_KILL_AT=commit:<ledger action>,...`` makes the process
kill itself with SIGKILL right before committing a transaction that appended a ledger entry with that action
(``commit:dataset.upload``, ``commit:job.succeeded``, ``commit:keys.rewrap``, ``commit:consent.grant``, …) —
the last moment at which the work is done and nothing of it is durable.

Unsafe by name and loud: set, it is logged at CRITICAL when the process starts, and it exists only so that
``tests/chaos`` can crash the real service at a precise point and check what survives. Unset (always, in
production), nothing is registered and the cost is one attribute check per ledger append.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterable
from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.orm import Session

log = logging.getLogger("pps.infra.faults")

ENV: Final = "PPS_UNSAFE_KILL_AT"
POINTS: Final = frozenset(p.strip() for p in os.environ.get(ENV, "").split(",") if p.strip())
ENABLED: Final = bool(POINTS)
_ACTIONS = "pps_faults_actions"


def kill_point(name: str) -> None:
    """Die here, at once and without clean-up (SIGKILL), if ``name`` is one of the configured points."""
    if name in POINTS:
        log.critical("%s: killing this process at %r", ENV, name)
        os.kill(os.getpid(), signal.SIGKILL)


def note_actions(session: Session, actions: Iterable[str]) -> None:
    """Remember the ledger actions a transaction appended (what ``commit:<action>`` points match)."""
    if ENABLED:
        session.info.setdefault(_ACTIONS, []).extend(actions)


def _before_commit(session: Session) -> None:
    for action in session.info.pop(_ACTIONS, ()):
        kill_point(f"commit:{action}")


def _forget(session: Session, *_: Any) -> None:
    session.info.pop(_ACTIONS, None)


if ENABLED:
    log.critical("%s=%s: this process kills itself at those points (chaos tests only)", ENV, ",".join(POINTS))
    event.listen(Session, "before_commit", _before_commit)
    event.listen(Session, "after_rollback", _forget)
