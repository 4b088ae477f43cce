"""Module-level chunk functions for the spawned processes of the chaos tests (picklable by reference)."""

from __future__ import annotations

import time
from typing import Any


def echo(_state: Any, chunk: Any) -> Any:
    return chunk


def sleep_forever(_state: Any, _chunk: Any) -> Any:
    while True:
        time.sleep(1)
