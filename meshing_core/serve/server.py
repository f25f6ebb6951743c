"""Running the app with uvicorn: one process, or several worker processes on one port.

Worker processes rebuild the app from environment variables (uvicorn imports a factory by
name), so the parent checks the dataset first and every worker serves the same one.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from meshing_core.errors import MeshingError

log = logging.getLogger(__name__)

ENV = "MESHING_SERVE"  # JSON: the worker processes' settings
GRACEFUL_SHUTDOWN_S = 3


@dataclass(frozen=True)
class ServeSettings:
    graph: str  # a graph.yaml (or folder, or URL), or pychunkedgraph:<graph id>
    host: str = "127.0.0.1"
    port: int = 8000
    timestamp: float | None = None
    allow_origins: tuple[str, ...] = ()
    workers: int = 1
    viewer: bool = True

    @property
    def base_url(self) -> str:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{'127.0.0.1' if self.host in ('0.0.0.0', '') else host}:{self.port}"


def _config(graph: str):  # -> GraphConfig
    from meshing_core.config import PCG_SOURCE_PREFIX, load_config, pychunkedgraph_config

    if graph.startswith(PCG_SOURCE_PREFIX):
        return pychunkedgraph_config(graph[len(PCG_SOURCE_PREFIX) :])
    return load_config(graph)


def build_app(settings: ServeSettings):  # -> (FastAPI, ServedGraph)
    from meshing_core.serve.app import create_app
    from meshing_core.serve.served import ServedGraph

    served = ServedGraph(_config(settings.graph), settings.timestamp)
    app = create_app(served, allow_origins=settings.allow_origins, viewer=settings.viewer)
    return app, served


def app_from_environment():  # -> FastAPI; uvicorn's factory in worker processes
    raw = json.loads(os.environ[ENV])
    raw["allow_origins"] = tuple(raw.get("allow_origins") or ())
    app, _ = build_app(ServeSettings(**raw))
    return app


def serve(settings: ServeSettings, announce: Callable[[str, object], None]) -> None:
    """Check the dataset, tell ``announce`` the base URL and the served graph, then serve."""
    import uvicorn

    if settings.workers < 1:
        raise MeshingError(f"--workers must be at least 1, got {settings.workers}")
    app, served = build_app(settings)  # one-line errors before the port is taken
    announce(settings.base_url, served)
    level = "info" if logging.getLogger().isEnabledFor(logging.DEBUG) else "warning"
    # an open viewer tab holds an event stream: Ctrl-C must not wait for it to close
    common = {
        "host": settings.host,
        "port": settings.port,
        "log_level": level,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
    }
    if settings.workers == 1:
        uvicorn.run(app, **common)
        return
    os.environ[ENV] = json.dumps({**settings.__dict__, "allow_origins": settings.allow_origins})
    uvicorn.run(
        "meshing_core.serve.server:app_from_environment",
        factory=True,
        workers=settings.workers,
        **common,
    )


def check_port(host: str, port: int) -> None:
    """Fail in one line, before any work, when the address cannot be bound."""
    import socket

    if not 0 < port < 65536:
        raise MeshingError(f"--port {port} is not a port: give 1..65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise MeshingError(
                f"cannot listen on {host}:{port} ({exc.strerror}): pass another --port, or "
                "stop what is using it"
            ) from None


def origins(values: Sequence[str] | None) -> tuple[str, ...]:
    """``--allow-origin`` values, checked: scheme://host[:port] with nothing after it."""
    out = []
    for value in values or ():
        text = value.rstrip("/")
        if "://" not in text or "/" in text.split("://", 1)[1] or text.endswith(":"):
            raise MeshingError(
                f"--allow-origin {value!r} is not an origin: give scheme://host[:port], "
                "e.g. https://neuroglancer-demo.appspot.com"
            )
        out.append(text)
    return tuple(out)
