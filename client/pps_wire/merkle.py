"""RFC 6962 / RFC 9162 Merkle tree hashing, proof construction plans and proof verification.

This module is pure: no database, no I/O. Node coordinates are ``(level, index)``: the node at level ``L`` and
index ``i`` is the root of the *perfect* subtree over leaves ``[i * 2**L, (i + 1) * 2**L)``. Perfect subtrees
never change once complete, so a store keeps exactly those nodes and answers every root, inclusion proof and
consistency proof from O(log n) of them.

Hashes (RFC 6962 §2.1, RFC 9162 §2.1.1), SHA-256:

* leaf hash ``SHA-256(0x00 || entry)``,
* interior node hash ``SHA-256(0x01 || left || right)``,
* the root of the empty tree ``SHA-256("")``.

The ``verify_*`` functions implement the verification algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2. They
return nothing when a proof holds and raise :class:`~pps_wire.errors.ProofVerificationError` otherwise; they never
return a bool.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence

from pps_wire.errors import InvalidProofRequest, ProofVerificationError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

NodeId = tuple[int, int]
"""``(level, index)`` of a perfect subtree root."""

Range = tuple[int, int]
"""A half-open range of leaf indices ``[start, end)`` as it occurs in the RFC 6962 recursion."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split_point(size: int) -> int:
    """The largest power of two strictly smaller than ``size`` (``size >= 2``)."""
    return 1 << ((size - 1).bit_length() - 1)


def perfect_subtrees(start: int, end: int) -> list[NodeId]:
    """Decompose ``[start, end)`` into perfect subtrees, left to right, largest first.

    For the ranges of the RFC 6962 recursion (``start`` is a multiple of a power of two at least
    ``end - start``) this is the binary decomposition of the range's size, and the range's Merkle tree hash
    is :func:`fold_right` of these subtrees' hashes.
    """
    if not 0 <= start <= end:
        raise ValueError(f"invalid leaf range [{start}, {end})")
    nodes: list[NodeId] = []
    while start < end:
        level = (end - start).bit_length() - 1
        if start:
            level = min(level, (start & -start).bit_length() - 1)
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def fold_right(hashes: Sequence[bytes]) -> bytes:
    """Combine perfect-subtree hashes (left to right, largest first) into the hash of their union."""
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The leaf ranges whose tree hashes form the inclusion proof of leaf ``index`` in a tree of ``size``.

    Ordered from the leaf upwards, as RFC 9162 §2.1.3.1 PATH(m, D[n]) orders them.
    """
    if not 0 <= index < size:
        raise InvalidProofRequest(f"leaf index {index} is not in a tree of size {size}")
    ranges: list[Range] = []
    start, end = 0, size
    while end - start > 1:
        k = _split_point(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    ranges.reverse()
    return ranges


def consistency_ranges(first: int, second: int) -> list[Range]:
    """The leaf ranges whose tree hashes form the consistency proof between sizes ``first`` and ``second``.

    RFC 9162 §2.1.4.1 SUBPROOF, ordered as the RFC orders the proof. Empty when ``first == second``.
    """
    if not 0 < first <= second:
        raise InvalidProofRequest(
            f"a consistency proof needs 0 < first <= second, got first={first}, second={second}"
        )
    ranges: list[Range] = []
    start, end, m, complete = 0, second, first, True
    while True:
        size = end - start
        if m == size:
            if not complete:
                ranges.append((start, end))
            break
        k = _split_point(size)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
            m -= k
            complete = False
    ranges.reverse()
    return ranges


def nodes_for(ranges: Sequence[Range]) -> set[NodeId]:
    """Every stored node needed to hash the given ranges (one batched read for a whole proof)."""
    needed: set[NodeId] = set()
    for start, end in ranges:
        needed.update(perfect_subtrees(start, end))
    return needed


def range_hash(start: int, end: int, lookup: Mapping[NodeId, bytes] | Callable[[NodeId], bytes]) -> bytes:
    """The Merkle tree hash of leaves ``[start, end)`` from stored perfect-subtree hashes."""
    get = lookup.__getitem__ if isinstance(lookup, Mapping) else lookup
    return fold_right([get(node) for node in perfect_subtrees(start, end)])


# --- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) -------------------------------------------------------


def _check_hash(name: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise ProofVerificationError(f"{name} must be {HASH_SIZE} bytes, got {len(value)}")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root implied by an inclusion proof; raises if the proof's shape cannot fit ``(index, size)``."""
    if not 0 <= index < size:
        raise ProofVerificationError(f"leaf index {index} is outside a tree of size {size}")
    _check_hash("leaf hash", leaf)
    fn, sn, r = index, size - 1, leaf
    for i, p in enumerate(proof):
        _check_hash(f"proof[{i}]", p)
        if sn == 0:
            raise ProofVerificationError("inclusion proof is longer than the tree is high")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofVerificationError("inclusion proof is shorter than the tree is high")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Verify that ``leaf`` (a leaf *hash*) is at ``index`` of the tree of ``size`` with ``root``."""
    _check_hash("root", root)
    if root_from_inclusion_proof(index, size, leaf, proof) != root:
        raise ProofVerificationError(f"inclusion proof of leaf {index} does not lead to the given root")


def verify_consistency(first: int, second: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> None:
    """Verify that the tree of size ``first`` with ``root1`` is a prefix of the tree of ``second``/``root2``.

    ``first == 0`` is refused: every tree extends the empty tree, so such a check proves nothing and
    most likely hides a caller's mistake.
    """
    if first > second:
        raise ProofVerificationError(f"first size {first} exceeds second size {second}")
    if first == 0:
        raise ProofVerificationError("consistency with the empty tree (first size 0) proves nothing")
    if first == second:
        if proof:
            raise ProofVerificationError("sizes are equal, so the proof must be empty")
        if root1 != root2:
            raise ProofVerificationError("sizes are equal but the roots differ")
        return
    if not proof:
        raise ProofVerificationError("empty consistency proof for different sizes")
    _check_hash("first root", root1)
    _check_hash("second root", root2)
    for i, p in enumerate(proof):
        _check_hash(f"proof[{i}]", p)
    path = list(proof)
    if first & (first - 1) == 0:  # first is a power of two: its root is a node of the second tree
        path.insert(0, root1)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofVerificationError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofVerificationError("consistency proof is too short")
    if fr != root1:
        raise ProofVerificationError(f"consistency proof does not lead to the root of size {first}")
    if sr != root2:
        raise ProofVerificationError(f"consistency proof does not lead to the root of size {second}")


# --- reference (whole-tree) computations, for tests, verification and baselines ------------------------


def mth(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 MTH over leaf *hashes*, computed level by level in O(n) (no recursion depth issues)."""
    if not leaves:
        return EMPTY_ROOT
    return fold_right(list(perfect_levels(leaves)[1]))


def perfect_levels(leaves: Sequence[bytes]) -> tuple[list[list[bytes]], list[bytes]]:
    """All perfect-subtree hashes of a tree over ``leaves`` (level by level) and its frontier.

    Returns ``(levels, frontier)`` where ``levels[L][i]`` is node ``(L, i)`` and ``frontier`` holds the hashes
    of the maximal perfect subtrees (left to right), whose :func:`fold_right` is the root.
    """
    levels: list[list[bytes]] = [list(leaves)]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])
    n = len(leaves)
    frontier = [levels[level][index] for level, index in perfect_subtrees(0, n)] if n else []
    return levels, frontier
