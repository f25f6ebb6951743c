"""Run metadata: what a finished run tells remeshing and the viewers.

Two places, exactly the fields of the manual procedure ("Parameter Setting"), computed from the
config, graph and watershed rather than typed in:

- the graph's custom data ``mesh = {max_layer, mip, max_error, dir, initial_ts, verify}``
  (``initial_ts`` = the meshing timestamp as whole Unix seconds, as the procedure shows);
- the watershed info's ``mesh_metadata = {uniform_draco_grid_size, unsharded_mesh_dir,
  max_meshed_layer}``; the grid size is the layer-2 draco bin at the mesh mip, the value
  cloud-volume uses to de-duplicate vertices on chunk boundaries.

Writing is idempotent: nothing is rewritten when the stored values already match.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from meshing_core.config import GraphConfig
from meshing_core.errors import MeshingError
from meshing_core.mesh.draco_grid import layer2_grid
from meshing_core.mesh.watershed import block_shape_at_mip
from meshing_core.run.setup import WATERSHED_INFO, replace_mesh_block, static_mesh_block
from meshing_core.store import files, layout

log = logging.getLogger(__name__)

UNSHARDED_MESH_DIR = layout.DYNAMIC
_RUN_FIELDS = ("max_layer", "initial_ts")


class MetadataError(MeshingError):
    """Run metadata cannot be written; the message names what is missing and the fix."""


def initial_ts(timestamp: float) -> int:
    """Whole seconds of the meshing timestamp.

    Rounded down: every node the meshes were made from was created at or before ``timestamp``,
    so none of them can look newer than ``initial_ts`` to the remesher.
    """
    return int(math.floor(float(timestamp)))


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def _watershed_info(config: GraphConfig) -> dict[str, Any]:
    where = f"{config.watershed.rstrip('/')}/{WATERSHED_INFO}"
    try:
        info = files.read_json(config.watershed, WATERSHED_INFO)
    except ValueError as exc:
        raise MetadataError(
            f"watershed info {where} is not valid JSON ({exc}): rebuild it"
        ) from exc
    if not isinstance(info, dict) or not info.get("scales"):
        raise MetadataError(
            f"watershed info {where} is missing or has no scales: run build-graph, then setup"
        )
    return info


def uniform_draco_grid_size(
    config: GraphConfig, chunk_size: Any, ws_info: dict[str, Any]
) -> int | float:
    """The layer-2 draco bin (nm) at the mesh mip: the same grid layer-2 meshing encodes with."""
    scales = ws_info["scales"]
    if not 0 <= config.mip < len(scales):
        raise MetadataError(
            f"mesh.mip {config.mip} is not a scale of watershed {config.watershed} "
            f"(scales 0..{len(scales) - 1}): fix graph.yaml"
        )
    resolution = scales[config.mip]["resolution"]
    block = block_shape_at_mip(chunk_size, scales[0]["resolution"], resolution)
    grid = layer2_grid(block, resolution, (0.0, 0.0, 0.0))  # the bin does not depend on offset
    return _number(grid.bin_size)


def run_mesh_block(config: GraphConfig, max_layer: int, timestamp: float) -> dict[str, Any]:
    """Custom data ``mesh`` of a finished run: the static part plus max_layer and initial_ts."""
    block = static_mesh_block(config)
    block["max_layer"] = int(max_layer)
    block["initial_ts"] = initial_ts(timestamp)
    return block


def write_run_metadata(
    config: GraphConfig, graph: Any, max_layer: int, timestamp: float
) -> dict[str, Any]:
    """Write custom data ``mesh`` and the watershed's ``mesh_metadata`` after a run's last layer.

    ``graph`` is a reader/writer with ``meta``, ``custom_data`` and ``set_custom_data`` (the
    embedded graph). Returns ``{"custom_data": "written"|"unchanged", "watershed_info": ...,
    "mesh": <block>, "mesh_metadata": <block>}``.
    """
    meta = graph.meta
    if not 2 <= int(max_layer) <= int(meta.n_layers):
        raise MetadataError(
            f"max_layer {max_layer} is not a mesh layer of graph {meta.graph_id} "
            f"(2..{meta.n_layers}): pass the highest layer the run meshed"
        )
    ws_info = _watershed_info(config)
    result: dict[str, Any] = {}

    block = run_mesh_block(config, max_layer, timestamp)
    merged = {**(graph.custom_data().get("mesh") or {}), **block}
    result["custom_data"] = replace_mesh_block(graph, merged)
    result["mesh"] = merged

    new_ws = json.loads(json.dumps(ws_info))
    mesh_metadata = dict(new_ws.get("mesh_metadata") or {})
    mesh_metadata.update(
        {
            "uniform_draco_grid_size": uniform_draco_grid_size(config, meta.chunk_size, ws_info),
            "unsharded_mesh_dir": UNSHARDED_MESH_DIR,
            "max_meshed_layer": int(max_layer),
        }
    )
    new_ws["mesh_metadata"] = mesh_metadata
    new_ws["mesh"] = config.mesh_dir
    if new_ws != ws_info:
        files.write_json(config.watershed, WATERSHED_INFO, new_ws)
        result["watershed_info"] = "written"
    else:
        result["watershed_info"] = "unchanged"
    result["mesh_metadata"] = mesh_metadata
    log.info("run metadata of %s: %s", config.name, result)
    return result


def clear_run_metadata(config: GraphConfig, graph: Any) -> dict[str, str]:
    """Drop ``max_layer``/``initial_ts`` and ``max_meshed_layer`` while a new run re-meshes.

    Call it when a run at a new timestamp starts overwriting shards, so no reader trusts
    metadata describing meshes that are being replaced. Idempotent.
    """
    result: dict[str, str] = {}
    stored = graph.custom_data().get("mesh") or {}
    kept = {k: v for k, v in stored.items() if k not in _RUN_FIELDS}
    result["custom_data"] = replace_mesh_block(graph, kept, changed="cleared")
    ws_info = _watershed_info(config)
    mesh_metadata = ws_info.get("mesh_metadata")
    if isinstance(mesh_metadata, dict) and "max_meshed_layer" in mesh_metadata:
        new_ws = json.loads(json.dumps(ws_info))
        new_ws["mesh_metadata"].pop("max_meshed_layer")
        files.write_json(config.watershed, WATERSHED_INFO, new_ws)
        result["watershed_info"] = "cleared"
    else:
        result["watershed_info"] = "unchanged"
    return result
