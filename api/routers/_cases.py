"""What the objection and credit-repair routes share (:mod:`pps.governance.casework`): who may see a case, who
must answer it, an attached file decoded or served, and a page of cases."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any, TypeVar

from fastapi import Response

from api.deps import Caller
from api.schemas import Page
from pps.errors import EvidenceRejected, NotFound
from pps.infra.storage.tables import Role

T = TypeVar("T")

EXTENSIONS = {"application/pdf": "pdf", "image/png": "png", "image/jpeg": "jpg"}


def base64_file(content: str, what: str) -> bytes:
    """An uploaded file's bytes, or :class:`EvidenceRejected` naming ``what`` was not base64."""
    try:
        return base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        raise EvidenceRejected(f"{what} is not base64") from None


def check_visible(
    caller: Caller, *, subject_uscc: str, owner_org_id: str, oversight: bool, missing: str
) -> None:
    """The case's subject or its owner (the provider or authority that answers it) may see it; with
    ``oversight``, admins and auditors too. Anyone else: 404 ``missing``, as if it did not exist."""
    mine = (caller.role is Role.subject and subject_uscc == caller.uscc) or (
        caller.role is Role.data_provider and owner_org_id == caller.org_id
    )
    if not (mine or (oversight and caller.sees_everything)):
        raise NotFound(missing)


def check_owner(caller: Caller, owner_org_id: str, missing: str) -> None:
    """Only the owner answers a case; anyone else: 404 ``missing``."""
    if owner_org_id != caller.org_id:
        raise NotFound(missing)


def attachment(data: bytes, media_type: str, stem: str) -> Response:
    """A case's file, served so that no browser renders it in the service's origin."""
    return Response(
        content=data,
        media_type=media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{stem}.{EXTENSIONS.get(media_type, "bin")}"',
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'",
            "Cache-Control": "no-store",
        },
    )


def page(found: Sequence[Any], items: list[T], limit: int) -> Page[T]:
    """A keyset page: ``next_after`` is the last id when the page is full."""
    return Page(items=items, next_after=found[-1].id if len(found) == limit else None)
