"""The scoring suite's world (platform data, a bank, consents), for the command-line tests of scoring."""

from __future__ import annotations

from tests.pps.services.scoring.conftest import platform, synth_data, world

__all__ = ["platform", "synth_data", "world"]
