"""The scoring suite's world (platform data uploaded, a bank, consents), for the client tests that need a service
with data: the command line's scoring, the bare client of the wire format, the SDK installed alone."""

from __future__ import annotations

from tests.pps.services.scoring.conftest import platform, synth_data, world

__all__ = ["platform", "synth_data", "world"]
