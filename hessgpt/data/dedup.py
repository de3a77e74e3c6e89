"""Exact and near-duplicate detection across sources.

Exact: SHA-1 of the normalized text (lowercased words joined by one space, punctuation dropped).
Near: MinHash (64 permutations) of word 3-gram sets, banded LSH (8 bands x 8 rows: pairs above ~0.77
Jaccard collide in some band), then the estimated Jaccard of each candidate is checked against the
threshold. Deterministic: the hashes are CRC32 and the permutations come from a fixed seed.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections import defaultdict

import numpy as np

_WORD = re.compile(r"\w+", flags=re.UNICODE)
_PRIME = np.uint64(4294967311)  # > 2**32, so (a*h + b) mod p permutes 32-bit hashes
NUM_PERM, BANDS = 64, 8
ROWS = NUM_PERM // BANDS
_rng = np.random.default_rng(0)  # fixed permutations: the same text always gets the same signature
_A = _rng.integers(1, 2**31, NUM_PERM, dtype=np.uint64)  # (NUM_PERM,)
_B = _rng.integers(0, 2**31, NUM_PERM, dtype=np.uint64)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def minhash(tokens: list[str], ngram: int = 3) -> np.ndarray:
    """(NUM_PERM,) uint64 signature of the set of word n-grams."""
    grams = [" ".join(tokens[i : i + ngram]) for i in range(max(1, len(tokens) - ngram + 1))]
    h = np.fromiter((zlib.crc32(g.encode("utf-8")) for g in set(grams)), dtype=np.uint64)  # (n,)
    sig = np.full(NUM_PERM, np.iinfo(np.uint64).max, dtype=np.uint64)
    for start in range(0, len(h), 4096):  # chunks keep the (n, NUM_PERM) product small
        chunk = h[start : start + 4096, None]  # (n, 1); a*h + b < 2**63, no overflow
        sig = np.minimum(sig, ((chunk * _A + _B) % _PRIME).min(axis=0))
    return sig


class Deduper:
    """`check(text)` returns None for a new text (and remembers it), else "duplicate"/"near_duplicate"."""

    def __init__(self, exact: bool = True, near: bool = True, threshold: float = 0.8):
        self.exact, self.near, self.threshold = exact, near, threshold
        self._hashes: set[bytes] = set()
        self._bands: dict[tuple[int, bytes], list[int]] = defaultdict(list)
        self._sigs: list[np.ndarray] = []

    def check(self, text: str) -> str | None:
        tokens = words(text)
        if self.exact:
            digest = hashlib.sha1(" ".join(tokens).encode("utf-8")).digest()
            if digest in self._hashes:
                return "duplicate"
        if self.near and tokens:
            sig = minhash(tokens)
            keys = [(band, sig[band * ROWS : (band + 1) * ROWS].tobytes()) for band in range(BANDS)]
            candidates = {j for k in keys for j in self._bands.get(k, ())}
            for j in sorted(candidates):
                if float(np.mean(self._sigs[j] == sig)) >= self.threshold:
                    return "near_duplicate"
            for k in keys:
                self._bands[k].append(len(self._sigs))
            self._sigs.append(sig)
        if self.exact:
            self._hashes.add(digest)
        return None
