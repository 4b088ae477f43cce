from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pps_client._client import Client


class Resource:
    """A group of the API's routes, reached through its :class:`~pps_client.Client`."""

    def __init__(self, client: Client) -> None:
        self._client = client
