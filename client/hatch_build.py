"""Build hook of the wheel: where the force-included ``protocols`` package comes from.

* In the repository it is ``../protocols`` (the static ``force-include``).
* An sdist carries it inside the project (``./protocols``); a wheel built from that sdist takes it from there.
* An editable install copies nothing: ``dev-mode-dirs`` puts the repository root on the path, so the
  protocols being edited are the ones imported (hatch would otherwise copy a snapshot into site-packages).
"""

from __future__ import annotations

import os
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        beside = os.path.normpath(os.path.join(self.root, os.pardir, "protocols"))
        inside = os.path.join(self.root, "protocols")
        if version == "editable":
            self.build_config.force_include.pop(beside, None)
            return
        if os.path.isdir(beside) or not os.path.isdir(inside):
            return
        self.build_config.force_include.pop(beside, None)
        build_data["force_include"][inside] = "protocols"
