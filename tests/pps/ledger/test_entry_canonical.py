"""Ledger entries are RFC 8785 canonical JSON: the fast writer agrees with the reference implementation."""

from __future__ import annotations

from typing import Any

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from pps.ledger.entry import canonical_bytes, is_canonical

ascii_keys = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=30),  # controls, CJK, emoji, …
)
documents = st.dictionaries(
    ascii_keys,
    st.recursive(
        leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ascii_keys, inner, max_size=4)
    ),
    max_size=8,
)


@settings(max_examples=500, deadline=None)
@given(documents)
def test_fast_writer_equals_rfc8785(doc: dict[str, Any]) -> None:
    data = canonical_bytes(doc)
    assert data == rfc8785.dumps(doc)
    assert is_canonical(data) == doc


def test_non_canonical_bytes_are_recognised() -> None:
    assert is_canonical(b'{"b":1,"a":2}') is None
    assert is_canonical(b'{"a": 2}') is None
    assert is_canonical(b'{"a":"\\u00e9"}') is None  # escaped where RFC 8785 writes the character
    assert is_canonical(b"[1,2]") is None
    assert is_canonical(b"\xff") is None
