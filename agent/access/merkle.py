"""The audit log as a Merkle tree: RFC 6962 / RFC 9162 hashing, tree roots and consistency proofs.

Why a tree and not only the hash chain: a chain lets an owner check that the log they hold is a
prefix of a checkpoint, but only with the whole log. With a tree, the owner device keeps just the
signed checkpoints it pinned (size + root), and the hub proves with a few hashes that every new
checkpoint extends the pinned one. A hub (or a thief with its key) that rewrote history cannot
produce that proof: what it shows then is a fork, and `audit pin` reports it as one.

Hashing (RFC 9162 section 2.1): leaf = SHA-256(0x00 || entry), node = SHA-256(0x01 || left ||
right), the empty tree hashes to SHA-256(""). The entry bytes are the canonical JSON line of the
audit entry without its newline. Pure functions over lists of leaf hashes.
"""

from __future__ import annotations

from collections.abc import Sequence

import nacl.encoding
import nacl.hash

HASH_BYTES = 32


def sha256(data: bytes) -> bytes:
    return nacl.hash.sha256(data, encoder=nacl.encoding.RawEncoder)


def leaf_hash(entry: bytes) -> bytes:
    return sha256(b"\x00" + entry)


def node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right)


EMPTY_ROOT = sha256(b"")


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes (RFC 9162 2.1.1)."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = _split(n)
    return node_hash(root(leaves[:k]), root(leaves[k:]))


def consistency_proof(leaves: Sequence[bytes], m: int) -> list[bytes]:
    """PROOF(m, D[n]) for n = len(leaves) (RFC 9162 2.1.4.1)."""
    n = len(leaves)
    if not 0 <= m <= n:
        raise ValueError(f"no consistency proof from size {m} to size {n}")
    if m in (0, n):
        return []
    return _subproof(m, leaves, True)


def _subproof(m: int, leaves: Sequence[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [root(leaves)]
    k = _split(n)
    if m <= k:
        return _subproof(m, leaves[:k], complete) + [root(leaves[k:])]
    return _subproof(m - k, leaves[k:], False) + [root(leaves[:k])]


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """RFC 9162 2.1.4.2: does the tree of size `second` extend the tree of size `first`?"""
    if first < 0 or second < first or any(len(h) != HASH_BYTES for h in proof):
        return False
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof  # the empty tree is a prefix of every tree
    path = list(proof)
    if not path:
        return False
    if first & (first - 1) == 0:  # an exact power of two: its root is a node of the bigger tree
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0
