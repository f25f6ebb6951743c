"""The dataset one server answers for: its graph (one read-only connection per thread), the
timestamp lookups default to, and the mesh shards the manifest points into.

The default timestamp is the one the meshes were made at (custom data ``mesh.initial_ts``), so
a root found without a ``timestamp`` always has meshes. That timestamp, the top meshed layer
and the mesh info are read at start: a run at another timestamp needs a restart. Shard readers (whose indices are the
expensive part of a manifest) are kept across requests in a bounded cache, keyed by the shard
file's size and modification time when it is local, so a re-run's new shards are picked up.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from typing import Any

from meshing_core.config import GraphConfig
from meshing_core.graph import open_again, open_graph
from meshing_core.mesh.export import (
    MeshShards,
    max_meshed_layer,
    meshed_at,
    meshing_timestamp,
    read_mesh_info,
)
from meshing_core.store.paths import local_path

log = logging.getLogger(__name__)

SHARD_READERS = 4096  # readers kept (each holds its shard's index and the minishards read)


class ReaderCache:
    """A thread-safe LRU of shard readers with MeshShards' ``get``/``__setitem__`` interface.

    A local shard's key includes its size and mtime: a rewritten shard gets a new reader.
    """

    def __init__(self, mesh_cloudpath: str, maxsize: int = SHARD_READERS):
        self.local = local_path(mesh_cloudpath)
        self.maxsize = maxsize
        self.lock = threading.Lock()
        self.entries: OrderedDict[tuple[str, int, int], Any] = OrderedDict()

    def _key(self, name: str) -> tuple[str, int, int]:
        if self.local is None:
            return (name, 0, 0)
        try:
            stat = os.stat(self.local / name)
        except FileNotFoundError:
            return (name, -1, -1)
        return (name, stat.st_size, stat.st_mtime_ns)

    def get(self, name: str) -> Any:
        key = self._key(name)
        with self.lock:
            found = self.entries.get(key)
            if found is not None:
                self.entries.move_to_end(key)
            return found

    def holds(self, name: str) -> bool:
        """Whether a local shard's reader is cached (its next lookups touch no storage)."""
        return self.local is not None and self.get(name) is not None

    def __setitem__(self, name: str, reader: Any) -> None:
        key = self._key(name)
        with self.lock:
            self.entries[key] = reader
            while len(self.entries) > self.maxsize:
                self.entries.popitem(last=False)


class ServedGraph:
    """One dataset behind the server (``config`` as loaded from its graph.yaml)."""

    def __init__(self, config: GraphConfig, timestamp: float | None = None):
        self.config = config
        self.table = config.name
        self._local = threading.local()
        graph = open_graph(config, read_only=True)
        self._first = graph  # other threads open the same graph again (one fetch if remote)
        self._local.graph = graph
        self.meta = graph.meta
        custom = graph.custom_data()
        self.meshed_at = meshed_at(custom)  # None: no run has finished
        self.timestamp = float(timestamp) if timestamp is not None else meshing_timestamp(custom)
        self.dataset_info = graph.dataset_info()
        self.max_layer = max_meshed_layer(config, custom, self.meta.n_layers)
        self.mesh_info: dict[str, Any] | None = None
        if self.max_layer is not None:
            self.mesh_info = read_mesh_info(config)
        self.readers = ReaderCache(config.mesh_cloudpath)
        if self.max_layer is None:
            log.warning(
                "nothing is meshed in %s yet: graph lookups work, meshes will not (run "
                "`python -m meshing_core run --graph %s`)", config.mesh_cloudpath, config.source,
            )  # fmt: skip

    def graph(self) -> Any:
        """This thread's read-only graph (SQLite connections stay in the thread that made them)."""
        graph = getattr(self._local, "graph", None)
        if graph is None:
            graph = open_again(self._first, self.config)
            self._local.graph = graph
        return graph

    def shards(self) -> MeshShards | None:
        """Fragment lookups over the shared reader cache; None when nothing is meshed."""
        if self.mesh_info is None:
            return None
        return MeshShards(
            self.config.mesh_cloudpath, self.meta.codec, self.mesh_info, readers=self.readers
        )
