"""Stitching one layer-L chunk (L >= 3): each multi-child node's mesh from its children's fragments.

For every node of the chunk alive at the timestamp with more than one child, the fragments of
its children (each followed down its single-child chain, see ``descendants``) are read one by
one from the lower-layer shards (``fragments``: ranged reads, never whole shards), re-quantised
through the draco grid of each layer in between (``layer_grids``), concatenated, and stored on
the chunk's own grid: coincident vertices welded, walls between touching children removed, flat
triangles split away (``draco_grid.collapse_on_grid``, ``merge``). Fragments are
streamed into the shard in canonical order, so a task holds one node mesh at a time and the
bytes do not depend on anything but the inputs.

A node whose mesh would exceed the triangle limit is skipped (its children's fragments remain
what a viewer shows) and reported. A stitched node missing from its existing shard was skipped
or empty there; its own sources are used instead, so an ancestor of a skipped node is skipped
too rather than written half-way. A chunk with multi-child nodes always gets a shard (empty when
all were skipped or empty), so a missing child shard always means unfinished or lost work and
fails the parent chunk, as a corrupt one does, leaving its shard untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from meshing_core import ids
from meshing_core.config import positive_int
from meshing_core.errors import MeshingError
from meshing_core.graph.protocol import ChunkedGraphReader
from meshing_core.mesh.closedness import ClosednessTally, edge_defects
from meshing_core.mesh.descendants import fragment_sources, multi_child_plan
from meshing_core.mesh.draco_grid import collapse_on_grid, encode_draco
from meshing_core.mesh.fragments import FragmentSource, StitchInputError
from meshing_core.mesh.layer_grids import LayerGrids, layer_grids
from meshing_core.mesh.merge import concatenate, drop_walls
from meshing_core.mesh.watershed import mip_geometry
from meshing_core.store import files, layout
from meshing_core.store.sharding import ShardFormatError, ShardWriter, fragment_order

log = logging.getLogger(__name__)

# Neuroglancer decodes a fragment in one go in its draco WASM module; meshes much above ~2M
# triangles fail or stall there, so larger nodes are left to their children.
DEFAULT_MAX_TRIANGLES = 2_000_000


class StitchError(MeshingError):
    """A layer-L chunk that cannot be stitched (its inputs are missing or corrupt)."""


@dataclass(frozen=True)
class StitchOutcome:
    """What stitching one chunk produced."""

    fragments: int
    bytes: int
    skipped: tuple[int, ...] = ()
    removed_stale: bool = False
    largest_triangles: int = 0
    unclosed: int = 0
    """Fragments written with open edges away from the chunk's faces or non-manifold edges."""


def max_triangles_of(config: Any) -> int:
    """The size limit: ``mesh.max_triangles`` of graph.yaml, else ``DEFAULT_MAX_TRIANGLES``."""
    mesh = (getattr(config, "raw", None) or {}).get("mesh") or {}
    value = mesh.get("max_triangles") if isinstance(mesh, dict) else None
    if value is None:
        return DEFAULT_MAX_TRIANGLES
    source = getattr(config, "source", "graph.yaml")
    return positive_int(value, "mesh.max_triangles", source, StitchError)


