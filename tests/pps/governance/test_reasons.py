"""Every reason the policy engine gives a bank has its meaning and advice in ``pps_wire.reasons`` (which the SDK
and ``pps-client`` print), and ``docs/reasons.md`` shows exactly that table."""

from __future__ import annotations

import re
from pathlib import Path

from pps.governance.policy import DenyReason
from pps_wire.reasons import REASONS, advice

DOC = Path(__file__).resolve().parents[3] / "docs" / "reasons.md"


def test_every_policy_reason_is_explained() -> None:
    missing = {r.value for r in DenyReason} - set(REASONS)
    assert not missing, f"reasons without meaning and advice in pps_wire.reasons: {sorted(missing)}"
    for code, reason in REASONS.items():
        assert reason.meaning and reason.what_to_do, code
        assert advice(code).startswith(f"{code}: ")
    assert "see the detail" in advice("a_reason_from_a_newer_server")


def test_the_docs_table_is_the_reasons_table() -> None:
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| (.+?) \| (.+?) \|$", DOC.read_text(encoding="utf-8"), re.M)
    assert {code: (meaning, todo) for code, meaning, todo in rows} == {
        code: (r.meaning, r.what_to_do) for code, r in REASONS.items()
    }
