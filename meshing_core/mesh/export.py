"""Mesh export: one object's mesh from the stored fragments, as a viewer would assemble it.

A viewer (neuroglancer's graphene source, cloud-volume's graphene reader) shows an object by
fetching the fragments of the highest meshed nodes under it and de-duplicating the vertices they
share on chunk boundaries. Export does the same from storage alone, so a user can check a mesh
without a CAVE server: walk down from the node; a node whose fragment is in its layer's shard
(and whose layer is meshed) is used, otherwise its children are tried; layer-2 nodes without a
fragment had no surface and are skipped. Fragments are read with ranged shard reads.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from meshing_core import ids
from meshing_core.config import GraphConfig
from meshing_core.errors import MeshingError
from meshing_core.graph import open_graph
from meshing_core.mesh.export_formats import format_of, write_mesh
from meshing_core.store import files, layout
from meshing_core.store.sharding import ShardReader, ShardSpec
from meshing_core.timestamps import format_timestamp, now, parse_timestamp

log = logging.getLogger(__name__)

WATERSHED_INFO = "info"


class ExportError(MeshingError):
    """An export that cannot be made: bad point or node, or nothing meshed for it."""


@dataclass(frozen=True)
class ExportReport:
    """What ``export_mesh`` wrote and from which fragments."""

    out: Path
    format: str
    node: int  # the exported node (the root of the point's supervoxel for --point)
    timestamp: float
    vertices: int
    faces: int
    fragments: tuple[int, ...]  # node ids whose stored fragments were used, sorted
    max_meshed_layer: int
    supervoxel: int | None = None
    skipped: tuple[int, ...] = field(default=())  # layer-2 nodes with no fragment


# -- inputs ---------------------------------------------------------------------------------
def meshed_at(custom: dict[str, Any]) -> float | None:
    """When the last finished run meshed (custom data ``mesh.initial_ts``), None if never."""
    stored = (custom.get("mesh") or {}).get("initial_ts")
    if stored is None:
        return None
    try:
        return parse_timestamp(stored)
    except MeshingError:
        log.warning("custom data mesh.initial_ts %r is not a timestamp: ignored", stored)
        return None


def meshing_timestamp(custom: dict[str, Any]) -> float:
    """The meshing timestamp of the last finished run (what the shards show), else now."""
    found = meshed_at(custom)
    return now() if found is None else found


def read_mesh_info(config: GraphConfig) -> dict[str, Any]:
    """The mesh dir's info (sharding per layer); one-line error when setup has not run."""
    where = f"{config.mesh_cloudpath}/{layout.MESH_INFO}"
    try:
        info = files.read_json(config.mesh_cloudpath, layout.MESH_INFO)
    except ValueError as exc:
        raise ExportError(f"mesh info {where} is not JSON: re-run setup and mesh") from exc
    if not isinstance(info, dict) or not isinstance(info.get("sharding"), dict):
        raise ExportError(
            f"nothing meshed: no mesh info at {where}: run `python -m meshing_core setup "
            f"--graph {config.source}` and `python -m meshing_core run --graph {config.source}`"
        )
    return info


def max_meshed_layer(config: GraphConfig, custom: dict[str, Any], n_layers: int) -> int | None:
    """Custom data ``mesh.max_layer`` if a run recorded it, else the highest layer with shards."""
    stored = (custom.get("mesh") or {}).get("max_layer")
    if stored is not None:
        try:
            return int(stored)
        except (TypeError, ValueError):
            log.warning("custom data mesh.max_layer %r is not a layer: looking at shards", stored)
    for layer in range(int(n_layers), 1, -1):
        prefix = layout.initial_prefix(layer) + "/"
        if any(n.endswith(".shard") for n in files.iter_files(config.mesh_cloudpath, prefix)):
            return layer
    return None


def draco_grid_size(geometry: Any, ws_info: dict[str, Any]) -> float:
    """The uniform draco bin viewers de-duplicate with: the info's, else the layer-2 bin."""
    from meshing_core.mesh.draco_grid import layer2_grid

    stored = (ws_info.get("mesh_metadata") or {}).get("uniform_draco_grid_size")
    if stored is not None:
        return float(stored)
    grid = layer2_grid(geometry.block_shape, geometry.resolution, np.zeros(3))
    return float(grid.bin_size)


def supervoxel_at(config: GraphConfig, point: Sequence[int]) -> int:
    """The watershed (layer-1) id at an absolute mip-0 voxel; one-line error outside the volume."""
    from meshing_core.mesh.watershed import open_watershed

    coords = [int(c) for c in point]
    if len(coords) != 3:
        raise ExportError(f"--point needs three voxel coordinates X Y Z, got {list(point)}")
    cv = open_watershed(config.watershed, 0)
    start = np.asarray(cv.meta.voxel_offset(0), dtype=np.int64)
    stop = start + np.asarray(cv.meta.volume_size(0), dtype=np.int64)
    if any(not s <= c < e for c, s, e in zip(coords, start, stop, strict=True)):
        raise ExportError(
            f"point {coords} is outside the segmentation: voxels {start.tolist()} to "
            f"{(stop - 1).tolist()} at mip 0 (voxel offset included)"
        )
    cutout = cv.download([slice(c, c + 1) for c in coords], mip=0)
    return int(np.asarray(cutout).reshape(-1)[0])


