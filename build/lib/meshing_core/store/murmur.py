"""MurmurHash3 x86_128 (low 64 bits) of uint64 keys, as the neuroglancer sharded format hashes them.

Each key's 8 little-endian bytes are hashed with seed 0 and the low 64 bits kept; neuroglancer,
tensorstore and cloud-volume all compute minishard numbers this way. The hashing is the pinned
`mmh3` C library (about a microsecond per key, so thousands of nodes per chunk cost milliseconds).
"""

from __future__ import annotations

import mmh3
import numpy as np


def as_uint64(keys: object) -> np.ndarray:
    """Keys as a 1-d uint64 array (Python ints up to 2**64 - 1 are accepted)."""
    if isinstance(keys, np.ndarray):
        return np.atleast_1d(keys.astype(np.uint64, copy=False)).ravel()
    if isinstance(keys, int | np.integer):
        keys = [keys]
    return np.array([int(k) for k in keys], dtype=np.uint64).ravel()  # type: ignore[union-attr]


def murmurhash3_x86_128_low64_one(key: int) -> int:
    """Low 64 bits of murmurhash3_x86_128 of one key."""
    return mmh3.hash64(int(key).to_bytes(8, "little"), seed=0, x64arch=False, signed=False)[0]


def murmurhash3_x86_128_low64(keys: object) -> np.ndarray:
    """Low 64 bits of murmurhash3_x86_128 of each key."""
    flat = as_uint64(keys)
    return np.fromiter(
        (murmurhash3_x86_128_low64_one(k) for k in flat.tolist()), dtype=np.uint64, count=flat.size
    )
