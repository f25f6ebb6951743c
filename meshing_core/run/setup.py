"""One-time mesh setup of a dataset: the settings every reader and later run depends on.

Writes (1) ``info["mesh"]`` of the watershed, (2) the sharded mesh ``info`` under the mesh dir
and (3) the static part of the graph's ``mesh`` custom data (dir, mip, max_error, verify).
Re-running with the same config changes nothing. Changing mip, max_error or sharding of a mesh
dir that already holds shards would silently mix incompatible meshes, so it is refused unless
``reset`` deletes those shards first.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from meshing_core.config import GraphConfig
from meshing_core.errors import MeshingError
from meshing_core.graph import open_graph
from meshing_core.mesh.watershed import block_shape_at_mip
from meshing_core.run.lease import LEASE
from meshing_core.store import files, layout
from meshing_core.store.sharding import mesh_shard_spec, minishard_bits_for

log = logging.getLogger(__name__)

WATERSHED_INFO = "info"
MESH_INFO_TYPE = "neuroglancer_legacy_mesh"
# Post-edit meshes belong to the ChunkedGraph server, not to initial meshing: a reset keeps them.
# ... and the lease of the run (or `setup`) doing the reset
_RESET_KEEPS = (layout.DYNAMIC + "/", LEASE)
_RUN_FIELDS = ("max_layer", "initial_ts")  # written by a finished run, not by setup


class SetupError(MeshingError):
    """Mesh setup cannot proceed; the message names what differs and how to proceed."""


def mesh_chunk_size(
    graph_chunk_size: tuple[int, int, int], scales: list[dict[str, Any]], mip: int
) -> list[int]:
    """Layer-2 chunk size in voxels of mesh mip ``mip``, exactly as meshing computes it."""
    size = block_shape_at_mip(graph_chunk_size, scales[0]["resolution"], scales[mip]["resolution"])
    return [int(v) for v in size]


def mesh_info(
    config: GraphConfig, graph_chunk_size: tuple[int, int, int], scales: list[dict], counts: dict
) -> dict[str, Any]:
    """The mesh dir's ``info``; ``counts`` maps layer -> largest node count of its chunks."""
    return {
        "@type": MESH_INFO_TYPE,
        "mip": int(config.mip),
        "chunk_size": mesh_chunk_size(graph_chunk_size, scales, config.mip),
        "spatial_index": None,
        "sharding": {
            str(layer): mesh_shard_spec(minishard_bits_for(count))
            for layer, count in sorted(counts.items())
        },
    }


def static_mesh_block(config: GraphConfig) -> dict[str, Any]:
    """The part of custom data ``mesh`` known before meshing: dir, mip, max_error, verify."""
    max_error: float | int = float(config.max_error)
    if max_error.is_integer():
        max_error = int(max_error)
    return {
        "dir": config.mesh_dir,
        "mip": int(config.mip),
        "max_error": max_error,
        "verify": bool(config.verify),
    }


def has_shards(mesh_cloudpath: str) -> bool:
    """True when any shard exists under ``<mesh dir>/initial/`` (stops at the first)."""
    return any(
        name.endswith(".shard") for name in files.iter_files(mesh_cloudpath, layout.INITIAL + "/")
    )


def _read_watershed_info(config: GraphConfig) -> dict[str, Any]:
    path = f"{config.watershed.rstrip('/')}/{WATERSHED_INFO}"
    try:
        info = files.read_json(config.watershed, WATERSHED_INFO)
    except ValueError as exc:
        raise SetupError(f"watershed info {path} is not valid JSON ({exc}): rebuild it") from exc
    if info is None:
        raise SetupError(
            f"watershed info {path} not found: run `python -m meshing_core build-graph` first"
        )
    if not isinstance(info, dict) or not info.get("scales"):
        raise SetupError(f"watershed info {path} has no scales: rebuild it with build-graph")
    return info


def _check_config(config: GraphConfig, graph_meta: Any, ws_info: dict[str, Any]) -> None:
    if tuple(config.chunk_size) != tuple(graph_meta.chunk_size):
        raise SetupError(
            f"{config.source}: chunk_size {list(config.chunk_size)} differs from the graph's "
            f"{list(graph_meta.chunk_size)}: fix graph.yaml or rebuild the graph"
        )
    if int(config.n_layers) != int(graph_meta.n_layers):
        raise SetupError(
            f"{config.source}: n_layers {config.n_layers} differs from the graph's "
            f"{graph_meta.n_layers}: fix graph.yaml or rebuild the graph"
        )
    n_scales = len(ws_info["scales"])
    if not 0 <= config.mip < n_scales:
        raise SetupError(
            f"{config.source}: mesh.mip {config.mip} is not a scale of watershed "
            f"{config.watershed} (scales 0..{n_scales - 1}): downsample the watershed or lower it"
        )


