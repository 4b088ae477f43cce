"""Proof construction against a literal transcription of RFC 6962 §2.1 (MTH, PATH, SUBPROOF)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pps_wire import merkle
from pps_wire.errors import InvalidProofRequest, ProofVerificationError


def leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(f"entry {i}".encode()) for i in range(n)]


def k_of(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = k_of(len(d))
    return merkle.node_hash(ref_mth(d[:k]), ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = k_of(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = k_of(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def planned(ranges: list[merkle.Range], d: list[bytes]) -> list[bytes]:
    levels, _ = merkle.perfect_levels(d)
    return [merkle.range_hash(s, e, lambda node: levels[node[0]][node[1]]) for s, e in ranges]


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=300), st.data())
def test_inclusion_proofs_match_rfc(n: int, data: st.DataObject) -> None:
    d = leaves(n)
    m = data.draw(st.integers(min_value=0, max_value=n - 1))
    proof = planned(merkle.inclusion_ranges(m, n), d)
    assert proof == ref_path(m, d)
    root = ref_mth(d)
    assert merkle.mth(d) == root
    merkle.verify_inclusion(m, n, d[m], proof, root)
    if proof:
        bad = list(proof)
        bad[data.draw(st.integers(0, len(bad) - 1))] = b"\x00" * 32
        with pytest.raises(ProofVerificationError):
            merkle.verify_inclusion(m, n, d[m], bad, root)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=300), st.data())
def test_consistency_proofs_match_rfc(n: int, data: st.DataObject) -> None:
    d = leaves(n)
    m = data.draw(st.integers(min_value=1, max_value=n))
    proof = planned(merkle.consistency_ranges(m, n), d)
    assert proof == ref_subproof(m, d, True)
    merkle.verify_consistency(m, n, ref_mth(d[:m]), ref_mth(d), proof)
    if m < n:
        with pytest.raises(ProofVerificationError):
            merkle.verify_consistency(m, n, ref_mth(d[: m - 1]) if m > 1 else b"\x01" * 32, ref_mth(d), proof)


@given(st.integers(min_value=0, max_value=2**40), st.integers(min_value=0, max_value=2**40))
def test_perfect_subtrees_cover_the_range(a: int, b: int) -> None:
    start, end = min(a, b), max(a, b)
    pos = start
    for level, index in merkle.perfect_subtrees(start, end):
        assert index << level == pos
        pos += 1 << level
    assert pos == end


def test_root_of_empty_tree() -> None:
    assert merkle.mth([]) == hashlib.sha256(b"").digest()


def test_proof_requests_out_of_range_are_refused() -> None:
    with pytest.raises(InvalidProofRequest):
        merkle.inclusion_ranges(5, 5)
    with pytest.raises(InvalidProofRequest):
        merkle.consistency_ranges(0, 5)
    with pytest.raises(InvalidProofRequest):
        merkle.consistency_ranges(6, 5)
