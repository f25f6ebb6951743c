"""The ASGI app: graph and mesh APIs, the dataset's files, neuroglancer, errors as JSON.

Every error a client can cause is a 4xx ``{"message": ...}``; anything else is a 500 with a
one-line message (the traceback goes to the server's log, never to the client). Nothing
redirects. Cross-origin access is off unless origins are named: then every response to such an
origin, errors included, carries ``Access-Control-Allow-Origin``, preflights are answered,
``Range`` may be sent and ``Content-Range`` read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from meshing_core.errors import MeshingError
from meshing_core.serve import meshing_api, segmentation_api
from meshing_core.serve.data_files import (
    DataFileError,
    DataFiles,
    RangeNotSatisfiable,
    byte_range,
)
from meshing_core.serve.requests import ApiError, check_table
from meshing_core.serve.served import ServedGraph
from meshing_core.serve.viewer import client_dir, viewer_path, viewer_state, viewer_url

log = logging.getLogger(__name__)

DATA_PATH = "/data"
INLINE_READ_BYTES = 1 << 20  # local ranges up to this size are read on the event loop
KEEPALIVE_S = 1.0  # how soon a closed viewer tab frees its event stream
EXPOSED = ["Content-Range", "Content-Length", "Content-Encoding", "Accept-Ranges"]


def _message(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status, headers=headers)


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _message(exc.status, exc.message)

    @app.exception_handler(DataFileError)
    async def data_error(request: Request, exc: DataFileError) -> JSONResponse:
        if isinstance(exc, RangeNotSatisfiable):
            return _message(416, str(exc), headers={"Content-Range": f"bytes */{exc.size}"})
        return _message(exc.status, str(exc))

    @app.exception_handler(MeshingError)
    async def meshing_error(request: Request, exc: MeshingError) -> JSONResponse:
        # the dataset's own problems (a corrupt shard, a graph that cannot be read)
        return _message(500, str(exc).splitlines()[0])

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _message(400, f"bad request: {where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            text = f"no such endpoint {request.url.path}: this server is read-only graphene"
        elif exc.status_code == 405:
            text = f"{request.method} is not allowed on {request.url.path}: the server is read-only"
        else:
            text = str(exc.detail)
        return _message(exc.status_code, text, headers=getattr(exc, "headers", None))


class OneLineErrors:
    """Pure ASGI middleware: an exception no handler took becomes a one-line JSON 500 (the
    traceback goes to the log). Installed inside CORS, so such errors carry its headers too."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if started:  # too late for another answer
                raise
            line = (str(exc).splitlines() or [type(exc).__name__])[0]
            await _message(500, f"internal error: {line}")(scope, receive, send)


def _data_routes(app: FastAPI, served: ServedGraph) -> None:
    files = DataFiles(served.config.watershed)

    async def data_file(request: Request) -> Response:
        """A plain Starlette endpoint: viewers make one of these per fragment."""
        check_table(served, request.path_params["table"])
        path = request.path_params["path"]
        if files.root is not None:  # a few stat calls
            stored = files.find(path)
        else:  # requests to the bucket: off the event loop
            stored = await run_in_threadpool(files.find, path)
        headers = {"Accept-Ranges": "bytes", "Cache-Control": "no-cache"}
        if stored.encoding:
            headers["Content-Encoding"] = stored.encoding
        span = byte_range(request.headers.get("range"), stored.size)
        if span is None:
            if stored.path is not None and "range" not in request.headers:  # streamed
                return FileResponse(stored.path, headers=headers, media_type=stored.media_type)
            data = b""
            if request.method == "GET":
                data = await run_in_threadpool(files.read, stored, 0, stored.size)
            headers["Content-Length"] = str(stored.size)
            return Response(data, headers=headers, media_type=stored.media_type)
        start, stop = span
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{stored.size}"
        data = b""
        if (
            request.method == "GET"
            and stored.path is not None
            and stop - start <= INLINE_READ_BYTES
        ):
            data = files.read(stored, start, stop)  # a small local read: on the event loop
        elif request.method == "GET":
            data = await run_in_threadpool(files.read, stored, start, stop)
        if request.method == "GET" and len(data) != stop - start:  # rewritten while we read
            raise DataFileError(503, f"{stored.name} changed while it was read: ask again")
        headers["Content-Length"] = str(stop - start)
        return Response(data, status_code=206, headers=headers, media_type=stored.media_type)

    app.add_route(DATA_PATH + "/{table}/{path:path}", data_file, methods=["GET", "HEAD"])


def _viewer_routes(app: FastAPI, served: ServedGraph) -> None:
    from starlette.staticfiles import StaticFiles

    table = served.table
    app.mount(viewer_path(table), StaticFiles(directory=client_dir(), html=True), name="viewer")

    @app.get("/events/{token}")
    async def events(token: str, request: Request) -> Response:
        """The Python-server client's state stream: held open, nothing to sync (a closed one
        is reopened at once, so it is kept open with a comment now and then)."""

        async def idle() -> Any:
            yield ": read-only graphene server, no state to sync\n\n"
            while not await request.is_disconnected():
                await asyncio.sleep(KEEPALIVE_S)
                yield ":\n\n"

        return StreamingResponse(idle(), media_type="text/event-stream")

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @app.post("/action/{token}")
    def action(token: str) -> dict[str, Any]:  # key bindings the Python server would handle
        return {}

    @app.get("/")
    def home(request: Request) -> HTMLResponse:
        base = str(request.base_url)
        url = viewer_url(base, table, default_state(served, base))
        return HTMLResponse(
            f"<!doctype html><title>{served.table}</title><p>Read-only graphene server for "
            f"table <b>{served.table}</b>. <a href='{url}'>Open it in neuroglancer</a>.</p>"
        )


def default_state(served: ServedGraph, base_url: str) -> dict[str, Any]:
    """The viewer state of the printed URL: the dataset, on the middle of its central voxel."""
    meta = served.meta
    centre = tuple(
        o + s // 2 + 0.5 for o, s in zip(meta.voxel_offset, meta.volume_size, strict=True)
    )
    extent = float(max(meta.volume_size))
    return viewer_state(base_url, served.table, meta.resolution, centre, extent)  # type: ignore[arg-type]


def create_app(
    served: ServedGraph, *, allow_origins: Sequence[str] = (), viewer: bool = True
) -> FastAPI:
    """The server's app for one dataset."""
    app = FastAPI(
        title=f"read-only graphene: {served.table}",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        redirect_slashes=False,
    )
    _data_routes(app, served)  # first: the routes a viewer hits most are matched first
    app.include_router(meshing_api.build_router(served))
    app.include_router(segmentation_api.build_router(served))
    if viewer:
        _viewer_routes(app, served)
    _install_errors(app)
    app.add_middleware(OneLineErrors)
    if allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(allow_origins),
            allow_methods=["GET", "HEAD", "POST", "OPTIONS"],
            allow_headers=["Range", "Content-Type", "Authorization"],
            expose_headers=EXPOSED,
            max_age=600,
        )
    return app
