"""The service's key-encryption keys, checked against what the database needs: fail closed.

A data key is only as good as the KEK that wraps it. If a KEK file is deleted, truncated or replaced, the
service must not come up and serve errors (or, worse, make a new key under the same number, orphaning
whatever is wrapped under it when the real file comes back). So at start, and on every ``/readyz``:

* every version that wraps a stored data key, and every version that ever got a canary, must have its file,
  and the file must open that version's canary (a fixed plaintext wrapped when the version was made);
* a first key is made only on a new deployment: no canaries and no wrapped keys in the database;
* a new version's number is above every number the files *and* the database have seen.

Versions made before canaries existed get one at the first start that finds them (trust on first use); after
that they are checked like the rest. Key holders are the services whose tables hold wrapped data keys
(datasets, objections, the model registry): rotation re-wraps all of them and retirement counts all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from pps.errors import ConfigurationError, Conflict, InvalidInput, KeyUnavailable
from pps.infra.kms import LocalFileKMS
from pps.infra.storage.db import Database
from pps.infra.storage.tables import KekCanary, utcnow
from pps.ledger.entry import Actor, EntryDraft
from pps.ledger.store import Ledger


class KeyHolder(Protocol):
    """A service whose tables hold data keys wrapped by a KEK."""

    def keys_by_kek_version(self, session: Session) -> dict[int, int]:
        """How many data keys each KEK version wraps."""
        ...

    def rewrap_all(self, session: Session) -> dict[int, int]:
        """Re-wrap every data key under the current version; how many moved from each older one."""
        ...


@dataclass(frozen=True)
class KeyStatus:
    version: int
    wrapped: int
    """data keys wrapped under this version, over every holder"""
    state: str
    """``current``, ``usable``, ``retired``, or what is wrong (``missing``, ``does not match``, ...)"""
    ok: bool


def wrapped_counts(session: Session, holders: Sequence[KeyHolder]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for holder in holders:
        for version, n in holder.keys_by_kek_version(session).items():
            counts[version] = counts.get(version, 0) + n
    return counts


def _canaries(session: Session) -> dict[int, bytes]:
    return {c.version: c.blob for c in session.execute(select(KekCanary)).scalars()}


def status(session: Session, kms: LocalFileKMS, holders: Sequence[KeyHolder]) -> list[KeyStatus]:
    """Every version the files or the database know of, checked (files read again from disk)."""
    counts = wrapped_counts(session, holders)
    canaries = _canaries(session)
    files = kms.versions()
    minimum = kms.min_decrypt_version
    out: list[KeyStatus] = []
    for version in sorted({*counts, *canaries, *files}):
        n = counts.get(version, 0)
        if version < minimum:
            bad = n > 0
            out.append(
                KeyStatus(version, n, "retired, yet still wraps data keys" if bad else "retired", not bad)
            )
            continue
        problem = None
        if version not in files:
            problem = "missing: restore the file from the key backup"
        elif version in canaries:
            try:
                kms.check_canary(version, canaries[version])
            except KeyUnavailable as exc:
                problem = (
                    "does not match its canary: replaced or corrupted; restore the original file"
                    if "not the key" in exc.message
                    else f"damaged ({exc.message}); restore the original file"
                )
        elif n:
            problem = "has no canary yet (checked at the next start)"
        state = problem or ("current" if files and version == files[-1] else "usable")
        out.append(KeyStatus(version, n, state, problem is None))
    return out


def problems(session: Session, kms: LocalFileKMS, holders: Sequence[KeyHolder]) -> list[str]:
    return [f"KEK version {s.version}: {s.state}" for s in status(session, kms, holders) if not s.ok]


def open_keys(db: Database, kms: LocalFileKMS, holders: Sequence[KeyHolder]) -> None:
    """At start: make the first key on a new deployment, give a canary to versions without one, and refuse
    to go on (:class:`ConfigurationError`, naming every version at fault) when the data needs a key that is
    missing or is not the key it was."""
    with db.transaction() as session:
        counts = wrapped_counts(session, holders)
        canaries = _canaries(session)
        if not kms.versions():
            if counts or canaries:
                raise ConfigurationError(
                    f"no key-encryption key in {kms.dir}, but the database holds data wrapped under KEK "
                    f"version(s) {sorted({*counts, *canaries})}: restore the key directory from its backup "
                    "(PPS_KEY_DIR); the service will not make new keys over data it cannot open"
                )
            kms.create_first()
        for version in kms.versions():
            if version not in canaries and version >= kms.min_decrypt_version:
                session.add(KekCanary(version=version, blob=kms.canary(version), created_at=utcnow()))
        session.flush()
        found = problems(session, kms, holders)
    if found:
        raise ConfigurationError("the key-encryption keys do not fit the stored data: " + "; ".join(found))


@dataclass(frozen=True)
class Rotation:
    version: int
    rewrapped: int
    from_versions: tuple[int, ...]


def rotate(
    session: Session, kms: LocalFileKMS, holders: Sequence[KeyHolder], ledger: Ledger, *, actor: Actor
) -> Rotation:
    """Make a KEK version above every number the files and the database have seen, give it a canary, and
    re-wrap every holder's data keys under it (no data is decrypted); one ``keys.rewrap`` ledger entry.
    Runs in the caller's transaction: if anything fails, the new version wraps nothing and is never reused."""
    seen = max([*_canaries(session), *wrapped_counts(session, holders)], default=0)
    version = kms.rotate(after=seen)
    session.add(KekCanary(version=version, blob=kms.canary(version), created_at=utcnow()))
    moved: dict[int, int] = {}
    for holder in holders:
        for old, n in holder.rewrap_all(session).items():
            moved[old] = moved.get(old, 0) + n
    session.flush()
    ledger.append(
        session,
        EntryDraft(
            action="keys.rewrap",
            actor=actor,
            detail={
                "data_keys": sum(moved.values()),
                "from_kek_versions": sorted(moved),
                "to_kek_version": version,
            },
        ),
    )
    return Rotation(version, sum(moved.values()), tuple(sorted(moved)))


def retire_below(
    session: Session,
    kms: LocalFileKMS,
    holders: Sequence[KeyHolder],
    ledger: Ledger,
    version: int,
    *,
    actor: Actor,
) -> None:
    """Refuse to decrypt with versions below ``version``: refused while any holder still has a data key
    wrapped under one of them (``pps keys rotate`` first). Call inside a write transaction that has locked
    the data keys (``DatasetService.lock_data_keys``)."""
    still = {v: n for v, n in wrapped_counts(session, holders).items() if v < version}
    if still:
        raise Conflict(
            f"data keys are still wrapped under KEK version(s) {sorted(still)}; run `pps keys rotate` first"
        )
    ledger.append(
        session, EntryDraft(action="keys.retire", actor=actor, detail={"min_decrypt_version": version})
    )
    try:  # last, inside the transaction: if it fails, the entry is rolled back with it
        kms.retire_below(version)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
