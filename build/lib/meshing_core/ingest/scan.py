"""The chunk pass: split supervoxels at layer-2 chunk faces and find where pieces touch.

Each chunk is read once, exactly (no overlap). Touching pairs across a chunk face are found
from the face the -x/-y/-z neighbour left behind, so only one slab of faces is ever held.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import fastremap
import numpy as np

from meshing_core import ids
from meshing_core.ingest.inputs import Agglomeration


@dataclass
class ChunkPieces:
    """What one chunk contributes: its pieces and its touching piece pairs."""

    coords: tuple[int, int, int]
    originals: np.ndarray  # sorted, nonzero
    l1: np.ndarray  # layer-1 ids, same order
    labels: np.ndarray  # the chunk relabelled with layer-1 ids
    pairs: np.ndarray  # (k, 2) global piece indices that touch (6-connectivity), a < b


def _axis_pairs(vox: np.ndarray, axis: int) -> np.ndarray:
    """Distinct (a, b) labels of voxels adjacent along ``axis`` (both >= 0, a != b)."""
    n = vox.shape[axis]
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    a = vox.take(np.arange(n - 1), axis=axis).ravel()
    b = vox.take(np.arange(1, n), axis=axis).ravel()
    keep = (a != b) & (a >= 0) & (b >= 0)
    return np.stack([a[keep], b[keep]], axis=1)


def _unique_pairs(pairs: np.ndarray) -> np.ndarray:
    """Undirected, deduplicated, sorted pairs of non-negative int64 ids (< 2**31)."""
    if pairs.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    lo = np.minimum(pairs[:, 0], pairs[:, 1])
    hi = np.maximum(pairs[:, 0], pairs[:, 1])
    key = np.unique((lo << 32) | hi)
    return np.stack([key >> 32, key & 0xFFFFFFFF], axis=1)


@dataclass
class ChunkScanner:
    """Turns chunks (visited x-major, then y, then z) into pieces and touching pairs.

    Only pairs of one object are kept (the only edges the hierarchy uses); the object key of
    every piece so far is held in two growing arrays.
    """

    codec: ids.IdCodec
    bounds: tuple[int, int, int]
    agglomeration: Agglomeration
    n_pieces: int = 0
    faces: dict[tuple[int, tuple[int, int, int]], np.ndarray] = field(default_factory=dict)
    listed: np.ndarray = field(default_factory=lambda: np.zeros(1024, dtype=bool))
    objects: np.ndarray = field(default_factory=lambda: np.zeros(1024, dtype=np.uint64))

    def _remember(self, base: int, originals: np.ndarray) -> None:
        end = base + originals.size
        if end > self.listed.size:
            size = max(end, 2 * self.listed.size)
            self.listed = np.resize(self.listed, size)
            self.objects = np.resize(self.objects, size)
        listed, objects = self.agglomeration.lookup(originals)
        self.listed[base:end] = listed
        self.objects[base:end] = objects

    def same_object(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (self.listed[a] == self.listed[b]) & (self.objects[a] == self.objects[b])

    def object_keys(self) -> tuple[np.ndarray, np.ndarray]:
        """(listed, object) of every piece scanned so far."""
        return self.listed[: self.n_pieces].copy(), self.objects[: self.n_pieces].copy()

    def scan(self, coords: tuple[int, int, int], block: np.ndarray) -> ChunkPieces:
        uniq, inv = fastremap.unique(block, return_inverse=True)
        inv = np.asarray(inv, dtype=np.int64).reshape(block.shape)
        nonzero = uniq != 0
        originals = uniq[nonzero].astype(np.uint64)
        rank = np.cumsum(nonzero) - 1
        segment = np.arange(1, originals.size + 1, dtype=np.uint64)
        l1 = np.uint64(self.codec.chunk_id(1, *coords)) | segment
        base = self.n_pieces
        if base + originals.size >= 1 << 31:
            raise ValueError("more than 2**31 supervoxel pieces: too large for one build")
        to_piece = np.where(nonzero, base + rank, -1).astype(np.int64)
        to_l1 = np.zeros(uniq.size, dtype=np.uint64)
        to_l1[nonzero] = l1
        vox = to_piece[inv]
        labels = to_l1[inv]
        self._remember(base, originals)
        self.n_pieces = base + originals.size

        found = [_axis_pairs(vox, axis) for axis in range(3)]
        for axis in range(3):
            if coords[axis] > 0:
                before = list(coords)
                before[axis] -= 1
                face = self.faces.pop((axis, tuple(before)), None)  # type: ignore[arg-type]
                if face is not None:
                    mine = vox.take(0, axis=axis)
                    keep = (face >= 0) & (mine >= 0)
                    found.append(np.stack([face[keep], mine[keep]], axis=1))
            if coords[axis] + 1 < self.bounds[axis]:
                self.faces[(axis, coords)] = np.ascontiguousarray(vox.take(-1, axis=axis))
        pairs = _unique_pairs(np.concatenate(found))
        if pairs.size:
            pairs = pairs[self.same_object(pairs[:, 0], pairs[:, 1])]
        return ChunkPieces(coords, originals, l1, labels, pairs)


def chunk_order(bounds: tuple[int, int, int]) -> Iterator[tuple[int, int, int]]:
    """Chunk coords x-major, then y, then z: the order that keeps layer-1 ids sorted."""
    for x in range(bounds[0]):
        for y in range(bounds[1]):
            for z in range(bounds[2]):
                yield (x, y, z)
