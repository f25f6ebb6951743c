"""`info`: what a dataset holds (layers, chunk bounds, node counts) and what of it is meshed."""

from __future__ import annotations

import json
from typing import Any

from meshing_core.config import GraphConfig
from meshing_core.graph import open_graph
from meshing_core.timestamps import format_timestamp


def _read_json(cloudpath: str, name: str) -> dict[str, Any] | None:
    from cloudfiles import CloudFiles

    data = CloudFiles(cloudpath).get(name)
    return None if data is None else json.loads(data)


def summarize(config: GraphConfig, timestamp: float) -> dict[str, Any]:
    """The facts ``describe`` prints, as a dict (also handy for tests and later status views)."""
    from meshing_core.store.files import list_files
    from meshing_core.store.layout import initial_dir

    graph = open_graph(config)
    try:
        meta = graph.meta
        counts = graph.node_counts(timestamp)
        layers = []
        for layer in range(1, meta.n_layers + 1):
            bounds = meta.layer_chunk_bounds(layer)
            row: dict[str, Any] = {
                "layer": layer,
                "chunk_bounds": list(bounds),
                "chunks": bounds[0] * bounds[1] * bounds[2],
                "nodes": counts.get(layer, 0) if counts else None,
                # layer 1 only where nodes are counted (PyChunkedGraph keeps no supervoxel counters)
                "max_nodes_per_chunk": graph.max_chunk_node_count(layer)
                if layer >= 2 or counts
                else None,
            }
            if layer >= 2:
                shards = [n for n in list_files(initial_dir(config, layer)) if n.endswith(".shard")]
                row["shards"] = len(shards)
            layers.append(row)
        ws_info = _read_json(config.watershed, "info") or {}
        return {
            "name": config.name,
            "graph": config.graph_path,
            "watershed": config.watershed,
            "mesh_dir": config.mesh_cloudpath,
            "mip": config.mip,
            "max_error": config.max_error,
            "chunk_size": list(meta.chunk_size),
            "volume_size": list(meta.volume_size),
            "voxel_offset": list(meta.voxel_offset),
            "resolution": list(meta.resolution),
            "n_layers": meta.n_layers,
            "history": graph.history(),
            "timestamp": timestamp,
            "layers": layers,
            "custom_data_mesh": graph.custom_data().get("mesh"),
            "mesh_metadata": ws_info.get("mesh_metadata"),
            "mesh_info": _read_json(config.mesh_cloudpath, "info") is not None,
        }
    finally:
        graph.close()


def describe(config: GraphConfig, timestamp: float) -> str:
    """A human-readable summary of ``summarize``."""
    facts = summarize(config, timestamp)
    history = facts["history"]
    res = "x".join(f"{r:g}" for r in facts["resolution"])
    lines = [
        f"graph       {facts['name']} ({facts['graph']})",
        f"watershed   {facts['watershed']}",
        f"meshes      {facts['mesh_dir']} (mip {facts['mip']}, max_error {facts['max_error']:g} nm, "
        f"mesh info {'present' if facts['mesh_info'] else 'missing: run setup'})",
        f"volume      {'x'.join(map(str, facts['volume_size']))} voxels at offset "
        f"{tuple(facts['voxel_offset'])}, {res} nm; chunk {'x'.join(map(str, facts['chunk_size']))}",
        f"layers      {facts['n_layers']} (root layer {facts['n_layers']})",
    ]
    if history:
        edits = ", ".join(format_timestamp(t) for t in history[1:]) or "none"
        lines.append(f"history     built {format_timestamp(history[0])}; edits: {edits}")
    lines.append(f"nodes at    {format_timestamp(timestamp)}")
    lines.append(
        f"{'layer':>5} {'chunk bounds':>14} {'chunks':>8} {'nodes':>9} {'max/chunk':>9} {'shards':>7}"
    )
    for row in facts["layers"]:
        bounds = "x".join(map(str, row["chunk_bounds"]))
        shards = row.get("shards", "-")
        lines.append(
            f"{row['layer']:>5} {bounds:>14} {row['chunks']:>8} {_shown(row['nodes']):>9} "
            f"{_shown(row['max_nodes_per_chunk']):>9} {shards:>7}"
        )
    meshed = facts["custom_data_mesh"] or {}
    if "max_layer" in meshed:
        lines.append(
            f"meshed      up to layer {meshed['max_layer']} at {format_timestamp(meshed['initial_ts'])}"
        )
    else:
        lines.append("meshed      no finished run recorded (custom data has no max_layer yet)")
    return "\n".join(lines)


def _shown(value: int | None) -> str:
    return "-" if value is None else str(value)
