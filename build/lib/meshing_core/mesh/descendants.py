"""Which stored fragments make up a stitched node: its children's downstream multi-child nodes.

A node with one child has no fragment of its own (it reuses its child's), so a child is followed
down its single-child chain to the first node with several children, or to layer 2, whose
fragment exists. Parents may skip layers, so those nodes can sit at any lower layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from meshing_core import ids
from meshing_core.errors import MeshingError
from meshing_core.graph.protocol import ChunkedGraphReader


class GraphShapeError(MeshingError):
    """The graph holds a node above layer 2 without children."""


def downstream_multi_child(graph: ChunkedGraphReader, node_ids: Iterable[int]) -> dict[int, int]:
    """For each node, the first node of its single-child chain with >1 child, or at layer 2."""
    found = {int(n): int(n) for n in node_ids}
    frontier = sorted({n for n in found.values() if ids.layer_of(n) > 2})
    while frontier:
        kids = graph.children(frontier)
        step: dict[int, int] = {}
        for node in frontier:
            children = kids.get(node, np.zeros(0, dtype=np.uint64))
            if len(children) == 0:
                raise GraphShapeError(
                    f"node {node} at layer {ids.layer_of(node)} has no children: the graph is "
                    "incomplete (a failed ingest?); rebuild or repair it before meshing"
                )
            if len(children) == 1:
                step[node] = int(children[0])
        for start, node in found.items():
            if node in step:
                found[start] = step[node]
        frontier = sorted({n for n in step.values() if ids.layer_of(n) > 2})
    return found


def multi_child_plan(
    graph: ChunkedGraphReader, layer: int, coords: Sequence[int], timestamp: float
) -> dict[int, list[int]]:
    """Every node of a chunk alive at ``timestamp`` with >1 child -> its fragment sources, sorted."""
    nodes = [int(n) for n in graph.chunk_nodes(int(layer), coords, timestamp)]
    if not nodes:
        return {}
    kids = graph.children(nodes)
    multi = {n: [int(c) for c in kids[n]] for n in nodes if len(kids[n]) > 1}
    flat = [c for children in multi.values() for c in children]
    down = downstream_multi_child(graph, flat)
    return {node: sorted({down[c] for c in children}) for node, children in multi.items()}


def fragment_sources(graph: ChunkedGraphReader, node_id: int) -> list[int]:
    """The fragment sources of one node (its children, each followed down), sorted."""
    kids = graph.children([int(node_id)]).get(int(node_id), np.zeros(0, dtype=np.uint64))
    down = downstream_multi_child(graph, [int(c) for c in kids])
    return sorted(set(down.values()))
