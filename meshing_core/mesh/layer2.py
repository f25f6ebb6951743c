"""Meshing one layer-2 chunk: watershed -> layer-2 labels -> bounded meshes -> draco fragments.

The chunk is read with a +1 voxel overlap whose voxels are relabelled to the in-chunk nodes they
connect to (see ``overlap``), so each node's mesh reaches the plane it shares with the next chunk
and the two sides meet there. Nodes of one object that touch in the chunk keep identical walls
(``simplify``), which stitching removes (``merge``). Vertices are in nm at the chunk's world
offset and are quantised on the chunk's draco grid, aligned to the global grid all chunks share.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import fastremap
import numpy as np

from meshing_core.graph.protocol import ChunkedGraphReader
from meshing_core.mesh.closedness import ClosednessTally, edge_defects
from meshing_core.mesh.draco_grid import DracoGrid, collapse_on_grid, encode_draco, layer2_grid
from meshing_core.mesh.layer_grids import layer_grids
from meshing_core.mesh.overlap import resolve_overlap
from meshing_core.mesh.watershed import MipGeometry, mip_geometry, read_chunk

log = logging.getLogger(__name__)


def chunk_grid(geometry: MipGeometry, coords: Sequence[int]) -> DracoGrid:
    """The draco grid of a layer-2 chunk (full block shape, also for clipped edge chunks)."""
    return layer2_grid(geometry.block_shape, geometry.resolution, geometry.chunk_offset_nm(coords))


def chunk_labels(
    graph: ChunkedGraphReader,
    supervoxels: np.ndarray,
    inner: tuple[int, int, int],
    coords: Sequence[int],
    timestamp: float,
) -> np.ndarray:
    """Layer-2 labels of a chunk read with its overlap: in-chunk nodes, overlap resolved, else 0.

    Two graph calls: the supervoxels' layer-2 parents, and (with an overlap) those nodes'
    ancestors at the overlap layer (DESIGN.md's rule, the ChunkedGraph's own).
    """
    svs = np.asarray(supervoxels, dtype=np.uint64)
    unique = fastremap.unique(svs)
    unique = unique[unique != 0]
    if unique.size == 0:
        return np.zeros(svs.shape, dtype=np.uint64)
    parents = np.asarray(graph.l2_ids(unique, timestamp), dtype=np.uint64)
    l2 = fastremap.remap(
        svs, {0: 0, **dict(zip(unique.tolist(), parents.tolist(), strict=True))}
    ).astype(np.uint64)
    if l2.shape == inner:
        return l2
    present = fastremap.unique(parents)
    stop_layer = graph.meta.overlap_layer(coords)
    ancestors = np.asarray(graph.ancestors(present, stop_layer, timestamp), dtype=np.uint64)
    ancestor_of = dict(zip(present.tolist(), ancestors.tolist(), strict=True))
    return resolve_overlap(l2, inner, ancestor_of)


def touching_pairs(labels: np.ndarray) -> np.ndarray:
    """Pairs (a < b) of nonzero labels with face-adjacent voxels, sorted, unique."""
    found = []
    for axis in range(3):
        a = np.moveaxis(labels, axis, 0)
        left, right = a[:-1].ravel(), a[1:].ravel()
        differ = (left != right) & (left != 0) & (right != 0)
        if differ.any():
            found.append(np.sort(np.stack([left[differ], right[differ]], axis=1), axis=1))
    if not found:
        return np.zeros((0, 2), dtype=labels.dtype)
    return np.unique(np.concatenate(found), axis=0)


def joined_pairs(
    graph: ChunkedGraphReader, compact: np.ndarray, nodes: np.ndarray, timestamp: float
) -> np.ndarray:
    """Touching label pairs (compact labels) whose nodes belong to one object at ``timestamp``.

    Their walls are kept identical on both sides so stitching removes them (``merge``). One
    graph call (the roots of the nodes that touch another node), none when none do.
    """
    pairs = touching_pairs(compact)
    if len(pairs) == 0:
        return pairs
    involved = np.unique(pairs)
    roots = np.asarray(graph.roots(nodes[involved.astype(np.int64) - 1], timestamp))
    root = np.zeros(int(involved.max()) + 1, dtype=np.uint64)
    root[involved.astype(np.int64)] = roots
    index = pairs.astype(np.int64)
    return pairs[root[index[:, 0]] == root[index[:, 1]]]


def mesh_chunk(
    graph: ChunkedGraphReader,
    config: Any,
    coords: tuple[int, int, int],
    timestamp: float,
    closedness: ClosednessTally | None = None,
) -> dict[int, bytes]:
    """Draco mesh of every layer-2 node of a chunk at ``timestamp``, keyed by node id (sorted).

    ``config`` is a ``GraphConfig`` (watershed path, mesh mip, max_error). Nodes whose surface is
    empty at the mesh mip get no fragment. Each fragment, as stored, is checked for open edges
    away from the chunk's faces and for non-manifold edges into ``closedness`` when given.
    """
    from meshing_core.mesh import simplify  # written alongside; imported late on purpose

    coords = tuple(int(c) for c in coords)  # type: ignore[assignment]
    geometry = mip_geometry(graph.meta, config.watershed, int(config.mip))
    svs, inner = read_chunk(config.watershed, geometry, coords)
    labels = chunk_labels(graph, svs, inner, coords, timestamp)
    del svs
    nodes = fastremap.unique(labels)
    nodes = nodes[nodes != 0]
    if nodes.size == 0:
        return {}
    # Small consecutive labels in node-id order: cheaper for marching cubes, same for any rerun.
    compact = fastremap.remap(
        labels, {0: 0, **{int(n): i + 1 for i, n in enumerate(nodes.tolist())}}
    ).astype(np.uint32)
    del labels
    offset_nm = geometry.chunk_offset_nm(coords)
    joined = joined_pairs(graph, compact, nodes, timestamp)
    meshes = simplify.mesh_labels(
        compact, geometry.resolution, offset_nm, float(config.max_error), joined=joined
    )
    grid = chunk_grid(geometry, coords)
    lo, hi, tolerance = layer_grids(graph.meta, geometry, 2).cut_box(2, coords)
    fragments: dict[int, bytes] = {}
    for label in sorted(meshes):
        vertices, faces = collapse_on_grid(*meshes[label], grid)
        if len(faces) == 0:  # a speck flattened by the grid has no surface to store
            continue
        if closedness is not None:
            closedness.add(edge_defects(vertices, faces, (lo, hi), tolerance))
        data = encode_draco(vertices, faces, grid, collapse=False)
        if data is not None:
            fragments[int(nodes[int(label) - 1])] = data
    log.debug("chunk %s: %d nodes, %d fragments", coords, nodes.size, len(fragments))
    return fragments
