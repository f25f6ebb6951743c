"""``/segmentation``: the graph lookups clients make (roots, leaves, children, latest roots).

Paths, parameters and answer keys are PyChunkedGraph's (``/segmentation/api/v1/table/<t>/...``);
ids are strings in JSON when ``int64_as_str`` asks. Lookups take the ``timestamp`` query, else
the meshing timestamp. Write operations answer 405: the server is read-only.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from meshing_core import ids
from meshing_core.errors import MeshingError
from meshing_core.graph.nodes import descendants, node_exists
from meshing_core.serve import requests as rq
from meshing_core.serve.requests import ApiError
from meshing_core.serve.served import ServedGraph

API_VERSIONS = [0, 1]
# caveclient parses this as a PyChunkedGraph version to gate keyword arguments: 2.15 is the
# first with ``bounds`` on leaves, and nothing newer is claimed
SERVER_VERSION = "2.15.0"
# PyChunkedGraph's edit endpoints: answered with 405 and why, never silently accepted
WRITE_OPERATIONS = (
    "merge",
    "split",
    "undo",
    "redo",
    "rollback_user",
    "graph/split_preview",
    "remesh",
    "lock",
    "unlock",
)
READ_ONLY = "this server is read-only: it serves a meshed dataset, edits need a ChunkedGraph server"


async def raw_body(request: Request) -> bytes:
    """The request's body, gunzipped when it says so (cloud-volume gzips large id lists)."""
    raw = await request.body()
    if request.headers.get("content-encoding", "").lower() == "gzip":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError):
            raise ApiError(400, "the body says Content-Encoding: gzip but is not gzip") from None
    return raw


async def json_body(request: Request) -> Any:
    """The request's JSON body, whatever its Content-Type (None when empty); 400 if not JSON."""
    raw = await raw_body(request)
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise ApiError(400, "the request body is not JSON") from None


def body_node_ids(body: Any) -> list[Any]:
    if not isinstance(body, dict) or not isinstance(body.get("node_ids"), list):
        raise ApiError(400, 'send a JSON body {"node_ids": [...]}')
    return body["node_ids"]


def ancestors_at(
    served: ServedGraph, nodes: np.ndarray, timestamp: float, stop_layer: int
) -> np.ndarray:
    """Per id, its ancestor at ``stop_layer`` (the root by default) at ``timestamp``."""
    graph = served.graph()
    out = np.asarray(nodes, dtype=np.uint64).copy()
    if out.size == 0 or stop_layer == 1:
        return out
    layers = ids.layers_of(out)
    supervoxels = layers == 1
    if supervoxels.any():
        try:
            out[supervoxels] = graph.l2_ids(out[supervoxels], timestamp)
        except MeshingError as exc:
            raise ApiError(404, str(exc)) from None
    if stop_layer >= served.meta.n_layers:
        return np.asarray(graph.roots(out, timestamp), dtype=np.uint64)
    return np.asarray(graph.ancestors(out, stop_layer, timestamp), dtype=np.uint64)


def known_node(served: ServedGraph, text: str, timestamp: float) -> int:
    """A node that exists in the graph (alive or superseded at ``timestamp``); 404 otherwise."""
    node = rq.node_id(served, text)
    if node == 0 or not node_exists(served.graph(), node, timestamp):
        raise ApiError(404, f"unknown node {node}: not a node of table {served.table!r}")
    return node


def leaves_options(
    served: ServedGraph,
    table: str,
    bounds: str | None,
    stop_layer: str | None,
    timestamp: str | None,
) -> tuple[float, tuple[list[int], list[int]] | None, int]:
    """``leaves`` and ``leaves_many``'s query: (timestamp, bounds box, stop layer)."""
    rq.check_table(served, table)
    ts = rq.timestamp_of(served, timestamp)
    return ts, rq.bounds_of(bounds), rq.stop_layer_of(served, stop_layer, 1)


def leaves_of(
    served: ServedGraph,
    text: str,
    timestamp: float,
    box: tuple[list[int], list[int]] | None,
    stop_layer: int,
    as_str: bool,
) -> tuple[int, list[int] | list[str]]:
    """One node's id and its descendants at ``stop_layer`` within ``box``, as JSON ids."""
    node = known_node(served, text, timestamp)
    found = descendants(served.graph(), node, stop_layer=stop_layer, box=box)
    return node, rq.json_ids(found.tolist(), as_str)


def latest(served: ServedGraph, nodes: np.ndarray, timestamp: float) -> list[bool]:
    """Whether each node is alive at ``timestamp`` (one chunk query per distinct chunk)."""
    graph = served.graph()
    codec = served.meta.codec
    alive: dict[int, np.ndarray] = {}
    out = []
    for node in nodes.tolist():
        if node == 0:
            out.append(False)
            continue
        chunk = ids.chunk_id_of(codec, node)
        if chunk not in alive:
            alive[chunk] = graph.chunk_nodes(
                ids.layer_of(node), ids.chunk_coords(codec, node), timestamp
            )
        out.append(bool(np.any(alive[chunk] == np.uint64(node))))
    return out


