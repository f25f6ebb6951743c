"""Helpers (no tests) for the store tests: a small hand-built graph, watershed and draco meshes.

Built with the graph's writer API and cloud-volume directly, so the store tests do not depend on
the graph builder.
"""

from __future__ import annotations

from pathlib import Path

import DracoPy
import numpy as np
from cloudvolume import CloudVolume

from meshing_core import ids
from meshing_core.config import GraphConfig, load_config, write_config
from meshing_core.graph.embedded import EmbeddedGraph
from meshing_core.graph.protocol import GraphMeta
from meshing_core.store import files, layout
from meshing_core.store.sharding import encode_shard

T0 = 1_600_000_000.0
T1 = T0 + 3600.0
VOLUME = (128, 128, 32)
CHUNK = (32, 32, 16)
RESOLUTION = (8, 8, 40)
N_LAYERS = 4  # layer-2 grid 4 x 4 x 2 -> ceil(log2 4) + 2
EDITED_CHUNK = (1, 1, 1)

_CUBE_FACES = np.array(
    [
        [0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
        [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3],
    ],
    dtype=np.uint32,
)  # fmt: skip


def write_watershed(folder: Path, mips: int = 2) -> str:
    """An empty precomputed uint64 segmentation with ``mips`` scales (x/y halved per mip)."""
    info = CloudVolume.create_new_info(
        num_channels=1,
        layer_type="segmentation",
        data_type="uint64",
        encoding="raw",
        resolution=list(RESOLUTION),
        voxel_offset=[0, 0, 0],
        volume_size=list(VOLUME),
        chunk_size=[32, 32, 16],
    )
    cloudpath = "file://" + str(folder.resolve())
    cv = CloudVolume(cloudpath, info=info, progress=False)
    for _ in range(mips - 1):
        cv.add_scale((2 ** (len(cv.info["scales"])), 2 ** (len(cv.info["scales"])), 1))
    cv.commit_info()
    return cloudpath


def build_graph(path: Path, watershed: str, big_chunk_nodes: int = 0) -> EmbeddedGraph:
    """A 4-layer graph: 1-3 nodes per layer-2 chunk (plus ``big_chunk_nodes`` in chunk 0,0,0),
    two nodes per layer-3 chunk, one root; at ``T1`` an edit replaces one node of chunk 1,1,1
    by two, so that chunk's largest count over history is one more than at ``T0``."""
    meta = GraphMeta(
        graph_id="tiny_graph",
        n_layers=N_LAYERS,
        spatial_bits=10,
        chunk_size=CHUNK,
        voxel_offset=(0, 0, 0),
        volume_size=VOLUME,
        resolution=RESOLUTION,
    )
    graph = EmbeddedGraph(path, watershed=watershed, create=True)
    codec = meta.codec
    rows: list[tuple[int, int, float]] = []
    for layer in range(2, N_LAYERS + 1):
        bx, by, bz = meta.layer_chunk_bounds(layer)
        for x in range(bx):
            for y in range(by):
                for z in range(bz):
                    if layer == 2:
                        count = 1 + (x + y + z) % 3
                        if (x, y, z) == (0, 0, 0):
                            count += big_chunk_nodes
                    else:
                        count = 2 if layer < N_LAYERS else 1
                    rows += [
                        (codec.node_id(layer, x, y, z, s), layer, T0) for s in range(1, count + 1)
                    ]
    graph.add_nodes(rows)
    edited = codec.node_id(2, *EDITED_CHUNK, 1)
    graph.expire_nodes([edited], T1)
    graph.add_nodes([(codec.node_id(2, *EDITED_CHUNK, s), 2, T1) for s in (10, 11)])
    graph.write_meta(meta, history=[T0, T1])
    graph.commit()
    return graph


def make_dataset(
    folder: Path, *, mip: int = 0, max_error: float = 40.0, big_chunk_nodes: int = 0
) -> GraphConfig:
    """Watershed + graph + graph.yaml in ``folder``; returns the loaded config."""
    folder.mkdir(parents=True, exist_ok=True)
    write_watershed(folder / "watershed")
    build_graph(folder / "graph.sqlite", "file://" + str((folder / "watershed").resolve()),
                big_chunk_nodes).close()  # fmt: skip
    write_config(
        folder,
        name="tiny",
        graph_file="graph.sqlite",
        watershed="watershed",
        mesh_dir="graphene_meshes",
        mip=mip,
        max_error=max_error,
        chunk_size=CHUNK,
        n_layers=N_LAYERS,
        spatial_bits=10,
    )
    return load_config(folder)


def cube(node_id: int, offset: np.ndarray, size: float = 40.0) -> np.ndarray:
    """Corners of a small cube placed by the node's segment id inside a chunk at ``offset`` nm."""
    seg = int(node_id) & 0xFFFF
    corner = np.asarray(offset, dtype=np.float64) + np.array(
        [(seg % 7) * 16.0, (seg // 7 % 7) * 16.0, (seg % 5) * 40.0]
    )
    bits = np.array([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], dtype=np.float64)
    return (corner + bits * size).astype(np.float32)


def draco_cube(vertices: np.ndarray) -> bytes:
    """A real draco mesh (12 triangles) of the given cube corners."""
    return DracoPy.encode(vertices, _CUBE_FACES, quantization_bits=16)


def chunk_offset_nm(meta: GraphMeta, layer: int, coords: tuple[int, int, int]) -> np.ndarray:
    start, _ = meta.chunk_voxel_box(layer, coords)
    return start * np.asarray(meta.resolution)


def write_cube_shards(
    config: GraphConfig, graph: EmbeddedGraph, timestamp: float, sharding: dict
) -> dict[int, np.ndarray]:
    """One shard per chunk of every layer, a draco cube per alive node; returns node -> corners."""
    meta = graph.meta
    written: dict[int, np.ndarray] = {}
    for layer in range(2, meta.n_layers + 1):
        bx, by, bz = meta.layer_chunk_bounds(layer)
        for coords in np.ndindex(bx, by, bz):
            nodes = graph.chunk_nodes(layer, coords, timestamp)
            if nodes.size == 0:
                continue
            offset = chunk_offset_nm(meta, layer, coords)
            fragments = {}
            for node in nodes:
                corners = cube(int(node), offset)
                fragments[int(node)] = draco_cube(corners)
                written[int(node)] = corners
            chunk_id = meta.chunk_id(layer, coords)
            files.write_atomic(
                config.mesh_cloudpath,
                layout.shard_key(meta.codec, chunk_id),
                encode_shard(fragments, sharding[str(layer)]),
            )
    return written


def layer_of(node_id: int) -> int:
    return ids.layer_of(node_id)
