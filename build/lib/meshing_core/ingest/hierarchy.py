"""The ChunkedGraph hierarchy over supervoxel pieces, as ChunkedGraph ingest builds it.

Layer 2: connected components of the piece graph restricted to edges inside one layer-2 chunk.
Layer L >= 3: among parentless nodes, components joined by edges whose ``cross_chunk_layer`` is
L; a component of several nodes gets a parent in the layer-L chunk, singletons skip the layer,
except at the top layer where every parentless node gets its root.

The structure is computed on arrays (memory: a few integers per piece and per edge) and kept
apart from id assignment, so the base build (ids by rank) and edits (ids by identity with the
old nodes) share it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from meshing_core import ids


@dataclass
class Level:
    """New nodes of one layer: node ``k`` has children ``child[ptr[k]:ptr[k+1]]`` (node indices)."""

    layer: int
    chunk: np.ndarray  # (k, 3) int64 chunk coords at ``layer``
    ptr: np.ndarray  # (k + 1,) int64
    child: np.ndarray  # node indices (pieces are 0..n-1, then the levels' nodes in order)
    first: int  # node index of this level's first node


def edge_layers(chunk_a: np.ndarray, chunk_b: np.ndarray) -> np.ndarray:
    """Vectorised ``ids.cross_chunk_layer`` for rows of layer-2 chunk coords (fanout 2)."""
    diff = np.bitwise_xor(chunk_a.astype(np.int64), chunk_b.astype(np.int64)).max(axis=1)
    levels = np.zeros(diff.shape, dtype=np.int64)
    while np.any(diff):
        levels += diff > 0
        diff = diff >> 1
    return levels + 2


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component label of each of ``n`` nodes given undirected edges a-b."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(a.size, dtype=np.int8), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def _group(labels: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group ``members`` by ``labels``: (group label per group, ptr, members sorted by group then value)."""
    order = np.lexsort((members, labels))
    labels, members = labels[order], members[order]
    starts = (
        np.flatnonzero(np.concatenate([[True], labels[1:] != labels[:-1]]))
        if labels.size
        else np.zeros(0, np.int64)
    )
    ptr = np.concatenate([starts, [labels.size]]).astype(np.int64)
    return labels[starts], ptr, members


def build_levels(
    piece_chunk: np.ndarray, edges: np.ndarray, n_layers: int
) -> tuple[list[Level], np.ndarray]:
    """Hierarchy structure of ``len(piece_chunk)`` pieces with piece-index ``edges`` (m, 2).

    Returns the levels (layer 2 first) and, per node index, the layer-2 chunk of one of its
    pieces (used to place parents). Edges are assumed to join pieces of one object only.
    """
    n = int(piece_chunk.shape[0])
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    ea, eb = edges[:, 0], edges[:, 1]
    layer_of_edge = edge_layers(piece_chunk[ea], piece_chunk[eb])
    levels: list[Level] = []

    inside = layer_of_edge == 2
    comp = components(n, ea[inside], eb[inside])
    labels, ptr, members = _group(comp, np.arange(n, dtype=np.int64))
    k = labels.size
    first = n
    l2chunk = np.concatenate([piece_chunk, piece_chunk[members[ptr[:-1]]]]).astype(np.int64)
    levels.append(Level(2, l2chunk[first : first + k], ptr, members, first))
    top = np.empty(n, dtype=np.int64)
    top[members] = first + np.repeat(np.arange(k), np.diff(ptr))
    next_index = first + k

    for layer in range(3, n_layers + 1):
        active = np.unique(top)
        sel = layer_of_edge == layer
        ta = np.searchsorted(active, top[ea[sel]])
        tb = np.searchsorted(active, top[eb[sel]])
        keep = ta != tb
        comp = components(active.size, ta[keep], tb[keep])
        sizes = np.bincount(comp, minlength=int(comp.max()) + 1 if comp.size else 0)
        chosen = np.ones(active.size, dtype=bool) if layer == n_layers else sizes[comp] > 1
        if not chosen.any():
            continue
        labels, ptr, members = _group(comp[chosen], active[chosen])
        k = labels.size
        parent_l2 = l2chunk[members[ptr[:-1]]]
        chunk = parent_l2 >> (layer - 2)
        levels.append(Level(layer, chunk, ptr, members, next_index))
        l2chunk = np.concatenate([l2chunk, parent_l2])
        parent_of = np.full(next_index, -1, dtype=np.int64)
        parent_of[members] = next_index + np.repeat(np.arange(k), np.diff(ptr))
        moved = parent_of[top] >= 0
        top[moved] = parent_of[top[moved]]
        next_index += k
    return levels, l2chunk


def node_ids(codec: ids.IdCodec, layer: int, chunk: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Vectorised ``codec.node_id`` for rows of chunk coords and segment ids."""
    bits = codec.bitmasks[layer]
    seg_bits = codec.segid_bits(layer)
    chunk = np.asarray(chunk, dtype=np.uint64).reshape(-1, 3)
    segment = np.asarray(segment, dtype=np.uint64)
    if chunk.size and int(chunk.max()) >= 1 << bits:
        raise ValueError(f"chunk coordinates do not fit {bits} bits at layer {layer}")
    if segment.size and int(segment.max()) > codec.max_segment_id(layer):
        raise ValueError(f"too many nodes in one chunk at layer {layer}")
    return (
        (np.uint64(layer) << np.uint64(64 - ids.LAYER_ID_BITS))
        | (chunk[:, 0] << np.uint64(seg_bits + 2 * bits))
        | (chunk[:, 1] << np.uint64(seg_bits + bits))
        | (chunk[:, 2] << np.uint64(seg_bits))
        | segment
    )


def rank_ids(codec: ids.IdCodec, level: Level, child_ids: np.ndarray) -> np.ndarray:
    """Base-build ids of a level: per chunk, nodes ranked by their smallest child id, from 1."""
    k = level.chunk.shape[0]
    if k == 0:
        return np.zeros(0, dtype=np.uint64)
    smallest = np.minimum.reduceat(child_ids[level.child], level.ptr[:-1])
    chunk_key = node_ids(codec, level.layer, level.chunk, np.zeros(k, dtype=np.uint64))
    order = np.lexsort((smallest, chunk_key))
    sorted_keys = chunk_key[order]
    starts = np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]])
    run_start = np.maximum.accumulate(np.where(starts, np.arange(k), 0))
    segment = np.empty(k, dtype=np.uint64)
    segment[order] = (np.arange(k) - run_start + 1).astype(np.uint64)
    return node_ids(codec, level.layer, level.chunk, segment)
