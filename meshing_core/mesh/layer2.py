"""Meshing one layer-2 chunk: watershed -> layer-2 labels -> bounded meshes -> draco fragments.

The chunk is read with a one-voxel margin on every side; each marching-cubes cube on a seam is
meshed, for each object, by the one chunk that owns it (see ``overlap``), so neighbouring
chunks' meshes meet exactly and an object is closed even where only one side has it. Nodes of
one object that touch in the chunk keep identical walls (``simplify``), which stitching removes
(``merge``). Vertices are in nm at the chunk's world
offset and are quantised on the chunk's draco grid, aligned to the global grid all chunks share.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import fastremap
import numpy as np

from meshing_core.graph.protocol import ChunkedGraphReader
from meshing_core.mesh.closedness import ClosednessTally, edge_defects
from meshing_core.mesh.draco_grid import DracoGrid, collapse_on_grid, encode_draco, layer2_grid
from meshing_core.mesh.layer_grids import layer_grids
from meshing_core.mesh.overlap import OwnBox, margin_labels, owned_faces
from meshing_core.mesh.watershed import ChunkBlock, MipGeometry, mip_geometry, read_chunk

log = logging.getLogger(__name__)


def chunk_grid(geometry: MipGeometry, coords: Sequence[int]) -> DracoGrid:
    """The draco grid of a layer-2 chunk (full block shape, also for clipped edge chunks)."""
    return layer2_grid(geometry.block_shape, geometry.resolution, geometry.chunk_offset_nm(coords))


@dataclass(frozen=True)
class ChunkLabels:
    """A chunk's voxels as marching cubes sees them, and the objects they belong to."""

    labels: np.ndarray  # layer-2 node per voxel: own nodes; margin voxels as ``overlap`` says
    roots: np.ndarray  # root per voxel at the timestamp (0: background), margin included
    root_of: dict[int, int]  # layer-2 node -> root, for every node present
    box: OwnBox


def chunk_labels(graph: ChunkedGraphReader, block: ChunkBlock, timestamp: float) -> ChunkLabels:
    """Layer-2 labels of a chunk read with its margin, and every voxel's object.

    Two graph calls: the supervoxels' layer-2 parents, and those nodes' roots.
    """
    svs = np.asarray(block.supervoxels, dtype=np.uint64)
    unique = fastremap.unique(svs)
    unique = unique[unique != 0]
    if unique.size == 0:
        zeros = np.zeros(svs.shape, dtype=np.uint64)
        return ChunkLabels(zeros, zeros, {}, block.box)
    parents = np.asarray(graph.l2_ids(unique, timestamp), dtype=np.uint64)
    present = fastremap.unique(parents)
    roots = np.asarray(graph.roots(present, timestamp), dtype=np.uint64)
    root_of = dict(zip(present.tolist(), roots.tolist(), strict=True))
    parent_of = dict(zip(unique.tolist(), parents.tolist(), strict=True))
    l2 = fastremap.remap(svs, {0: 0, **parent_of}).astype(np.uint64, copy=False)
    root_map = {0: 0, **{sv: root_of[p] for sv, p in parent_of.items()}}
    root_volume = fastremap.remap(svs, root_map).astype(np.uint64, copy=False)
    return ChunkLabels(margin_labels(l2, root_volume, block.box), root_volume, root_of, block.box)


def touching_pairs(labels: np.ndarray) -> np.ndarray:
    """Pairs (a < b) of nonzero labels with face-adjacent voxels, sorted, unique."""
    width = np.uint64(int(labels.max()) + 1)
    found = []
    for axis in range(3):
        a = np.moveaxis(labels, axis, 0)
        left, right = a[:-1], a[1:]  # views: no copy of the chunk per axis
        differ = left != right
        differ &= left != 0
        differ &= right != 0
        if differ.any():
            a, b = left[differ].astype(np.uint64), right[differ].astype(np.uint64)
            found.append(np.unique(np.minimum(a, b) * width + np.maximum(a, b)))  # 1-d keys
    if not found:
        return np.zeros((0, 2), dtype=labels.dtype)
    keys = np.unique(np.concatenate(found))
    return np.stack([keys // width, keys % width], axis=1).astype(labels.dtype)


def joined_pairs(compact: np.ndarray, nodes: np.ndarray, root_of: dict[int, int]) -> np.ndarray:
    """Touching label pairs (compact labels) whose nodes belong to one object at the timestamp.

    Their walls are kept identical on both sides so stitching removes them (``merge``).
    """
    pairs = touching_pairs(compact)
    if len(pairs) == 0:
        return pairs
    root = np.array([0] + [root_of[int(n)] for n in nodes.tolist()], dtype=np.uint64)
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
    block = read_chunk(config.watershed, geometry, coords)
    chunk = chunk_labels(graph, block, timestamp)
    nodes = fastremap.unique(chunk.labels)
    nodes = nodes[nodes != 0]
    if nodes.size == 0:
        return {}
    # Small consecutive labels in node-id order: cheaper for marching cubes, same for any rerun.
    compact = fastremap.remap(
        chunk.labels, {0: 0, **{int(n): i + 1 for i, n in enumerate(nodes.tolist())}}
    ).astype(np.uint32)
    node_roots = [chunk.root_of[int(n)] for n in nodes.tolist()]

    def owned(label: int, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
        root = node_roots[label - 1]
        return owned_faces(vertices, faces, geometry.resolution, chunk.roots, root, chunk.box)

    grid = chunk_grid(geometry, coords)
    meshes = simplify.mesh_labels(
        compact,
        geometry.resolution,
        block.offset_nm(geometry.resolution),
        float(config.max_error),
        joined=joined_pairs(compact, nodes, chunk.root_of),
        keep=owned,
        grid=grid,
    )
    lo, hi, tolerance = layer_grids(graph.meta, geometry, 2).cut_box(2, coords)
    fragments: dict[int, bytes] = {}
    for label in sorted(meshes):
        vertices, faces = collapse_on_grid(*meshes[label], grid)
        if len(faces) == 0:  # a speck flattened by the grid has no surface to store
            continue
        if closedness is not None:
            closedness.add(edge_defects(vertices, faces, (lo, hi), tolerance, welded=True))
        fragments[int(nodes[int(label) - 1])] = encode_draco(vertices, faces, grid)
    log.debug("chunk %s: %d nodes, %d fragments", coords, nodes.size, len(fragments))
    return fragments
