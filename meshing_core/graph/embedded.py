"""Embedded ChunkedGraph: the whole hierarchy with creation/expiry times in one SQLite file.

Nodes are immutable: a node is defined by its children, edits create new nodes and expire old
ones, so "parent at time t" is the alive node whose children include the child. Node ids are
ChunkedGraph ids, which keep their top bit clear for layers < 128 and so fit SQLite's signed
64-bit integers. Rows are indexed by id (ids of one chunk are contiguous, so a chunk is a range
scan) and children by child, which makes per-chunk reads cheap.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from meshing_core import ids
from meshing_core.errors import MeshingError
from meshing_core.graph.protocol import GraphMeta

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    id INTEGER PRIMARY KEY,
    layer INTEGER NOT NULL,
    created REAL NOT NULL,
    expired REAL
);
CREATE TABLE IF NOT EXISTS children (
    child INTEGER NOT NULL,
    parent INTEGER NOT NULL,
    PRIMARY KEY (child, parent)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS children_by_parent ON children (parent);
CREATE TABLE IF NOT EXISTS supervoxels (id INTEGER PRIMARY KEY, original INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS supervoxels_by_original ON supervoxels (original);
"""

_ALIVE = "n.created <= ? AND (n.expired IS NULL OR n.expired > ?)"
_MAX_VARS = 900  # below SQLite's bound on host parameters


class GraphFileError(MeshingError):
    """The graph file is missing or not an embedded ChunkedGraph."""


