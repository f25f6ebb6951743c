"""MurmurHash3 x86_128 of 8-byte keys, vectorised with numpy.

The neuroglancer sharded format hashes each uint64 key (little-endian bytes, seed 0) with
murmurhash3_x86_128 and keeps the low 64 bits; the minishard number is taken from those bits.
Readers (neuroglancer, tensorstore, cloud-volume) all compute it this way, so our writer must
too, for many keys at once: a layer-2 chunk holds thousands of nodes.
"""

from __future__ import annotations

import numpy as np

_C1 = 0x239B961B
_C2 = 0xAB0E9789
_C3 = 0x38B34AE5
_KEY_BYTES = 8


def _rotl32(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def as_uint64(keys: object) -> np.ndarray:
    """Keys as a 1-d uint64 array (Python ints up to 2**64 - 1 are accepted)."""
    if isinstance(keys, np.ndarray):
        return np.atleast_1d(keys.astype(np.uint64, copy=False))
    if isinstance(keys, int | np.integer):
        keys = [keys]
    return np.atleast_1d(np.array([int(k) for k in keys], dtype=np.uint64))  # type: ignore[union-attr]


def murmurhash3_x86_128_low64(keys: object) -> np.ndarray:
    """Low 64 bits of murmurhash3_x86_128 (seed 0) of each key's 8 little-endian bytes."""
    k = as_uint64(keys)
    with np.errstate(over="ignore"):
        lo = (k & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        hi = (k >> np.uint64(32)).astype(np.uint32)
        # An 8-byte input has no 16-byte block: only the tail step runs, bytes 0-3 into k1
        # (-> h1) and bytes 4-7 into k2 (-> h2); h3 and h4 stay at the seed (0).
        h1 = _rotl32(lo * np.uint32(_C1), 15) * np.uint32(_C2)
        h2 = _rotl32(hi * np.uint32(_C2), 16) * np.uint32(_C3)
        length = np.uint32(_KEY_BYTES)
        h1 = h1 ^ length
        h2 = h2 ^ length
        h3 = np.full_like(h1, length)
        h4 = np.full_like(h1, length)
        h1 = h1 + h2 + h3 + h4
        h2 = h2 + h1
        h3 = h3 + h1
        h4 = h4 + h1
        h1, h2, h3, h4 = _fmix32(h1), _fmix32(h2), _fmix32(h3), _fmix32(h4)
        h1 = h1 + h2 + h3 + h4
        h2 = h2 + h1
    return h1.astype(np.uint64) | (h2.astype(np.uint64) << np.uint64(32))


def _rotl32_int(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & 0xFFFFFFFF


def _fmix32_int(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def murmurhash3_x86_128_low64_one(key: int) -> int:
    """The same hash for one key in plain integers (numpy's per-call cost dominates for one)."""
    key = int(key) & 0xFFFFFFFFFFFFFFFF
    mask = 0xFFFFFFFF
    h1 = (_rotl32_int((key & mask) * _C1 & mask, 15) * _C2) & mask
    h2 = (_rotl32_int((key >> 32) * _C2 & mask, 16) * _C3) & mask
    h1 ^= _KEY_BYTES
    h2 ^= _KEY_BYTES
    h3 = h4 = _KEY_BYTES
    h1 = (h1 + h2 + h3 + h4) & mask
    h2 = (h2 + h1) & mask
    h3 = (h3 + h1) & mask
    h4 = (h4 + h1) & mask
    h1, h2, h3, h4 = _fmix32_int(h1), _fmix32_int(h2), _fmix32_int(h3), _fmix32_int(h4)
    h1 = (h1 + h2 + h3 + h4) & mask
    h2 = (h2 + h1) & mask
    return h1 | (h2 << 32)