def _check_node(graph: Any, node: int, timestamp: float) -> None:
    """The node must exist and be alive at ``timestamp``; one-line error otherwise."""
    from meshing_core.graph.nodes import NodeState, node_state

    meta = graph.meta
    if ids.layer_of(node) == 1:
        raise ExportError(
            f"node {node} is a supervoxel (layer 1): pass --point at one of its voxels instead"
        )
    state = node_state(graph, node, timestamp)
    if state is NodeState.UNKNOWN:
        raise ExportError(
            f"unknown node {node}: it is not a node of graph {meta.graph_id} "
            f"(layers 2..{meta.n_layers}); pass a node id or use --point"
        )
    if state is NodeState.SUPERSEDED:
        raise ExportError(
            f"node {node} is not alive at {format_timestamp(timestamp)} (an edit replaced it, "
            "or made it later): "
            "pass a --timestamp at which it exists, or use --point to export the object there"
        )


# -- assembly -------------------------------------------------------------------------------
@dataclass(frozen=True)
class FragmentLocation:
    """Where one node's fragment lies: its chunk's shard (relative to the mesh dir) and bytes."""

    node: int
    shard: str  # initial/<layer>/<chunk position number>-0.shard
    offset: int  # absolute byte offset in the shard file
    size: int


class MeshShards:
    """Fragment lookups in the chunk shards of a mesh dir; one ranged reader per shard.

    ``readers`` may be shared between instances (a server keeps one bounded cache for all
    requests); by default each instance has its own.
    """

    def __init__(
        self,
        mesh_cloudpath: str,
        codec: ids.IdCodec,
        info: dict[str, Any],
        readers: Any = None,
    ):
        self.mesh_cloudpath = mesh_cloudpath
        self.codec = codec
        self.sharding = info["sharding"]
        self.readers: Any = {} if readers is None else readers

    def shard_of(self, node: int) -> str:
        """The node's chunk shard, relative to the mesh dir."""
        return layout.shard_key(self.codec, ids.chunk_id_of(self.codec, node))

    def reader(self, node: int) -> ShardReader | None:
        layer = ids.layer_of(node)
        spec = self.sharding.get(str(layer))
        if spec is None:
            return None
        key = self.shard_of(node)
        found = self.readers.get(key)
        if found is None:
            folder, _, name = f"{self.mesh_cloudpath}/{key}".rpartition("/")
            found = ShardReader(
                files.range_source(folder, name), ShardSpec.parse(spec), name=f"{folder}/{name}"
            )
            self.readers[key] = found
        return found

    def locate(self, node: int) -> FragmentLocation | None:
        reader = self.reader(node)
        where = None if reader is None else reader.locate(node)
        if where is None:
            return None
        return FragmentLocation(int(node), self.shard_of(node), int(where[0]), int(where[1]))

    def get(self, node: int) -> bytes | None:
        reader = self.reader(node)
        return None if reader is None else reader.get(node)


def highest_meshed(
    graph: Any,
    shards: MeshShards,
    node: int,
    max_layer: int,
    box: tuple[Sequence[int], Sequence[int]] | None = None,
) -> tuple[list[FragmentLocation], list[int]]:
    """The highest meshed nodes under ``node`` (sorted by id) and the layer-2 nodes without one.

    What a viewer fetches for an object: export and the server's manifest both call this.
    ``box`` ([start, stop) mip-0 voxels) keeps only nodes whose chunk overlaps it.
    """
    from meshing_core.graph.nodes import walk_down

    used: list[FragmentLocation] = []
    skipped: list[int] = []

    def visit(current: int) -> bool:
        layer = ids.layer_of(current)
        found = shards.locate(current) if layer <= max_layer else None
        if found is not None:
            used.append(found)
        elif layer <= 2:
            skipped.append(current)
        return found is None and layer > 2

    walk_down(graph, node, visit, box)
    return sorted(used, key=lambda f: f.node), sorted(skipped)


def collect_fragments(
    graph: Any, shards: MeshShards, node: int, max_layer: int
) -> tuple[dict[int, bytes], list[int]]:
    """``highest_meshed``'s fragments read (node id -> draco bytes) and the skipped nodes."""
    found, skipped = highest_meshed(graph, shards, node, max_layer)
    fragments: dict[int, bytes] = {}
    for where in found:
        data = shards.get(where.node)
        assert data is not None  # located a moment ago
        fragments[where.node] = data
    return fragments, skipped


