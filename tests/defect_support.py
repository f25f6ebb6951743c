"""Per-object edge defects of what a viewer assembles, beside a raw marching cubes of the voxels.

For every root of a meshed dataset: the mesh ``export-mesh`` assembles (the fragments of the
highest meshed nodes, de-duplicated as cloud-volume's graphene reader does), the root's mesh
as cloud-volume's graphene reader reads it back, and a marching cubes of the object's voxels
(zmesh, no simplification). All are counted by ``closedness.edge_defects`` with the volume's
faces allowed open. Each open or non-manifold edge of ours is also placed: on a layer-2 chunk
plane (within half a draco bin) or not.
"""

from __future__ import annotations

from dataclasses import dataclass

import DracoPy
import numpy as np
import zmesh
from cloudvolume import CloudVolume
from cloudvolume.mesh import Mesh

from meshing_core.config import GraphConfig
from meshing_core.graph import open_graph
from meshing_core.mesh import export
from meshing_core.mesh.closedness import EdgeDefects, edge_defects, edge_uses, weld
from meshing_core.mesh.watershed import mip_geometry
from meshing_core.store import files
from meshing_core.store.verify import read_back_graphene


@dataclass(frozen=True)
class ObjectDefects:
    root: int
    ours: EdgeDefects
    read_back: EdgeDefects  # the same fragments read by cloud-volume's graphene reader
    raw: EdgeDefects
    off_plane: int  # of ours' defective edges, those not on a layer-2 chunk plane
    zero_area: int  # stored triangles of zero area in the fragments


def _off_plane(vertices, faces, box, band, chunk_nm, origin) -> int:
    points, tris = weld(vertices, faces)
    edges, counts = edge_uses(tris)
    bad = edges[(counts == 1) | (counts > 2)]
    if len(bad) == 0:
        return 0
    ends = points[bad]  # (n, 2, 3)
    lo, hi = (np.asarray(b, dtype=np.float64) for b in box)
    on_face = ((np.abs(ends - lo) <= band).all(axis=1)).any(axis=1) | (
        (np.abs(ends - hi) <= band).all(axis=1)
    ).any(axis=1)
    rel = (ends - origin) / chunk_nm
    near = np.abs(rel - np.round(rel)) * chunk_nm <= band
    on_plane = (near[:, 0, :] & near[:, 1, :]).any(axis=1)
    return int(np.count_nonzero(~on_face & ~on_plane))


def object_defects(config: GraphConfig, timestamp: float, max_layer: int) -> list[ObjectDefects]:
    graph = open_graph(config)
    try:
        meta = graph.meta
        geometry = mip_geometry(meta, config.watershed, int(config.mip))
        res = geometry.resolution
        ws_info = files.read_json(config.watershed, "info") or {}
        grid = export.draco_grid_size(geometry, ws_info)
        origin = geometry.voxel_offset * res
        box = (origin, origin + (geometry.volume_size - 1) * res)
        chunk_nm = geometry.block_shape * res
        tolerance = grid / 2 + 1e-3  # the volume's faces, after the draco grid
        band = float(res.max()) + grid / 2  # seams: the cubes around a chunk plane
        shards = export.MeshShards(config.mesh_cloudpath, meta.codec, export.read_mesh_info(config))
        supervoxels = np.asarray(CloudVolume(config.watershed, progress=False)[:, :, :])[..., 0]
        present = np.unique(supervoxels[supervoxels != 0])
        l2 = graph.l2_ids(present, timestamp)
        roots = graph.roots(l2, timestamp)
        index = np.searchsorted(present, supervoxels)
        object_of = np.where(supervoxels != 0, roots[np.minimum(index, len(present) - 1)], 0)
        out = []
        for root in np.unique(roots).tolist():
            fragments, _ = export.collect_fragments(graph, shards, int(root), max_layer)
            mesh = export.stitch_fragments(
                fragments, layer2_chunk_nm=chunk_nm, offset_nm=origin, grid_size=grid
            )
            zero = 0
            for data in fragments.values():
                decoded = DracoPy.decode(data)
                points = np.asarray(decoded.points, dtype=np.float64).reshape(-1, 3)
                tri = points[np.asarray(decoded.faces, dtype=np.int64).reshape(-1, 3)]
                area = np.linalg.norm(
                    np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1
                )
                zero += int(np.count_nonzero(area == 0))
            back = Mesh.concatenate(*read_back_graphene(config, graph, fragments).values())
            mesher = zmesh.Mesher(tuple(float(r) for r in res))
            mesher.mesh((object_of == root).astype(np.uint8))
            raw = mesher.get(1, reduction_factor=0, voxel_centered=False)
            out.append(
                ObjectDefects(
                    root=int(root),
                    ours=edge_defects(mesh.vertices, mesh.faces, box, tolerance),
                    read_back=edge_defects(back.vertices, back.faces, box, tolerance),
                    raw=edge_defects(raw.vertices + origin, raw.faces, box, 1e-3),
                    off_plane=_off_plane(mesh.vertices, mesh.faces, box, band, chunk_nm, origin),
                    zero_area=zero,
                )
            )
        return out
    finally:
        graph.close()
