"""Where meshes live under ``<watershed>/<mesh dir>``: the names cloud-volume's graphene reader expects.

``initial/<layer>/<chunk position number>-<shard number>.shard`` holds the sharded meshes of one
chunk (shard number 0: one shard per chunk), ``dynamic/`` the unsharded post-edit meshes.
"""

from __future__ import annotations

from typing import Any

from meshing_core import ids

MESH_INFO = "info"
INITIAL = "initial"
DYNAMIC = "dynamic"


def shard_name(codec: ids.IdCodec, chunk_id: int) -> str:
    """File name of a chunk's shard: ``<chunk position number>-0.shard``."""
    return f"{ids.chunk_position_number(codec, chunk_id)}-0.shard"


def chunk_shard_name(meta: Any, layer: int, coords: Any) -> str:
    """Shard file name of the chunk at ``coords`` of ``layer`` (``meta``: a graph's GraphMeta)."""
    return shard_name(meta.codec, meta.chunk_id(layer, coords))


def initial_prefix(layer: int) -> str:
    """Shard folder of one layer, relative to the mesh dir: ``initial/<layer>``."""
    return f"{INITIAL}/{int(layer)}"


def shard_key(codec: ids.IdCodec, chunk_id: int) -> str:
    """A chunk's shard relative to the mesh dir: ``initial/<layer>/<cpn>-0.shard``."""
    return f"{initial_prefix(ids.layer_of(chunk_id))}/{shard_name(codec, chunk_id)}"


def initial_dir(config: Any, layer: int) -> str:
    """Cloud path of one layer's shards: ``<watershed>/<mesh dir>/initial/<layer>``."""
    return f"{config.mesh_cloudpath}/{initial_prefix(layer)}"


def dynamic_dir(config: Any) -> str:
    """Cloud path of the unsharded (post-edit) meshes: ``<watershed>/<mesh dir>/dynamic``."""
    return f"{config.mesh_cloudpath}/{DYNAMIC}"


def dynamic_name(node_id: int, start: tuple[int, int, int], stop: tuple[int, int, int]) -> str:
    """Unsharded mesh name ``<node id>:0:<x0>-<x1>_<y0>-<y1>_<z0>-<z1>`` (ChunkedGraph style)."""
    spans = "_".join(f"{int(a)}-{int(b)}" for a, b in zip(start, stop, strict=True))
    return f"{int(node_id)}:0:{spans}"
