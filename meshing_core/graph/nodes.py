"""Node lookups built on the reader protocol: is an id a node of this graph, and what is under it.

Export checks the node it is asked for and the read-only server answers ``leaves`` and
``children`` with these, so both say the same thing about the same id on every backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any

import numpy as np

from meshing_core import ids
from meshing_core.errors import MeshingError


class NodeState(Enum):
    ALIVE = "alive"  # in its chunk at the timestamp
    SUPERSEDED = "superseded"  # a node of the graph not alive at t: replaced by an edit, or
    # made by a later one (the protocol has no creation times; parents tell the two apart)
    UNKNOWN = "unknown"  # not a node of this graph


def in_id_space(meta: Any, node: int) -> bool:
    """Whether ``node``'s layer and chunk coordinates fit the graph (cheap; no query)."""
    node = int(node)
    if node <= 0 or node >= 2**64:
        return False
    layer = ids.layer_of(node)
    if not 1 <= layer <= meta.n_layers:
        return False
    coords = ids.chunk_coords(meta.codec, node)
    bounds = meta.layer_chunk_bounds(layer)
    return all(0 <= c < b for c, b in zip(coords, bounds, strict=True))


def node_state(graph: Any, node: int, timestamp: float) -> NodeState:
    """Alive, superseded or unknown at ``timestamp`` (one chunk query, one children query)."""
    meta = graph.meta
    if not in_id_space(meta, node):
        return NodeState.UNKNOWN
    layer = ids.layer_of(node)
    if layer == 1:
        try:
            parent = graph.l2_ids(np.array([node], dtype=np.uint64), timestamp)
        except MeshingError:
            return NodeState.UNKNOWN
        return NodeState.ALIVE if int(parent[0]) else NodeState.UNKNOWN
    alive = graph.chunk_nodes(layer, ids.chunk_coords(meta.codec, node), timestamp)
    if np.any(alive == np.uint64(node)):
        return NodeState.ALIVE
    if len(graph.children([node]).get(int(node), [])) == 0:
        return NodeState.UNKNOWN
    return NodeState.SUPERSEDED


def node_exists(graph: Any, node: int, timestamp: float) -> bool:
    """Whether ``node`` is a node of the graph (alive or superseded), without reading its chunk.

    Cheaper than ``node_state`` on big chunks (a top-layer chunk holds every root): a node above
    layer 1 always has children, and a supervoxel has a layer-2 parent at any time after the build.
    """
    if not in_id_space(graph.meta, node):
        return False
    if ids.layer_of(node) == 1:
        return node_state(graph, node, timestamp) is NodeState.ALIVE
    return len(graph.children([int(node)]).get(int(node), [])) > 0


def chunk_overlaps(meta: Any, node: int, box: tuple[np.ndarray, np.ndarray]) -> bool:
    """Whether ``node``'s chunk overlaps ``box`` ([start, stop) absolute mip-0 voxels)."""
    layer = ids.layer_of(node)
    start, stop = meta.chunk_voxel_box(layer, ids.chunk_coords(meta.codec, node))
    return bool(np.all(start < box[1]) and np.all(box[0] < stop))


def walk_down(
    graph: Any,
    node: int,
    visit: Callable[[int], bool],
    box: tuple[Sequence[int], Sequence[int]] | None = None,
) -> None:
    """Breadth-first from ``node``: ``visit(n)`` says whether to go on to ``n``'s children.

    One ``children`` query per level; children never change, so no timestamp is needed below
    a node alive at it. ``box`` ([start, stop) absolute mip-0 voxels) skips nodes whose chunk
    does not overlap it, as the ChunkedGraph's ``bounds`` do.
    """
    bounds = None if box is None else (np.asarray(box[0]), np.asarray(box[1]))
    frontier = [int(node)]
    while frontier:
        if bounds is not None:
            frontier = [n for n in frontier if chunk_overlaps(graph.meta, n, bounds)]
        descend = [n for n in sorted(set(frontier)) if visit(n)]
        frontier = []
        if descend:
            for kids in graph.children(descend).values():
                frontier.extend(int(k) for k in kids)


def descendants(
    graph: Any,
    node: int,
    *,
    stop_layer: int = 1,
    box: tuple[Sequence[int], Sequence[int]] | None = None,
) -> np.ndarray:
    """Sorted ids under ``node`` at ``stop_layer`` (its leaves by default), within ``box``.

    Parents may skip layers: a node at or below ``stop_layer`` on the way down is kept as is.
    """
    found: list[int] = []

    def visit(current: int) -> bool:
        if ids.layer_of(current) <= stop_layer:
            found.append(current)
            return False
        return True

    walk_down(graph, node, visit, box)
    return np.unique(np.array(found, dtype=np.uint64))