def stitch_fragments(
    fragments: dict[int, bytes],
    *,
    layer2_chunk_nm: Sequence[float],
    offset_nm: Sequence[float],
    grid_size: float,
) -> Any:
    """One cloud-volume ``Mesh`` from draco fragments, de-duplicated as the graphene reader does.

    Vertices within half a draco bin of a chunk plane of their fragment's layer, and present
    exactly twice, are merged (cloud-volume's ``is_draco_chunk_aligned`` +
    ``deduplicate_vertices``), so an export matches what viewers show.
    """
    from cloudvolume.mesh import Mesh, is_draco_chunk_aligned

    meshes = [Mesh.from_draco(data, segid=key) for key, data in fragments.items()]
    base = np.asarray(layer2_chunk_nm, dtype=np.float64)
    offset = np.asarray(offset_nm, dtype=np.float64)
    masks = [
        is_draco_chunk_aligned(
            mesh.vertices - offset, base * 2 ** (ids.layer_of(key) - 2), draco_grid_size=grid_size
        )
        for key, mesh in zip(fragments, meshes, strict=True)
    ]
    merged = Mesh.concatenate(*meshes)
    return merged.deduplicate_vertices(np.concatenate(masks))


def _resolve_node(
    graph: Any, config: GraphConfig, point: Sequence[int] | None, node: int | None, ts: float
) -> tuple[int, int | None]:
    if (point is None) == (node is None):
        raise ExportError("export needs exactly one of --point X Y Z or --node ID")
    if node is not None:
        node = int(node)
        _check_node(graph, node, ts)
        return node, None
    assert point is not None
    supervoxel = supervoxel_at(config, point)
    if supervoxel == 0:
        raise ExportError(
            f"point {[int(c) for c in point]} is background (segment 0): pick a voxel inside an object"
        )
    l2 = int(np.asarray(graph.l2_ids(np.array([supervoxel], dtype=np.uint64), ts))[0])
    root = int(np.asarray(graph.roots(np.array([l2], dtype=np.uint64), ts))[0])
    return root, supervoxel


def export_mesh(
    config: GraphConfig,
    out: Path,
    *,
    point: tuple[int, int, int] | None = None,
    node: int | None = None,
    timestamp: float | None = None,
) -> ExportReport:
    """Write the mesh of the object at ``point`` (or of ``node``) to ``out`` (.ply or .obj).

    ``point`` is an absolute mip-0 voxel of the segmentation (voxel offset included); its
    supervoxel's root at ``timestamp`` is exported. ``timestamp`` defaults to the last run's
    meshing timestamp (custom data ``mesh.initial_ts``), else now. Vertices are in nm in the
    segmentation's world frame.
    """
    from meshing_core.mesh.watershed import mip_geometry

    out = Path(out)
    kind = format_of(out)  # before any work: a bad name is the cheapest mistake to report
    graph = open_graph(config)
    try:
        custom = graph.custom_data()
        ts = float(timestamp) if timestamp is not None else meshing_timestamp(custom)
        target, supervoxel = _resolve_node(graph, config, point, node, ts)
        info = read_mesh_info(config)
        top = max_meshed_layer(config, custom, graph.meta.n_layers)
        run_hint = f"`python -m meshing_core run --graph {config.source}`"
        if top is None:
            raise ExportError(
                f"nothing meshed: no shards under {config.mesh_cloudpath}/{layout.INITIAL}: "
                f"run {run_hint} (or `mesh --layer 2`) first"
            )
        shards = MeshShards(config.mesh_cloudpath, graph.meta.codec, info)
        fragments, skipped = collect_fragments(graph, shards, target, top)
        if not fragments:
            raise ExportError(
                f"nothing meshed for node {target} at {format_timestamp(ts)}: none of its "
                f"nodes has a fragment under {config.mesh_cloudpath}: run {run_hint} "
                "(at this timestamp)"
            )
        if skipped:
            log.info("%d layer-2 nodes of %d have no fragment (no surface)", len(skipped), target)
        geometry = mip_geometry(graph.meta, config.watershed, int(config.mip))
        ws_info = files.read_json(config.watershed, WATERSHED_INFO) or {}
    finally:
        graph.close()
    mesh = stitch_fragments(
        fragments,
        layer2_chunk_nm=geometry.block_shape * geometry.resolution,
        offset_nm=geometry.voxel_offset * geometry.resolution,
        grid_size=draco_grid_size(geometry, ws_info),
    )
    write_mesh(out, mesh.vertices, mesh.faces)
    report = ExportReport(
        out=out,
        format=kind,
        node=target,
        timestamp=ts,
        vertices=len(mesh.vertices),
        faces=len(mesh.faces),
        fragments=tuple(fragments),
        max_meshed_layer=top,
        supervoxel=supervoxel,
        skipped=tuple(skipped),
    )
    log.info(
        "exported node %d: %d vertices, %d faces from %d fragments to %s",
        target, report.vertices, report.faces, len(fragments), out,
    )  # fmt: skip
    return report