def _differences(
    stored_info: dict[str, Any] | None,
    new_info: dict[str, Any],
    stored_block: dict[str, Any],
    new_block: dict[str, Any],
) -> list[str]:
    """Protected settings that differ, as 'field old -> new' phrases."""
    found: list[str] = []
    if stored_info is None:
        found.append("no mesh info")
    else:
        for key in ("mip", "chunk_size"):
            if stored_info.get(key) != new_info[key]:
                found.append(f"{key} {stored_info.get(key)} -> {new_info[key]}")
        old_sharding = stored_info.get("sharding") or {}
        for layer in sorted(set(old_sharding) | set(new_info["sharding"]), key=int):
            old = old_sharding.get(layer)
            new = new_info["sharding"].get(layer)
            if old != new:
                old_bits = None if old is None else old.get("minishard_bits")
                new_bits = None if new is None else new.get("minishard_bits")
                found.append(f"sharding of layer {layer} (minishard_bits {old_bits} -> {new_bits})")
    if stored_block.get("dir") == new_block["dir"] and "max_error" in stored_block:
        old_error = stored_block["max_error"]
        try:
            same = float(old_error) == float(new_block["max_error"])
        except (TypeError, ValueError):
            same = False
        if not same:
            found.append(f"max_error {old_error} -> {new_block['max_error']}")
    return found


def replace_mesh_block(graph: Any, block: dict[str, Any], changed: str = "written") -> str:
    """Store ``block`` as the graph's custom data ``mesh`` when it differs; say which happened."""
    custom = graph.custom_data()
    if (custom.get("mesh") or {}) == block:
        return "unchanged"
    custom["mesh"] = block
    graph.set_custom_data(custom)
    return changed


def setup_meshes(config: GraphConfig, *, reset: bool = False) -> dict[str, Any]:
    """Write the mesh settings of ``config``; returns what changed (each part or 'unchanged').

    With ``reset`` the mesh dir's shards (and every other file under it except ``dynamic/``)
    are deleted first, together with the run-written ``max_layer``/``initial_ts``.
    """
    ws_info = _read_watershed_info(config)
    mesh_path = config.mesh_cloudpath
    graph = open_graph(config)
    try:
        meta = graph.meta
        _check_config(config, meta, ws_info)
        counts = {layer: graph.max_chunk_node_count(layer) for layer in range(2, meta.n_layers + 1)}
        new_info = mesh_info(config, meta.chunk_size, ws_info["scales"], counts)
        new_info = json.loads(json.dumps(new_info))
        new_block = static_mesh_block(config)
        custom = graph.custom_data()
        stored_block = dict(custom.get("mesh") or {})

        try:
            stored_info = files.read_json(mesh_path, layout.MESH_INFO)
        except ValueError as exc:
            if not reset:
                raise SetupError(
                    f"mesh info {mesh_path}/{layout.MESH_INFO} is not valid JSON: "
                    "delete it, or pass --reset to start the mesh dir over"
                ) from exc
            stored_info = None

        deleted = 0
        if reset:
            deleted = files.delete_prefix(mesh_path, "", keep=_RESET_KEEPS)
            stored_info = None
            log.warning("reset: deleted %d files under %s", deleted, mesh_path)
        else:
            changed = _differences(stored_info, new_info, stored_block, new_block)
            if changed and has_shards(mesh_path):
                what = (
                    "but no mesh info (their settings are unknown)"
                    if stored_info is None
                    else f"made with other settings ({changed[0]})"
                )
                raise SetupError(
                    f"mesh dir {mesh_path} holds shards {what}: "
                    "pass --reset to delete them and re-mesh, or restore the old setting"
                )

        result: dict[str, Any] = {
            "mesh_dir": mesh_path,
            "reset": bool(reset),
            "deleted_files": deleted,
            "minishard_bits": {
                int(layer): spec["minishard_bits"] for layer, spec in new_info["sharding"].items()
            },
        }

        # (1) watershed info["mesh"]; a reset also drops the claim that layers are meshed.
        new_ws = json.loads(json.dumps(ws_info))
        new_ws["mesh"] = config.mesh_dir
        if reset and isinstance(new_ws.get("mesh_metadata"), dict):
            new_ws["mesh_metadata"].pop("max_meshed_layer", None)
        if new_ws != ws_info:
            files.write_json(config.watershed, WATERSHED_INFO, new_ws)
            result["watershed_info"] = "written"
        else:
            result["watershed_info"] = "unchanged"

        # (2) the mesh info.
        if stored_info != new_info:
            files.write_json(mesh_path, layout.MESH_INFO, new_info)
            result["mesh_info"] = "written"
        else:
            result["mesh_info"] = "unchanged"

        # (3) custom data: keep run-written fields only while they describe this dir's meshes.
        keep_run = not reset and stored_block.get("dir") == config.mesh_dir
        block = {k: v for k, v in stored_block.items() if keep_run or k not in _RUN_FIELDS}
        block.update(new_block)
        result["custom_data"] = replace_mesh_block(graph, block)
        log.info("mesh setup of %s: %s", config.name, result)
        return result
    finally:
        graph.close()
