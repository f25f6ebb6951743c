"""The ChunkedGraph a mesher reads: the protocol (``protocol``) and its backends.

Everything outside this package opens a graph with ``open_graph(config)``, which dispatches on
the config's ``graph.backend``, and closes it with ``close()`` (part of the protocol); nothing
outside it imports a backend module. ``embedded`` is the SQLite file built by ``ingest``
(``create_graph_file`` is the ingest-side writer), local or on object storage (``cache``: a
local copy keyed by content); ``pcg`` reads a PyChunkedGraph (CAVE, BigTable) deployment
through PyChunkedGraph's own API, imported only when a config selects it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshing_core.errors import MeshingError
from meshing_core.graph.protocol import ChunkedGraphReader, GraphMeta

__all__ = [
    "ChunkedGraphReader",
    "GraphMeta",
    "UnknownBackendError",
    "open_again",
    "open_graph",
    "create_graph_file",
]


class UnknownBackendError(MeshingError):
    """A config names a graph backend this code does not have."""


def open_graph(config: Any, *, read_only: bool = False) -> ChunkedGraphReader:
    """Open the graph ``config`` (a ``GraphConfig``) names, for meshing.

    ``read_only`` opens a local embedded file so that nothing can write to it (a server's
    connections); custom-data writes then fail.
    """
    backend = getattr(config, "backend", "embedded")
    if backend == "embedded":
        from meshing_core.store.paths import is_object_url

        if is_object_url(str(config.graph_path)):
            from meshing_core.graph.cache import open_remote

            return open_remote(config)
        from meshing_core.graph.embedded import open_embedded

        return open_embedded(config, read_only=read_only)
    if backend == "pychunkedgraph":
        from meshing_core.graph.pcg import open_pychunkedgraph

        return open_pychunkedgraph(config)
    raise UnknownBackendError(
        f"{config.source}: graph.backend {backend!r} is not available: use 'embedded' or "
        "'pychunkedgraph'"
    )


def open_again(graph: ChunkedGraphReader, config: Any) -> ChunkedGraphReader:
    """Another reader of what ``graph`` reads, for another thread (SQLite connections stay in
    their thread): an embedded graph's same local file (a graph fetched from object storage is
    not fetched again), read-only; another backend is opened anew."""
    from meshing_core.graph.embedded import EmbeddedGraph

    if isinstance(graph, EmbeddedGraph):
        return EmbeddedGraph(graph.path, watershed=graph.watershed, read_only=True)
    return open_graph(config, read_only=True)


def create_graph_file(path: str | Path, watershed: str | None = None) -> Any:
    """A new, writable embedded graph file (ingest writes the hierarchy into it)."""
    from meshing_core.graph.embedded import EmbeddedGraph

    return EmbeddedGraph(path, watershed=watershed, create=True)