def _node_mesh(
    graph: ChunkedGraphReader,
    source: FragmentSource,
    grids: LayerGrids,
    layer: int,
    sources: Sequence[int],
    limit: int,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The merged mesh of one node, or None when it would exceed ``limit`` triangles."""
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    triangles = 0
    pending = list(sources)
    while pending:
        node = pending.pop(0)
        mesh = source.decoded(node)
        if mesh is None:
            if ids.layer_of(node) > 2:  # skipped or empty at its layer: use what it was made of
                pending[0:0] = fragment_sources(graph, node)
            continue  # a layer-2 node without a surface at the mesh mip has no fragment
        vertices, faces = mesh
        triangles += len(faces)
        if triangles > limit:
            return None
        parts.append((grids.requantise(vertices, ids.layer_of(node), layer - 1), faces))
    return concatenate(parts)  # storing welds every coincident vertex, mid-planes' included


def _fragment_source(
    graph: ChunkedGraphReader, config: Any, sharding: Mapping[str, Any], timestamp: float
) -> FragmentSource:
    def layer2_is_empty(child: tuple[int, int, int]) -> bool:
        from meshing_core.mesh.layer2 import mesh_chunk

        return not mesh_chunk(graph, config, child, timestamp)

    return FragmentSource(
        config.mesh_cloudpath, graph.meta.codec, sharding, layer2_is_empty=layer2_is_empty
    )


def node_mesh(
    graph: ChunkedGraphReader,
    config: Any,
    node_id: int,
    timestamp: float,
    sharding: Mapping[str, Any],
    max_triangles: int | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The merged mesh (nm, before draco, walls removed) stitching builds for one node.

    None when it would exceed the triangle limit. For checks and exports of single nodes.
    """
    meta = graph.meta
    layer = ids.layer_of(int(node_id))
    geometry = mip_geometry(meta, config.watershed, int(config.mip))
    grids = layer_grids(meta, geometry, layer)
    limit = max_triangles_of(config) if max_triangles is None else int(max_triangles)
    mesh = _node_mesh(
        graph,
        _fragment_source(graph, config, sharding, timestamp),
        grids,
        layer,
        fragment_sources(graph, int(node_id)),
        limit,
    )
    return None if mesh is None else drop_walls(*mesh)


def stitch_chunk(
    graph: ChunkedGraphReader,
    config: Any,
    layer: int,
    coords: Sequence[int],
    timestamp: float,
    sharding: Mapping[str, Any],
    max_triangles: int | None = None,
) -> StitchOutcome:
    """Stitch one layer-``layer`` chunk and publish its shard atomically (see module doc).

    ``sharding`` maps layer (as a string) to its spec, as the mesh info's ``sharding`` does.
    """
    layer = int(layer)
    coords = tuple(int(c) for c in coords)
    meta = graph.meta
    codec = meta.codec
    chunk = meta.chunk_id(layer, coords)
    folder = layout.initial_dir(config, layer)
    name = layout.shard_name(codec, chunk)
    limit = max_triangles_of(config) if max_triangles is None else int(max_triangles)
    plan = multi_child_plan(graph, layer, coords, timestamp)
    if not plan:
        stale = files.exists(folder, name)
        if stale:
            files.delete_file(folder, name)
        return StitchOutcome(0, 0, removed_stale=stale)

    geometry = mip_geometry(meta, config.watershed, int(config.mip))
    grids = layer_grids(meta, geometry, layer)
    grid = grids.grid(layer, coords)

    source = _fragment_source(graph, config, sharding, timestamp)
    spec = sharding[str(layer)]
    skipped: list[int] = []
    written = largest = 0
    lo, hi, tolerance = grids.cut_box(layer, coords)
    closedness = ClosednessTally()
    try:
        with files.atomic_writer(folder, name) as fh:
            writer = ShardWriter(fh, spec)
            for node in fragment_order(list(plan), spec):
                mesh = _node_mesh(graph, source, grids, layer, plan[node], limit)
                if mesh is None:
                    skipped.append(node)
                    log.warning(
                        "node %d (layer-%d chunk %s) has more than %d triangles: not written, "
                        "its children stand for it", node, layer, list(coords), limit,
                    )  # fmt: skip
                    continue
                vertices, faces = mesh
                del mesh  # the largest node's arrays: none held longer than needed
                if len(faces) == 0:
                    continue
                vertices, faces = collapse_on_grid(
                    vertices, faces, grid, walls=True, overwrite=True
                )
                if len(faces) == 0:  # flattened on this layer's grid: nothing to store
                    continue
                closedness.add(edge_defects(vertices, faces, (lo, hi), tolerance, welded=True))
                vertices = vertices.astype(np.float32)  # what draco takes (grid points: exact)
                data = encode_draco(vertices, faces, grid)
                del vertices
                largest = max(largest, len(faces))
                writer.add(node, data)
                written += 1
            size = writer.finish()
    except (StitchInputError, ShardFormatError) as exc:
        raise StitchError(
            f"layer-{layer} chunk {list(coords)} not stitched, nothing written: {exc}"
        ) from exc
    except MeshingError:
        raise
    except Exception as exc:
        exc.add_note(f"while stitching layer-{layer} chunk {list(coords)}")
        raise
    log.debug(
        "layer-%d chunk %s: %d nodes, %d fragments, %d skipped, %d fragments read (%d bytes)",
        layer, list(coords), len(plan), written, len(skipped), source.fragments_read,
        source.bytes_read,
    )  # fmt: skip
    return StitchOutcome(
        written, size, tuple(skipped), largest_triangles=largest, unclosed=closedness.unclosed
    )
