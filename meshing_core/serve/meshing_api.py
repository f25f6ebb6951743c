"""``/meshing``: the manifest, the list of fragments a viewer fetches for one object.

The fragments are those of the highest meshed nodes under the object, found by the walk
``export-mesh`` uses (``highest_meshed``), so a viewer and an export assemble the same mesh.
Each is named in PyChunkedGraph's verified form ``~<layer>/<shard file>:<offset>:<size>``: the
client reads those bytes of ``<data_dir>/<mesh dir>/initial/<layer>/<shard file>`` by range.
cloud-volume sends ``{"start_layer": N}`` as a JSON body on a GET: fragments are taken from
layer N down.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from meshing_core import ids
from meshing_core.graph.nodes import NodeState, node_state
from meshing_core.mesh.export import FragmentLocation, highest_meshed
from meshing_core.serve import requests as rq
from meshing_core.serve.requests import ApiError
from meshing_core.serve.segmentation_api import _threaded, json_body
from meshing_core.serve.served import ServedGraph


def fragment_name(where: FragmentLocation, prepend_seg_id: bool) -> str:
    """``~<layer>/<shard file>:<offset>:<size>``, as ``~<node>:~<layer>/...`` when asked
    (PyChunkedGraph's ``prepend_seg_ids``, which neuroglancer sends and splits at the first
    colon)."""
    shard = where.shard.split("/", 1)[1]  # initial/<layer>/<file> -> <layer>/<file>
    name = f"~{shard}:{where.offset}:{where.size}"
    return f"~{where.node}:{name}" if prepend_seg_id else name


def manifest(
    served: ServedGraph,
    node: int,
    start_layer: int,
    box: tuple[list[int], list[int]] | None,
    timestamp: float,
) -> list[FragmentLocation]:
    """The fragments of ``node``'s highest meshed nodes at or below ``start_layer``."""
    shards = served.shards()
    if shards is None or served.max_layer is None:
        raise ApiError(404, f"nothing is meshed in table {served.table!r}: run the meshing first")
    graph = served.graph()
    if node_state(graph, node, timestamp) is NodeState.UNKNOWN or ids.layer_of(node) < 2:
        raise ApiError(404, f"unknown node {node}: not a node of table {served.table!r}")
    top = min(start_layer, served.max_layer)
    found, _ = highest_meshed(graph, shards, node, top, box)
    return found


def build_router(served: ServedGraph) -> APIRouter:
    router = APIRouter()

    @router.api_route("/meshing/api/v1/table/{table}/manifest/{node_lod}", methods=["GET", "POST"])
    async def get_manifest(
        table: str,
        node_lod: str,
        request: Request,
        verify: str | None = None,
        prepend_seg_ids: str | None = None,
        return_seg_ids: str | None = None,
        bounds: str | None = None,
        start_layer: str | None = None,
        timestamp: str | None = None,
    ) -> dict[str, Any]:
        rq.check_table(served, table)
        node_text, _, lod = node_lod.partition(":")
        if lod not in ("", "0"):
            raise ApiError(404, f"level of detail {lod!r} is not meshed: ask for <id>:0")
        node = rq.node_id(served, node_text)
        body = await json_body(request)
        layer_text = start_layer
        if isinstance(body, dict) and body.get("start_layer") is not None:
            layer_text = str(body["start_layer"])
        top = rq.stop_layer_of(served, layer_text, served.meta.n_layers)
        box = rq.bounds_of(bounds)
        ts = rq.timestamp_of(served, timestamp)
        del verify  # fragments are always verified: only stored ones are listed
        found = await _threaded(manifest, served, node, top, box, ts)
        prepend = rq.flag(prepend_seg_ids)
        out: dict[str, Any] = {"fragments": [fragment_name(f, prepend) for f in found]}
        asked = isinstance(body, dict) and rq.flag(str(body.get("return_seg_ids", "")))
        if rq.flag(return_seg_ids) or asked:
            out["seg_ids"] = [f.node for f in found]
        return out

    return router
