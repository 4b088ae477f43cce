"""Shamir sharing over GF(2^521 - 1) (``protocols.secagg.shamir``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.secagg import (
    SecAggAborted,
    shamir_combine,
    shamir_split,
)


def test_unmasking_with_threshold_minus_one_shares_fails_and_reveals_nothing() -> None:
    secret = int.from_bytes(bytes(range(32)), "big")
    shares = shamir_split(secret, 3, [1, 2, 3, 4, 5])
    assert shamir_combine({x: shares[x] for x in (2, 4, 5)}, 3) == secret
    with pytest.raises(SecAggAborted):
        shamir_combine({x: shares[x] for x in (1, 2)}, 3)
    # a degree-2 polynomial through any 2 points and *any* value at 0 exists: 2 shares fit every secret.
    # Interpolating them as if the threshold were 2 gives a field element unrelated to the secret.
    assert shamir_combine({x: shares[x] for x in (1, 2)}, 2) != secret


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**256 - 1), st.integers(2, 6), st.data())
def test_shamir_round_trips(secret: int, t: int, data: st.DataObject) -> None:
    n = data.draw(st.integers(t, 8))
    shares = shamir_split(secret, t, list(range(1, n + 1)))
    pick = data.draw(st.lists(st.sampled_from(sorted(shares)), min_size=t, max_size=n, unique=True))
    assert shamir_combine({x: shares[x] for x in pick}, t) == secret
