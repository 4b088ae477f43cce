"""What ``masked`` and ``aggregate_only`` let out of a value (issue 23; ``docs/disclosure.md``).

``masked``: amounts and counts become a range on a 1-2-5 scale (12 345 -> [10 000, 20 000)), dates their month,
text its first character, a USCC its first and last four characters. ``aggregate_only``: only summaries over the
subject's rows in the window (how many months have a value, and the mean and the total as ranges).

Who learns what: a bank learns the range, never the value; a range of width a factor 2-2.5 says the order of
magnitude, which is what underwriting on it needs. The masks are deterministic, so two queries of the same value
give the same range and cannot be averaged into the value.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

from pps.data.datasets.schema import ColumnSpec, ColumnType

_STEPS = (1, 2, 5)


def amount_range(value: float) -> dict[str, float]:
    """The 1-2-5 range holding ``value``: ``{"from": lo, "to": hi}`` with lo <= value < hi (mirrored below 0)."""
    if value == 0:
        return {"from": 0, "to": 0}
    if value < 0:
        r = amount_range(-value)
        return {"from": -r["to"], "to": -r["from"]}
    if value < 1:
        return {"from": 0, "to": 1}
    exp = math.floor(math.log10(value))
    lo: float = 0
    for e in (exp - 1, exp, exp + 1):
        for step in _STEPS:
            bound = step * 10**e
            if bound <= value:
                lo = bound
            else:
                return {"from": lo, "to": bound}
    return {"from": lo, "to": 10 ** (exp + 2)}  # pragma: no cover - the loop always returns


def mask(col: ColumnSpec, value: Any) -> Any:
    """The masked form of one value of ``col``."""
    if value is None:
        return None
    if col.type in (ColumnType.float, ColumnType.int):
        return amount_range(float(value))
    if col.type is ColumnType.date:
        text = value.isoformat() if isinstance(value, dt.date) else str(value)
        return text[:7]
    if col.type is ColumnType.month or col.type is ColumnType.bool:
        return value
    text = str(value)
    if col.type is ColumnType.uscc:
        return text[:4] + "*" * 10 + text[-4:]
    return text[:1] + "*" * min(len(text) - 1, 5)


def summary(col: ColumnSpec, values: Sequence[Any]) -> dict[str, Any]:
    """What ``aggregate_only`` lets out about one subject's values of ``col``."""
    present = [float(v) for v in values if v is not None]
    out: dict[str, Any] = {"rows": len(values), "with_value": len(present)}
    if present and col.type in (ColumnType.float, ColumnType.int):
        out["mean"] = amount_range(sum(present) / len(present))
        out["total"] = amount_range(sum(present))
    return out


def plain(col: ColumnSpec, value: Any) -> Any:
    """A public value as JSON (dates as ISO text; numbers as they are)."""
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if col.type is ColumnType.date else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
