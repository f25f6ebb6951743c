"""The global per-piece arrays of a build and the editable edge list between pieces."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from meshing_core import ids
from meshing_core.ingest.hierarchy import components


@dataclass
class Pieces:
    """Supervoxel pieces (one per original supervoxel per layer-2 chunk), sorted by layer-1 id."""

    codec: ids.IdCodec
    l1: np.ndarray  # uint64, sorted
    original: np.ndarray  # uint64
    chunk: np.ndarray  # (n, 3) int64 layer-2 chunk coords
    listed: np.ndarray  # bool: supervoxel named by the agglomeration
    obj: np.ndarray  # uint64 object id (or the supervoxel when not listed)

    def __post_init__(self) -> None:
        self._by_original = np.argsort(self.original, kind="stable")

    def __len__(self) -> int:
        return int(self.l1.size)

    def of_original(self, original: int) -> np.ndarray:
        """Piece indices of one original supervoxel (sorted, so smallest layer-1 id first)."""
        sorted_orig = self.original[self._by_original]
        lo = np.searchsorted(sorted_orig, np.uint64(original), side="left")
        hi = np.searchsorted(sorted_orig, np.uint64(original), side="right")
        return np.sort(self._by_original[lo:hi])

    def at(self, coords: tuple[int, int, int], original: int) -> int | None:
        """Index of the piece of ``original`` in layer-2 chunk ``coords``, if any."""
        chunk = np.uint64(self.codec.chunk_id(1, *coords))
        lo = int(np.searchsorted(self.l1, chunk, side="left"))
        hi = int(
            np.searchsorted(self.l1, chunk + np.uint64(self.codec.max_segment_id(1)), side="right")
        )
        pos = lo + int(np.searchsorted(self.original[lo:hi], np.uint64(original)))
        if pos < hi and int(self.original[pos]) == int(original):
            return pos
        return None

    def index_of_l1(self, l1_ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.l1, np.asarray(l1_ids, dtype=np.uint64))


def chain_edges(pieces: Pieces, edges: np.ndarray) -> np.ndarray:
    """Edges that make every object one component: its components chained by smallest piece.

    Components of an object are ordered by their smallest piece (= smallest layer-1 id) and
    each is joined to the next one, so the choice is deterministic.
    """
    n = len(pieces)
    comp = components(n, edges[:, 0], edges[:, 1])
    _, first = np.unique(comp, return_index=True)
    listed, obj = pieces.listed[first], pieces.obj[first]
    order = np.lexsort((first, obj, listed))
    first, listed, obj = first[order], listed[order], obj[order]
    same = (listed[1:] == listed[:-1]) & (obj[1:] == obj[:-1])
    return np.stack([first[:-1][same], first[1:][same]], axis=1).astype(np.int64)


@dataclass
class EdgeList:
    """Undirected piece edges; edits append and retire rows (O(edges) per edit, edits are few)."""

    a: np.ndarray
    b: np.ndarray
    alive: np.ndarray

    @classmethod
    def of(cls, edges: np.ndarray) -> EdgeList:
        edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
        return cls(edges[:, 0].copy(), edges[:, 1].copy(), np.ones(edges.shape[0], dtype=bool))

    def add(self, i: int, j: int) -> None:
        self.a = np.append(self.a, np.int64(i))
        self.b = np.append(self.b, np.int64(j))
        self.alive = np.append(self.alive, True)

    def remove_between(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Retire every alive edge joining a ``left`` piece to a ``right`` piece; return them."""
        in_l_a, in_r_b = np.isin(self.a, left), np.isin(self.b, right)
        in_r_a, in_l_b = np.isin(self.a, right), np.isin(self.b, left)
        hit = self.alive & ((in_l_a & in_r_b) | (in_r_a & in_l_b))
        self.alive &= ~hit
        return np.stack([self.a[hit], self.b[hit]], axis=1)

    def within(self, members: np.ndarray) -> np.ndarray:
        """Alive edges with both ends in sorted ``members``, as local indices into it."""
        keep = self.alive & np.isin(self.a, members) & np.isin(self.b, members)
        return np.stack(
            [np.searchsorted(members, self.a[keep]), np.searchsorted(members, self.b[keep])], axis=1
        ).astype(np.int64)