def _chunks(values: Sequence[int], size: int = _MAX_VARS) -> Iterable[Sequence[int]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class EmbeddedGraph:
    """Reader (``ChunkedGraphReader``) and writer of one embedded graph file."""

    def __init__(
        self,
        path: str | Path,
        watershed: str | None = None,
        *,
        create: bool = False,
        read_only: bool = False,
    ):
        self.path = Path(path)
        self.watershed = watershed
        if not create and not self.path.exists():
            raise GraphFileError(
                f"graph file {self.path} not found: build it with `python -m meshing_core build-graph`"
            )
        if read_only:  # a cached copy of a remote graph, or a server's connections: no writes
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            self.conn = sqlite3.connect(uri, uri=True, timeout=60)
        else:
            self.conn = sqlite3.connect(str(self.path), timeout=60)
        try:
            if not read_only:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
            if create:
                self.conn.executescript(_SCHEMA)
                self._set_meta("schema_version", SCHEMA_VERSION)
            version = self._get_meta("schema_version")
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise GraphFileError(f"{self.path} is not an embedded graph file ({exc})") from exc
        if not create and version != SCHEMA_VERSION:
            raise GraphFileError(
                f"{self.path} has graph schema {version}, this code reads {SCHEMA_VERSION}: rebuild it"
            )
        self._meta: GraphMeta | None = None

    # -- meta -----------------------------------------------------------------------------
    def _set_meta(self, key: str, value: Any) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value))
        )

    def _get_meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def write_meta(self, meta: GraphMeta, history: Sequence[float]) -> None:
        self._set_meta(
            "graph",
            {
                "graph_id": meta.graph_id,
                "n_layers": meta.n_layers,
                "spatial_bits": meta.spatial_bits,
                "chunk_size": list(meta.chunk_size),
                "voxel_offset": list(meta.voxel_offset),
                "volume_size": list(meta.volume_size),
                "resolution": list(meta.resolution),
            },
        )
        self._set_meta("history", [float(t) for t in history])
        self.conn.commit()

    @property
    def meta(self) -> GraphMeta:
        if self._meta is None:
            raw = self._get_meta("graph")
            if raw is None:
                raise GraphFileError(f"{self.path} has no graph metadata: the build did not finish")
            self._meta = GraphMeta(
                graph_id=raw["graph_id"],
                n_layers=int(raw["n_layers"]),
                spatial_bits=int(raw["spatial_bits"]),
                chunk_size=tuple(int(v) for v in raw["chunk_size"]),  # type: ignore[arg-type]
                voxel_offset=tuple(int(v) for v in raw["voxel_offset"]),  # type: ignore[arg-type]
                volume_size=tuple(int(v) for v in raw["volume_size"]),  # type: ignore[arg-type]
                resolution=tuple(float(v) for v in raw["resolution"]),  # type: ignore[arg-type]
            )
        return self._meta

    def history(self) -> list[float]:
        return [float(t) for t in self._get_meta("history", [])]

    def custom_data(self) -> dict[str, Any]:
        return dict(self._get_meta("custom_data", {}))

    def set_custom_data(self, data: dict[str, Any]) -> None:
        self._set_meta("custom_data", data)
        self.conn.commit()

    # -- writing (used by the builder) ----------------------------------------------------
    def add_nodes(self, rows: Iterable[tuple[int, int, float]]) -> None:
        """Insert (id, layer, created) rows."""
        self.conn.executemany(
            "INSERT INTO nodes (id, layer, created) VALUES (?, ?, ?)",
            ((int(i), int(layer), float(t)) for i, layer, t in rows),
        )

    def add_children(self, rows: Iterable[tuple[int, int]]) -> None:
        """Insert (parent, child) rows."""
        self.conn.executemany(
            "INSERT INTO children (parent, child) VALUES (?, ?)",
            ((int(p), int(c)) for p, c in rows),
        )

    def expire_nodes(self, node_ids: Iterable[int], timestamp: float) -> None:
        self.conn.executemany(
            "UPDATE nodes SET expired = ? WHERE id = ? AND expired IS NULL",
            ((float(timestamp), int(i)) for i in node_ids),
        )

    def add_supervoxels(self, rows: Iterable[tuple[int, int]]) -> None:
        """Insert (layer-1 id, original watershed id) rows."""
        self.conn.executemany(
            "INSERT INTO supervoxels (id, original) VALUES (?, ?)",
            ((int(i), int(o)) for i, o in rows),
        )

    def commit(self) -> None:
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()

    # -- reading --------------------------------------------------------------------------
    def _chunk_range(self, layer: int, chunk_id: int) -> tuple[int, int]:
        return chunk_id, chunk_id + self.meta.codec.max_segment_id(layer)

    def l2_ids(self, supervoxels: np.ndarray, timestamp: float) -> np.ndarray:
        svs = np.asarray(supervoxels, dtype=np.uint64)
        unique = np.unique(svs)
        unique = unique[unique != 0]
        if unique.size == 0:
            return np.zeros_like(svs)
        codec = self.meta.codec
        chunk_ids = ids.chunk_ids_of(codec, unique, 1)
        mapping: dict[int, int] = {}
        for chunk in np.unique(chunk_ids):
            lo, hi = self._chunk_range(1, int(chunk))
            rows = self.conn.execute(
                "SELECT c.child, c.parent FROM children c JOIN nodes n ON n.id = c.parent "
                f"WHERE c.child BETWEEN ? AND ? AND n.layer = 2 AND {_ALIVE}",
                (lo, hi, timestamp, timestamp),
            )
            mapping.update(rows)
        keys = np.fromiter(mapping.keys(), dtype=np.uint64, count=len(mapping))
        values = np.fromiter(mapping.values(), dtype=np.uint64, count=len(mapping))
        order = np.argsort(keys)
        keys, values = keys[order], values[order]
        missing = np.setdiff1d(unique, keys)
        if missing.size:
            raise MeshingError(
                f"supervoxel {int(missing[0])} has no layer-2 parent at {timestamp}: "
                "the segmentation does not match this graph, or the timestamp precedes the graph"
            )
        pos = np.searchsorted(keys, svs).clip(0, len(keys) - 1)
        return np.where(svs == 0, np.uint64(0), values[pos]).astype(np.uint64)

    def chunk_nodes(self, layer: int, coords: Sequence[int], timestamp: float) -> np.ndarray:
        self.meta.check_layer(layer, lowest=1)
        lo, hi = self._chunk_range(layer, self.meta.chunk_id(layer, coords))
        rows = self.conn.execute(
            f"SELECT n.id FROM nodes n WHERE n.id BETWEEN ? AND ? AND {_ALIVE} ORDER BY n.id",
            (lo, hi, timestamp, timestamp),
        ).fetchall()
        return np.array([r[0] for r in rows], dtype=np.uint64)

    def children(self, node_ids: Sequence[int]) -> dict[int, np.ndarray]:
        out: dict[int, list[int]] = {int(n): [] for n in node_ids}
        keys = list(out)
        for part in _chunks(keys):
            marks = ",".join("?" * len(part))
            for parent, child in self.conn.execute(
                f"SELECT parent, child FROM children WHERE parent IN ({marks}) ORDER BY child",
                part,
            ):
                out[parent].append(child)
        return {k: np.array(v, dtype=np.uint64) for k, v in out.items()}

    def parents(self, node_ids: Sequence[int], timestamp: float) -> dict[int, int]:
        """Parent of each node at ``timestamp``; nodes without one (roots) are left out.

        The parent is the newest one created by ``timestamp``, as in PyChunkedGraph, whose
        parent cells are never deleted: for a node alive at ``timestamp`` that is its alive
        parent; a superseded node keeps pointing at the parent it had when it was replaced, so
        the root of a superseded node is the superseded root, on both backends.
        """
        out: dict[int, int] = {}
        keys = sorted({int(n) for n in node_ids})
        for part in _chunks(keys):
            marks = ",".join("?" * len(part))
            # SQLite returns the bare column (parent) of the row holding MAX(created)
            rows = self.conn.execute(
                "SELECT c.child, c.parent, MAX(n.created) FROM children c "
                "JOIN nodes n ON n.id = c.parent "
                f"WHERE c.child IN ({marks}) AND n.created <= ? GROUP BY c.child",
                (*part, timestamp),
            )
            out.update((child, parent) for child, parent, _ in rows)
        return out

    def _climb(self, node_ids: np.ndarray, timestamp: float, stop_layer: int) -> np.ndarray:
        """Walk parents while the parent's layer is <= stop_layer."""
        current = {int(n): int(n) for n in np.unique(np.asarray(node_ids, dtype=np.uint64))}
        current.pop(0, None)
        frontier = set(current.values())
        while frontier:
            parents = self.parents(sorted(frontier), timestamp)
            step = {
                child: parent
                for child, parent in parents.items()
                if ids.layer_of(parent) <= stop_layer
            }
            for start, node in current.items():
                if node in step:
                    current[start] = step[node]
            frontier = set(step.values())
        flat = np.asarray(node_ids, dtype=np.uint64)
        return np.array([current.get(int(n), 0) for n in flat.flat], dtype=np.uint64).reshape(
            flat.shape
        )

    def ancestors(self, node_ids: np.ndarray, layer: int, timestamp: float) -> np.ndarray:
        return self._climb(node_ids, timestamp, layer)

    def roots(self, node_ids: np.ndarray, timestamp: float) -> np.ndarray:
        return self._climb(node_ids, timestamp, self.meta.n_layers)

    def max_chunk_node_count(self, layer: int) -> int:
        """Largest node count of any chunk of ``layer`` over the whole history.

        A chunk's count is highest at some history point (only edits change it), so the maximum
        over history points of the per-chunk alive count is exact.
        """
        self.meta.check_layer(layer, lowest=1)
        shift = self.meta.codec.segid_bits(layer)
        best = 0
        for t in self.history() or [float("inf")]:
            row = self.conn.execute(
                f"SELECT MAX(cnt) FROM (SELECT COUNT(*) AS cnt FROM nodes n "
                f"WHERE n.layer = ? AND {_ALIVE} GROUP BY (n.id >> ?))",
                (layer, t, t, shift),
            ).fetchone()
            best = max(best, int(row[0] or 0))
        return best

    def node_counts(self, timestamp: float) -> dict[int, int]:
        rows = self.conn.execute(
            f"SELECT n.layer, COUNT(*) FROM nodes n WHERE {_ALIVE} GROUP BY n.layer",
            (timestamp, timestamp),
        )
        counts = {layer: 0 for layer in range(1, self.meta.n_layers + 1)}
        counts.update({int(layer): int(c) for layer, c in rows})
        return counts

    def original_ids(self, supervoxels: Sequence[int]) -> dict[int, int]:
        """Original watershed id of each layer-1 supervoxel id."""
        out: dict[int, int] = {}
        keys = sorted({int(s) for s in supervoxels})
        for part in _chunks(keys):
            marks = ",".join("?" * len(part))
            out.update(
                self.conn.execute(
                    f"SELECT id, original FROM supervoxels WHERE id IN ({marks})", part
                )
            )
        return out

    def dataset_info(self) -> dict[str, Any]:
        """Segmentation info plus the graph block, as the ChunkedGraph serves it to cloud-volume."""
        if self.watershed is None:
            raise GraphFileError(
                "dataset_info needs the watershed path (open the graph from its config)"
            )
        from cloudvolume import CloudVolume  # heavy import, only here

        ws_info = CloudVolume(self.watershed, progress=False).info
        meta = self.meta
        start = np.asarray(meta.voxel_offset)
        stop = start + np.asarray(meta.volume_size)
        info = json.loads(json.dumps(ws_info))
        info["graph"] = {
            "chunk_size": list(meta.chunk_size),
            "n_bits_for_layer_id": ids.LAYER_ID_BITS,
            "n_layers": meta.n_layers,
            "cv_mip": 0,
            "fan_out": ids.FANOUT,
            "spatial_bit_masks": {str(k): v for k, v in meta.codec.bitmasks.items()},
            "bounding_box": [start.tolist(), stop.tolist()],
            "uses_new_draco_bin_size": False,
        }
        info["chunks_start_at_voxel_offset"] = True
        info["data_dir"] = self.watershed
        info["app"] = {"supported_api_versions": [0, 1]}
        return info


def open_embedded(config: Any, *, read_only: bool = False) -> EmbeddedGraph:
    """Open the embedded graph a ``GraphConfig`` names (use ``meshing_core.graph.open_graph``)."""
    from meshing_core.store.paths import local_path

    path = local_path(config.graph_path)
    if path is None:
        raise GraphFileError(
            f"graph path {config.graph_path} is remote: the embedded graph must be a local file"
        )
    return EmbeddedGraph(path, watershed=config.watershed, read_only=read_only)