def build_router(served: ServedGraph) -> APIRouter:
    router = APIRouter()
    base = "/segmentation/api/v1/table/{table}"

    @router.get("/segmentation/api/versions")
    def versions() -> list[int]:
        return API_VERSIONS

    @router.get("/segmentation/api/version")
    def version() -> str:
        return SERVER_VERSION

    @router.get("/segmentation/table/{table}/info")
    @router.get(base + "/info")
    def info(table: str, request: Request) -> dict[str, Any]:
        rq.check_table(served, table)
        out = json.loads(json.dumps(served.dataset_info))
        out["data_dir"] = str(request.base_url).rstrip("/") + f"/data/{served.table}"
        out["app"] = {"supported_api_versions": API_VERSIONS}
        return out

    @router.get(base + "/node/{node}/root")
    def root(
        table: str,
        node: str,
        timestamp: str | None = None,
        stop_layer: str | None = None,
        int64_as_str: str | None = None,
    ) -> dict[str, Any]:
        rq.check_table(served, table)
        ts = rq.timestamp_of(served, timestamp)
        layer = rq.stop_layer_of(served, stop_layer, served.meta.n_layers)
        found = known_node(served, node, ts)
        (answer,) = ancestors_at(served, np.array([found], dtype=np.uint64), ts, layer).tolist()
        return {"root_id": rq.json_id(answer, rq.flag(int64_as_str))}

    @router.post(base + "/roots_binary")
    async def roots_binary(
        table: str, request: Request, timestamp: str | None = None, stop_layer: str | None = None
    ) -> Response:
        rq.check_table(served, table)
        ts = rq.timestamp_of(served, timestamp)
        layer = rq.stop_layer_of(served, stop_layer, served.meta.n_layers)
        raw = await raw_body(request)
        if len(raw) % 8:
            raise ApiError(400, "the body must be little-endian uint64 ids (a multiple of 8 bytes)")
        nodes = np.frombuffer(raw, dtype="<u8").astype(np.uint64)

        def work() -> np.ndarray:
            rq.layers_known(served, nodes)
            return ancestors_at(served, nodes, ts, layer)

        found = await run_in_threadpool(work)
        return Response(found.astype("<u8").tobytes(), media_type="application/octet-stream")

    @router.post(base + "/roots")
    async def roots(
        table: str,
        request: Request,
        timestamp: str | None = None,
        stop_layer: str | None = None,
        int64_as_str: str | None = None,
    ) -> dict[str, Any]:
        rq.check_table(served, table)
        ts = rq.timestamp_of(served, timestamp)
        layer = rq.stop_layer_of(served, stop_layer, served.meta.n_layers)
        requested = body_node_ids(await json_body(request))

        def work() -> np.ndarray:
            return ancestors_at(served, rq.node_ids(served, requested), ts, layer)

        found = await run_in_threadpool(work)
        return {"root_ids": rq.json_ids(found.tolist(), rq.flag(int64_as_str))}

    @router.get(base + "/node/{node}/leaves")
    def leaves(
        table: str,
        node: str,
        bounds: str | None = None,
        stop_layer: str | None = None,
        timestamp: str | None = None,
        int64_as_str: str | None = None,
    ) -> dict[str, Any]:
        ts, box, layer = leaves_options(served, table, bounds, stop_layer, timestamp)
        _, leaf_ids = leaves_of(served, node, ts, box, layer, rq.flag(int64_as_str))
        return {"leaf_ids": leaf_ids}

    @router.post(base + "/node/leaves_many")
    async def leaves_many(
        table: str,
        request: Request,
        bounds: str | None = None,
        stop_layer: str | None = None,
        timestamp: str | None = None,
        int64_as_str: str | None = None,
    ) -> dict[str, Any]:
        ts, box, layer = leaves_options(served, table, bounds, stop_layer, timestamp)
        requested = body_node_ids(await json_body(request))

        def work() -> dict[str, Any]:
            as_str = rq.flag(int64_as_str)
            found = (leaves_of(served, str(t), ts, box, layer, as_str) for t in requested)
            return {str(node): leaf_ids for node, leaf_ids in found}

        return await run_in_threadpool(work)

    @router.get(base + "/node/{node}/children")
    def children(
        table: str, node: str, timestamp: str | None = None, int64_as_str: str | None = None
    ) -> dict[str, Any]:
        rq.check_table(served, table)
        found = known_node(served, node, rq.timestamp_of(served, timestamp))
        kids = served.graph().children([found]).get(found, np.zeros(0, dtype=np.uint64))
        return {"children_ids": rq.json_ids(np.sort(kids).tolist(), rq.flag(int64_as_str))}

    @router.post(base + "/is_latest_roots")
    async def is_latest_roots(
        table: str, request: Request, timestamp: str | None = None
    ) -> dict[str, Any]:
        rq.check_table(served, table)
        ts = rq.timestamp_of(served, timestamp)
        requested = body_node_ids(await json_body(request))

        def work() -> list[bool]:
            return latest(served, rq.node_ids(served, requested), ts)

        return {"is_latest": await run_in_threadpool(work)}

    def refuse(table: str) -> JSONResponse:
        rq.check_table(served, table)
        return JSONResponse({"message": READ_ONLY}, status_code=405)

    for operation in WRITE_OPERATIONS:
        router.add_api_route(
            f"{base}/{operation}", refuse, methods=["POST", "PUT", "DELETE", "PATCH"]
        )
    return router
