"""The PSI setups of the safe-room, cached per (bank, purpose): the server key and SETUP for one exact set.

Encrypting the server set dominates PSI (~60-90 µs per element: a minute for 10^6 on one core), so a
:class:`protocols.psi.PreparedSetup` is kept per (bank, purpose), valid only for the exact server set (its
digest) and parameters it was made for: a changed consent set gives another digest and the entry is dropped
(``SET_CHANGED``). Setups are prepared with the USCC check of :func:`pps.identity.uscc.validate_uscc`, on the
runtime's executor if one is given (its nodes are inside the safe-room's trust boundary; every worker drops the
key when the setup is made).

Reusing the server key ``s`` across queries has a price, which is why its lifetime is bounded (``max_age`` <=
:data:`MAX_SETUP_AGE`, ``max_uses``):

* the client's decrypted response items ``H(y)^s`` are deterministic for the key's lifetime, so a bank can link
  its items across its repeated queries: in size-only mode, one small query pins down which of the (unordered)
  matched items of every earlier large query it was — differencing becomes cheap. Rate limits and the ledger
  are the service's defence; the guarantee of size-only mode holds per query;
* SETUP is identical across cache hits, so the bank sees that ``S`` did not change in between (it would see
  that from ``server_set_size`` and its own results anyway);
* one key serves one (bank, purpose, exact set): setups never share a key across banks or purposes.

Call :meth:`SetupCache.invalidate` when consent of (bank, purpose) changes: the digest check catches a changed
set anyway, but invalidation frees the key at once. Keys stay in memory only; never logged, persisted or
returned.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from pps.errors import ConfigurationError, InvalidInput
from pps.identity.uscc import validate_uscc
from protocols.parallel import ChunkMapper
from protocols.psi import PreparedSetup, PSIParams, ServerSet, prepare_setup

MAX_SETUP_AGE: Final = timedelta(hours=24)
"""No cached server key lives longer than this, whatever the cache is configured to."""
DEFAULT_SETUP_MAX_AGE: Final = timedelta(minutes=30)
DEFAULT_SETUP_MAX_USES: Final = 100


class CacheOutcome(enum.Enum):
    HIT = "hit"
    MISS = "miss"
    """Nothing cached for (bank, purpose)."""
    SET_CHANGED = "set_changed"
    """The server set is not the one the cached setup was made for (consent changed): entry dropped."""
    PARAMS_CHANGED = "params_changed"
    EXPIRED = "expired"
    """The cached server key is older than ``max_age``: entry dropped."""
    USED_UP = "used_up"
    """The cached server key served ``max_uses`` sessions: entry dropped."""


@dataclass(frozen=True)
class CacheLookup:
    outcome: CacheOutcome
    setup: PreparedSetup | None


@dataclass
class _Entry:
    setup: PreparedSetup
    uses: int = 0


class SetupCache:
    """Prepared setups per (bank id, purpose), each valid only for the exact server set it was made for.

    One entry per (bank, purpose): the latest set. A lookup returns the setup only if the set digest and
    the parameters match, the key is younger than ``max_age`` and has served fewer than ``max_uses``
    sessions; otherwise it says why and drops the entry. :meth:`invalidate` drops entries explicitly (call
    it when consent for (bank, purpose) changes). In-process and thread-safe; keys never leave memory.
    """

    def __init__(
        self,
        *,
        max_age: timedelta = DEFAULT_SETUP_MAX_AGE,
        max_uses: int = DEFAULT_SETUP_MAX_USES,
        max_entries: int = 32,
        executor: ChunkMapper | None = None,
    ) -> None:
        if not timedelta(0) < max_age <= MAX_SETUP_AGE:
            raise ConfigurationError(f"max_age must be in (0, {MAX_SETUP_AGE}], got {max_age}")
        for name, value in (("max_uses", max_uses), ("max_entries", max_entries)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be a positive int, got {value!r}")
        self.max_age = max_age
        self.max_uses = max_uses
        self.max_entries = max_entries
        self.executor = executor
        """Where setups are prepared (:mod:`pps.infra.executor`); None: this process and its own spawned pool."""
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()
        self._preparing: dict[tuple[str, str], threading.Lock] = {}

    @staticmethod
    def _key(bank_id: str, purpose: str) -> tuple[str, str]:
        for name, value in (("bank_id", bank_id), ("purpose", purpose)):
            if not isinstance(value, str) or not value:
                raise InvalidInput(f"{name} must be a non-empty string, got {value!r}")
        return (bank_id, purpose)

    def lookup_at_time(
        self, bank_id: str, purpose: str, server_set: ServerSet, params: PSIParams, now: datetime
    ) -> CacheLookup:
        key = self._key(bank_id, purpose)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return CacheLookup(CacheOutcome.MISS, None)
            outcome = CacheOutcome.HIT
            if entry.setup.set_digest != server_set.digest:
                outcome = CacheOutcome.SET_CHANGED
            elif entry.setup.params != params:
                outcome = CacheOutcome.PARAMS_CHANGED
            elif now - entry.setup.created_at >= self.max_age or now < entry.setup.created_at:
                outcome = CacheOutcome.EXPIRED
            elif entry.uses >= self.max_uses:
                outcome = CacheOutcome.USED_UP
            if outcome is not CacheOutcome.HIT:
                del self._entries[key]
                return CacheLookup(outcome, None)
            entry.uses += 1
            self._entries[key] = self._entries.pop(key)  # most recently used last
            return CacheLookup(CacheOutcome.HIT, entry.setup)

    def lookup(self, bank_id: str, purpose: str, server_set: ServerSet, params: PSIParams) -> CacheLookup:
        return self.lookup_at_time(bank_id, purpose, server_set, params, datetime.now(UTC))

    def store(self, bank_id: str, purpose: str, setup: PreparedSetup, *, uses: int = 0) -> None:
        """Cache ``setup`` for (bank, purpose), replacing what was there; ``uses`` already made of it."""
        if not isinstance(setup, PreparedSetup):
            raise TypeError(f"setup must be a PreparedSetup, got {type(setup).__name__}")
        key = self._key(bank_id, purpose)
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = _Entry(setup, uses)
            while len(self._entries) > self.max_entries:
                del self._entries[next(iter(self._entries))]

    def invalidate(self, bank_id: str, purpose: str | None = None) -> int:
        """Drop the entry of (bank, purpose), or every entry of the bank; return how many were dropped."""
        with self._lock:
            doomed = [k for k in self._entries if k[0] == bank_id and (purpose is None or k[1] == purpose)]
            for k in doomed:
                del self._entries[k]
            return len(doomed)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get_or_prepare_at_time(
        self,
        bank_id: str,
        purpose: str,
        server_set: ServerSet,
        params: PSIParams,
        now: datetime,
        *,
        workers: int | None = None,
        shards: int | None = None,
    ) -> tuple[PreparedSetup, CacheOutcome]:
        """The cached setup, or a fresh one (stored). Concurrent callers for one key prepare it once."""
        key = self._key(bank_id, purpose)
        with self._lock:
            gate = self._preparing.setdefault(key, threading.Lock())
        with gate:
            found = self.lookup_at_time(bank_id, purpose, server_set, params, now)
            if found.setup is not None:
                return found.setup, found.outcome
            setup = prepare_setup(
                server_set,
                params,
                normalise=validate_uscc,
                workers=workers,
                shards=shards,
                now=now,
                executor=self.executor,
            )
            self.store(bank_id, purpose, setup, uses=1)
            return setup, found.outcome

    def get_or_prepare(
        self,
        bank_id: str,
        purpose: str,
        server_set: ServerSet,
        params: PSIParams | None = None,
        *,
        workers: int | None = None,
        shards: int | None = None,
    ) -> tuple[PreparedSetup, CacheOutcome]:
        return self.get_or_prepare_at_time(
            bank_id,
            purpose,
            server_set,
            params or PSIParams(),
            datetime.now(UTC),
            workers=workers,
            shards=shards,
        )
