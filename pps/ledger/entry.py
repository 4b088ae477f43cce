"""What a ledger entry says, and its canonical bytes.

An entry is a JSON object, serialised with the JSON Canonicalization Scheme (RFC 8785); its leaf hash is
``SHA-256(0x00 || canonical bytes)``. Fields (all present in every entry; ``docs/audit.md`` is the reference):

``v``            format version, 1
``index``        position in the log (0-based)
``time``         RFC 3339 UTC time with microseconds, e.g. ``2026-11-25T21:00:00.123456Z``
``actor``        ``{"org": <org id or null>, "role": <role or "operator">, "via": "api" | "web" | "cli" | "job",
                 "token": <id of the API token used, or null>}``
``action``       dotted verb, e.g. ``org.create``, ``token.issue``, ``token.revoke``
``objects``      ``[{"kind": ..., "id": ...}]`` the objects acted on
``subjects``     sorted USCCs of the enterprises whose data or identity was touched
``purpose``      the declared purpose, or null
``consent_ids``  sorted ids of the consents the access relied on
``released``     ``[{"to": <org id>, "what": ...}]`` what left the safe-room, to whom
``request_id``   the request that caused it, or null
``detail``       a small object of action-specific facts (never secrets, never raw records)

Numbers in entries are integers within ±2**53 and strings are UTF-8; there are no floats, so the canonical
form is also what ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` yields for ASCII
keys, which lets the verifier check canonical form fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import rfc8785

from pps.errors import InvalidInput

ENTRY_VERSION = 1
MAX_ENTRY_BYTES = 1024 * 1024
_SAFE_INT = 2**53


@dataclass(frozen=True)
class Actor:
    org_id: str | None
    role: str
    via: str = "api"
    token_id: str | None = None
    """the API token that authenticated the request, so an action is traceable to one credential"""

    def as_json(self) -> dict[str, Any]:
        return {"org": self.org_id, "role": self.role, "via": self.via, "token": self.token_id}


OPERATOR = Actor(org_id=None, role="operator", via="cli")
"""Someone with shell access to the safe-room host, acting through ``pps`` commands."""


@dataclass(frozen=True)
class ObjectRef:
    kind: str
    id: str

    def __post_init__(self) -> None:
        if not 0 < len(self.kind) <= 32 or not 0 < len(self.id) <= 64:
            raise InvalidInput("an object reference needs a kind of 1-32 and an id of 1-64 characters")


@dataclass(frozen=True)
class Release:
    to: str
    what: str


@dataclass(frozen=True)
class EntryDraft:
    """An entry before it has an index and a time."""

    action: str
    actor: Actor
    objects: tuple[ObjectRef, ...] = ()
    subjects: tuple[str, ...] = ()
    purpose: str | None = None
    consent_ids: tuple[str, ...] = ()
    released: tuple[Release, ...] = ()
    request_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def format_time(t: datetime) -> str:
    if t.tzinfo is None:
        raise InvalidInput("ledger times must be timezone-aware")
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _check_json_value(value: Any, where: str) -> None:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if not -_SAFE_INT < value < _SAFE_INT:
            raise InvalidInput(f"{where}: integer outside ±2**53 cannot go into a ledger entry")
        return
    if isinstance(value, float):
        raise InvalidInput(f"{where}: floats are not allowed in ledger entries (use integers or strings)")
    if isinstance(value, list | tuple):
        if all(type(item) is str for item in value):  # the common case: 2,000 USCCs of a batch entry
            return
        for i, item in enumerate(value):
            _check_json_value(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str) or not k.isascii():
                raise InvalidInput(f"{where}: keys must be ASCII strings")
            _check_json_value(v, f"{where}.{k}")
        return
    raise InvalidInput(f"{where}: {type(value).__name__} cannot go into a ledger entry")


def entry_document(index: int, time: datetime, draft: EntryDraft) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "v": ENTRY_VERSION,
        "index": index,
        "time": format_time(time),
        "actor": draft.actor.as_json(),
        "action": draft.action,
        "objects": [{"kind": o.kind, "id": o.id} for o in draft.objects],
        "subjects": sorted(set(draft.subjects)),
        "purpose": draft.purpose,
        "consent_ids": sorted(set(draft.consent_ids)),
        "released": [{"to": r.to, "what": r.what} for r in draft.released],
        "request_id": draft.request_id,
        "detail": dict(draft.detail),
    }
    _check_json_value(doc, "entry")
    return doc


def canonical_bytes(doc: dict[str, Any]) -> bytes:
    """RFC 8785 canonical JSON of an entry document (checked by :func:`entry_document`).

    Entry documents hold only ASCII keys, strings, integers within ±2**53, booleans, null, lists and
    objects; for those, Python's sorted, compact, non-ASCII-escaping ``json.dumps`` writes exactly the RFC
    8785 form (keys sort the same by UTF-16 code units and by code points when they are ASCII; strings are
    escaped the same way), at C speed. A property test holds it to the ``rfc8785`` reference.
    """
    data = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    if len(data) > MAX_ENTRY_BYTES:
        raise InvalidInput(f"ledger entry of {len(data)} bytes exceeds {MAX_ENTRY_BYTES}")
    return data


def is_canonical(data: bytes) -> dict[str, Any] | None:
    """Parse stored entry bytes; return the document if they are exactly its canonical form, else None."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    fast = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    if fast == data:
        return doc
    try:  # the fast form differs from RFC 8785 only for exotic input; ask the reference before refusing
        return doc if rfc8785.dumps(doc) == data else None
    except (rfc8785.CanonicalizationError, ValueError, TypeError):
        return None
