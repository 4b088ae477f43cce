"""``masked`` lets out a range, never the value: the range holds the value and is at most a factor 2.5 wide."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from pps.data.datasets.schema import ColumnSpec
from pps.governance.masking import amount_range, mask, summary


@given(st.floats(min_value=1, max_value=1e12, allow_nan=False))
def test_a_range_holds_the_value_and_hides_it(value: float) -> None:
    r = amount_range(value)
    assert r["from"] <= value < r["to"]
    assert r["to"] <= 2.5 * r["from"] + 1e-9
    assert amount_range(-value) == {"from": -r["to"], "to": -r["from"]}


def test_masks_by_type() -> None:
    def col(t: str) -> ColumnSpec:
        return ColumnSpec.model_validate({"name": "c", "type": t, "sensitivity": "C1"})

    assert mask(col("date"), dt.date(2026, 3, 14)) == "2026-03"
    assert mask(col("string"), "contract dispute") == "c*****"
    assert mask(col("uscc"), "91630100MA752XJF3Q") == "9163**********JF3Q"
    assert mask(col("int"), 37) == {"from": 20, "to": 50}
    assert mask(col("float"), None) is None
    s = summary(col("float"), [100.0, None, 300.0])
    assert s == {
        "rows": 3,
        "with_value": 2,
        "mean": {"from": 200, "to": 500},
        "total": {"from": 200, "to": 500},
    }
