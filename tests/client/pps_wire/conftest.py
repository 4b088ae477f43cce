"""The scoring suite's platform data, for the bare client that follows the scoring wire format by hand."""

from __future__ import annotations

from tests.pps.services.scoring.conftest import platform, synth_data

__all__ = ["platform", "synth_data"]
