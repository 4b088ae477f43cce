"""API fixtures: the app served on a real socket, and clients per organisation."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from api.live import running_server
from pps.runtime import Runtime


@pytest.fixture
def app(runtime: Runtime) -> FastAPI:
    return create_app(runtime=runtime)


@pytest.fixture
def base_url(app: FastAPI) -> Iterator[str]:
    with running_server(app) as url:
        yield url


@pytest.fixture
def http(base_url: str) -> Callable[..., httpx.Client]:
    """``http(token)`` → an httpx client for the live server, authenticated with ``token`` if given."""
    clients: list[httpx.Client] = []

    def make(token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=base_url, headers=headers, timeout=30)
        clients.append(client)
        return client

    yield make  # type: ignore[misc]
    for c in clients:
        c.close()
