"""`make demo` runs this scenario; it must pass every one of its own checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from demo.scenario import run_demo


@pytest.mark.e2e
@pytest.mark.timeout(1800)  # the whole scenario: 5-15 minutes on 2 cores, by load
def test_demo_scenario_passes(tmp_path: Path) -> None:
    console = Console(record=True, width=120)
    assert run_demo(tmp_path / "demo", console), console.export_text()
    text = console.export_text()
    assert "✗" not in text
    assert "edited ledger row is detected" in text
