"""Chunk functions for the executor contract suite: module-level, so every backend can ship them."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

from pps.errors import InvalidInput


def build_tagged(payload: Any) -> dict[str, Any]:
    """A worker's state: who built it (process id) and a fresh id per build."""
    return {"pid": os.getpid(), "build": uuid.uuid4().hex, "offset": payload}


def identity(payload: Any) -> Any:
    return payload


def tag(state: dict[str, Any], x: int) -> tuple[int, int, str]:
    return x + state["offset"], state["pid"], state["build"]


def square(_state: Any, x: int) -> int:
    return x * x


def jittered_square(_state: Any, x: int) -> int:
    """Later chunks finish first now and then: results must still come back in chunk order."""
    time.sleep(0.02 * ((7 - x) % 4))
    return x * x


def fail_on_three(_state: Any, x: int) -> int:
    if x == 3:
        raise ValueError("chunk three is malformed")
    return x


def refuse_on_two(_state: Any, x: int) -> int:
    if x == 2:
        raise InvalidInput("chunk two names an unknown feature")
    return x


def build_broken(_payload: Any) -> None:
    raise KeyError("the shared state cannot be built")


def kill_once(state: str, x: int) -> int:
    """Chunk 2 kills its worker on the first attempt (SIGKILL: no clean-up, like the OOM killer)."""
    directory = Path(state)
    (directory / f"attempt-{x}-{uuid.uuid4().hex}").touch()
    marker = directory / "killed"
    if x == 2 and not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return x * 10


def kill_always(state: str, x: int) -> int:
    directory = Path(state)
    if x == 1:
        (directory / f"attempt-{uuid.uuid4().hex}").touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def hold(state: str, x: int) -> int:
    """Chunk 0 returns at once; the others record their worker's pid and then hold it for a long time."""
    if x == 0:
        return x
    (Path(state) / f"pid-{os.getpid()}").touch()
    time.sleep(60)
    return x


def held_keys(_state: Any, x: int) -> tuple[int, list[str]]:
    """The keys of the job state the worker running this chunk holds (its own job's, and nothing else)."""
    from pps.infra import executor

    return x, sorted(executor._WORKER_STATES)


def fail_on_three_slowly(_state: Any, x: int) -> int:
    """Chunk 3 fails; the others take a moment, so the other worker is busy when it does."""
    if x == 3:
        raise ValueError("chunk three is malformed")
    time.sleep(0.2)
    return x
