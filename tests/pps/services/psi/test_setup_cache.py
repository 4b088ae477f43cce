"""The PSI setup cache of the service (``pps.services.psi_cache``): one setup per (bank, purpose), valid only for
the exact set and parameters it was made for, dropped when the set changes, expired or used up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pps.errors import ConfigurationError, InvalidUSCC
from pps.identity.uscc import validate_uscc
from pps.services.psi_cache import MAX_SETUP_AGE, CacheOutcome, SetupCache
from protocols.psi import PSIParams, ServerSet, prepare_setup, run_locally
from tests.helpers import uscc_for
from tests.protocols.psi.common import client_set, wrong_check_character

SERVER_N = 1_500
SMALL = PSIParams(max_client_items=1_000)


@pytest.fixture(scope="module")
def server_set() -> ServerSet:
    return ServerSet.of(uscc_for(i) for i in range(SERVER_N))


def test_cache_returns_the_same_setup_for_the_same_set(server_set: ServerSet) -> None:
    cache = SetupCache()
    first, outcome = cache.get_or_prepare("bank-a", "credit", server_set, SMALL, workers=1)
    assert outcome is CacheOutcome.MISS
    again = ServerSet.of(reversed(server_set.items))  # same set, other order: same digest
    second, outcome = cache.get_or_prepare("bank-a", "credit", again, SMALL, workers=1)
    assert outcome is CacheOutcome.HIT
    assert second is first
    items, expected = client_set(10, 10, seed=21)
    assert (
        run_locally(items, second, normalise=validate_uscc, reveal_intersection=True)[0].intersection
        == expected
    )


def test_cache_is_invalidated_by_a_changed_set(server_set: ServerSet) -> None:
    cache = SetupCache()
    old, _ = cache.get_or_prepare("bank-a", "credit", server_set, SMALL, workers=1)
    revoked = ServerSet.of(server_set.items[1:])  # one subject withdrew consent
    assert revoked.digest != server_set.digest
    assert cache.lookup("bank-a", "credit", revoked, SMALL).outcome is CacheOutcome.SET_CHANGED
    assert len(cache) == 0  # the stale entry (and its key) is gone
    new, outcome = cache.get_or_prepare("bank-a", "credit", revoked, SMALL, workers=1)
    assert outcome is CacheOutcome.MISS
    assert new is not old and new._server_key != old._server_key
    withdrawn = server_set.items[0]
    result, _ = run_locally(
        [withdrawn, server_set.items[1]], new, normalise=validate_uscc, reveal_intersection=True
    )
    assert result.intersection == {server_set.items[1]}


def test_cache_explicit_invalidation_and_scoping(server_set: ServerSet) -> None:
    cache = SetupCache()
    setup = prepare_setup(server_set, SMALL, normalise=validate_uscc, shards=1, workers=1)
    cache.store("bank-a", "credit", setup)
    cache.store("bank-a", "marketing", setup)
    cache.store("bank-b", "credit", setup)
    assert cache.lookup("bank-c", "credit", server_set, SMALL).outcome is CacheOutcome.MISS
    assert cache.invalidate("bank-a", "credit") == 1
    assert cache.lookup("bank-a", "credit", server_set, SMALL).outcome is CacheOutcome.MISS
    assert cache.lookup("bank-a", "marketing", server_set, SMALL).outcome is CacheOutcome.HIT
    assert cache.invalidate("bank-a") == 1
    assert cache.lookup("bank-b", "credit", server_set, SMALL).outcome is CacheOutcome.HIT
    other = PSIParams(max_client_items=500)
    assert cache.lookup("bank-b", "credit", server_set, other).outcome is CacheOutcome.PARAMS_CHANGED
    assert len(cache) == 0


def test_cache_lifetime_and_use_count_are_bounded(server_set: ServerSet) -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    cache = SetupCache(max_age=timedelta(minutes=10), max_uses=2)
    setup = prepare_setup(server_set, SMALL, normalise=validate_uscc, shards=1, workers=1, now=t0)
    cache.store("bank-a", "credit", setup)
    lookup = cache.lookup_at_time
    assert (
        lookup("bank-a", "credit", server_set, SMALL, t0 + timedelta(minutes=9)).outcome is CacheOutcome.HIT
    )
    assert (
        lookup("bank-a", "credit", server_set, SMALL, t0 + timedelta(minutes=10)).outcome
        is CacheOutcome.EXPIRED
    )
    cache.store("bank-a", "credit", setup)
    assert lookup("bank-a", "credit", server_set, SMALL, t0).outcome is CacheOutcome.HIT
    assert lookup("bank-a", "credit", server_set, SMALL, t0).outcome is CacheOutcome.HIT
    assert lookup("bank-a", "credit", server_set, SMALL, t0).outcome is CacheOutcome.USED_UP
    with pytest.raises(ConfigurationError, match="max_age"):
        SetupCache(max_age=MAX_SETUP_AGE + timedelta(seconds=1))
    small = SetupCache(max_entries=2)
    for bank in ("a", "b", "c"):
        small.store(bank, "credit", setup)
    assert len(small) == 2
    assert small.lookup("a", "credit", server_set, SMALL).outcome is CacheOutcome.MISS  # oldest evicted


def test_setups_are_made_with_the_uscc_check(server_set: ServerSet) -> None:
    """The cache prepares setups with ``validate_uscc``: an invalid code in a server set is the service's error."""
    bad = ServerSet.of([uscc_for(1), wrong_check_character(uscc_for(2))])
    with pytest.raises(InvalidUSCC, match="check character"):
        SetupCache().get_or_prepare("bank-a", "credit", bad, SMALL, workers=1)
