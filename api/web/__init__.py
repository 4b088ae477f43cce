"""The role pages served beside the API (same origin): enterprise portal, bank and auditor consoles, operator.

Server-rendered (Jinja2) with a little vanilla JavaScript and no build step. Mounted by :func:`install`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from .core import PREFIX
from .pages import router
from .passkeys import router as passkey_router
from .person_pages import router as person_router


def install(app: FastAPI) -> None:
    """Serve the pages under ``/ui`` (``/`` sends a browser there); the API's routes are untouched."""
    app.include_router(router)
    app.include_router(person_router)
    app.include_router(passkey_router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=Path(__file__).parent / "static"), name="ui-static")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)


__all__ = ["PREFIX", "install", "router"]
