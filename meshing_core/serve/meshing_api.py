"""``/meshing``: the manifest, the list of fragments a viewer fetches for one object.

The fragments are those of the highest meshed nodes under the object, found by the walk
``export-mesh`` uses (``highest_meshed``), so a viewer and an export assemble the same mesh.
Each is named in PyChunkedGraph's verified form ``~<layer>/<shard file>:<offset>:<size>``: the
client reads those bytes of ``<data_dir>/<mesh dir>/initial/<layer>/<shard file>`` by range.
cloud-volume sends ``{"start_layer": N}`` as a JSON body on a GET: fragments are taken from
layer N down.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from meshing_core import ids
from meshing_core.graph.nodes import node_exists
from meshing_core.mesh.export import FragmentLocation, highest_meshed
from meshing_core.serve import requests as rq
from meshing_core.serve.requests import ApiError
from meshing_core.serve.segmentation_api import json_body
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
        raise ApiError(
            404,
            f"nothing is meshed in table {served.table!r}: run `python -m meshing_core run` on "
            "its graph, then restart the server",
        )
    graph = served.graph()
    unknown = ApiError(404, f"unknown node {node}: not a node of table {served.table!r}")
    if ids.layer_of(node) < 2:
        raise unknown
    top = min(start_layer, served.max_layer)
    found, _ = highest_meshed(graph, shards, node, top, box)
    if not found and not node_exists(graph, node, timestamp):
        raise unknown  # (a node with a fragment exists: no lookup needed on the usual path)
    return found


def own_fragment(
    served: ServedGraph, node: int, start_layer: int, box: tuple[list[int], list[int]] | None
) -> list[FragmentLocation] | None:
    """The node's own fragment when it is the answer (the usual case for a root meshed at its
    layer) and its local shard's reader is already cached: an in-memory index lookup, cheap
    enough for the event loop. None: walk the graph (off the loop)."""
    shards = served.shards()
    if shards is None or served.max_layer is None or box is not None:
        return None
    if not 2 <= ids.layer_of(node) <= min(start_layer, served.max_layer):
        return None
    if not served.readers.holds(shards.shard_of(node)):
        return None
    found = shards.locate(node)
    return None if found is None else [found]


def build_router(served: ServedGraph) -> APIRouter:
    """The manifest route: a plain Starlette endpoint (a viewer asks once per object, so the
    framework's per-request cost counts; the query is read by hand)."""
    router = APIRouter()

    async def get_manifest(request: Request) -> Response:
        rq.check_table(served, request.path_params["table"])
        query = request.query_params
        node_text, _, lod = request.path_params["node_lod"].partition(":")
        if lod not in ("", "0"):
            raise ApiError(404, f"level of detail {lod!r} is not meshed: ask for <id>:0")
        node = rq.node_id(served, node_text)
        body = await json_body(request)
        options = body if isinstance(body, dict) else {}
        layer_text = query.get("start_layer")
        if options.get("start_layer") is not None:
            layer_text = str(options["start_layer"])
        top = rq.stop_layer_of(served, layer_text, served.meta.n_layers)
        box = rq.bounds_of(query.get("bounds"))
        ts = rq.timestamp_of(served, query.get("timestamp"))
        # ``verify`` is accepted and ignored: only stored fragments are ever listed
        found = own_fragment(served, node, top, box)
        if found is None:  # a walk down the graph: off the event loop
            found = await run_in_threadpool(manifest, served, node, top, box, ts)
        prepend = rq.flag(query.get("prepend_seg_ids"))
        out: dict[str, Any] = {"fragments": [fragment_name(f, prepend) for f in found]}
        if rq.flag(query.get("return_seg_ids")) or rq.flag(str(options.get("return_seg_ids", ""))):
            out["seg_ids"] = [f.node for f in found]
        return Response(json.dumps(out), media_type="application/json")

    router.add_route(
        "/meshing/api/v1/table/{table}/manifest/{node_lod}", get_manifest, methods=["GET", "POST"]
    )
    return router
