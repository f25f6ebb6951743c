"""PyChunkedGraph backend: a CAVE deployment's graph (BigTable), read through its own API.

Written against seung-lab/PyChunkedGraph at commit c1b7740d00e0872ab6e31fdd332ed6dccf3a036f
(``pychunkedgraph.graph.ChunkedGraph`` and its ``meta``). Only the public read API is used:
``ChunkedGraph(graph_id=...)``, ``meta`` (layer count, bitmasks, chunk size, resolution, voxel
bounds, watershed path, custom data, dataset info), ``range_read_chunk`` at a timestamp,
``get_parents``, ``get_children``, ``get_roots`` (with ``stop_layer``), ``is_latest_roots``,
``id_client.get_max_node_id`` and ``update_meta`` for the custom data ``mesh`` block.

Every query is one call per node list or per chunk, never one per node: on BigTable the round
trip is the cost. PyChunkedGraph is imported lazily, here only, so nothing else needs it
installed. Credentials come from the environment PyChunkedGraph itself reads
(``GOOGLE_APPLICATION_CREDENTIALS``, ``BIGTABLE_PROJECT``, ``BIGTABLE_INSTANCE``), never from
a config file.

Two semantics differ from the embedded file and are handled here:
- PyChunkedGraph never deletes a row: a chunk's range read at time t returns every node created
  by t, superseded ones included. An edit replaces every ancestor of what it changes up to the
  root, and only roots are marked superseded (``NewParent``), so a node is alive at t exactly
  when its root at t is a latest root at t: ``chunk_nodes`` keeps those with one batched roots
  read and one ``is_latest_roots`` call per chunk.
- Node counts per layer and the edit history would need a scan of the whole table; ``node_counts``
  and ``history`` report them as unknown (empty) rather than scanning.
"""

from __future__ import annotations

import copy
import datetime
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from meshing_core import ids
from meshing_core.errors import MeshingError
from meshing_core.graph.protocol import GraphMeta

log = logging.getLogger(__name__)

#: The commit this backend was written and checked against.
PCG_COMMIT = "c1b7740d00e0872ab6e31fdd332ed6dccf3a036f"
CREDENTIAL_VARIABLES = ("GOOGLE_APPLICATION_CREDENTIALS", "BIGTABLE_PROJECT", "BIGTABLE_INSTANCE")
INSTALL_HINT = (
    "install it with `make pychunkedgraph` (PyChunkedGraph at c1b7740 with --no-deps, plus the "
    "modules its read path imports: pip install '.[pychunkedgraph]'); see the README's CAVE section"
)
#: Chunks of one layer whose id counters size the minishards (all of them when fewer).
COUNTER_SAMPLE = 1024


class PyChunkedGraphError(MeshingError):
    """The PyChunkedGraph backend cannot be used: not installed, no credentials, unknown graph."""


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _until(timestamp: float) -> datetime.datetime:
    """The time bound that makes every read see the cells written at or before ``timestamp``.

    BigTable keeps milliseconds and its time range end is exclusive whatever PyChunkedGraph's
    ``end_time_inclusive`` says (that only rounds a sub-millisecond end up). One millisecond
    past ``timestamp``'s millisecond, passed to every call, gives "at or before t" everywhere,
    the embedded graph's meaning, including for edits made exactly at t.
    """
    millis = int(np.floor(round(float(timestamp) * 1e6) / 1000.0))
    return _EPOCH + datetime.timedelta(milliseconds=millis + 1)


def _uint64(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.uint64).reshape(-1)


def _on_unique(
    values: Any, answer: Callable[[np.ndarray], Any], problem: Callable[[int], str]
) -> np.ndarray:
    """One call for the distinct non-zero ids of ``values``, spread back to their shape (0 stays
    0); an id answered 0 (PyChunkedGraph's ``fail_to_zero``) is an error named by ``problem``."""
    flat = np.asarray(values, dtype=np.uint64)
    unique = np.unique(flat)
    unique = unique[unique != 0]
    if unique.size == 0:
        return np.zeros_like(flat)
    found = _uint64(answer(unique))
    if found.size != unique.size or np.any(found == 0):
        missing = unique if found.size != unique.size else unique[found == 0]
        raise MeshingError(problem(int(missing[0])))
    pos = np.searchsorted(unique, flat).clip(0, unique.size - 1)
    return np.where(flat == 0, np.uint64(0), found[pos]).astype(np.uint64)


def check_credentials() -> None:
    """Refuse, in one line, an environment PyChunkedGraph would read the wrong project from."""
    missing = [name for name in CREDENTIAL_VARIABLES if not os.environ.get(name, "").strip()]
    if missing:
        raise PyChunkedGraphError(
            f"PyChunkedGraph backend: {', '.join(missing)} not set: export "
            f"{', '.join(CREDENTIAL_VARIABLES)} as the meshing procedure describes (a service "
            "account key file, the BigTable project and instance)"
        )
    key = Path(os.environ["GOOGLE_APPLICATION_CREDENTIALS"])
    if not key.is_file():
        raise PyChunkedGraphError(
            f"PyChunkedGraph backend: GOOGLE_APPLICATION_CREDENTIALS names {key}, which is not a "
            "file: point it at the service account's JSON key"
        )


class _NeedsGraphTool:
    """Stands for a graph_tool name: PyChunkedGraph's edit code imports graph_tool (conda only)
    at module level, but its read path never calls it."""

    def __init__(self, *args: Any, **kwargs: Any):
        raise ImportError("graph_tool is needed for PyChunkedGraph edits, not for meshing")


def _graph_tool_placeholder() -> None:
    """Register placeholder ``graph_tool`` modules whose names are ``_NeedsGraphTool``."""
    import types

    for name in ("graph_tool", "graph_tool.flow", "graph_tool.search", "graph_tool.topology"):
        module = types.ModuleType(name)
        module.__getattr__ = lambda attr: _NeedsGraphTool  # type: ignore[method-assign]
        sys.modules[name] = module


def _chunkedgraph_class() -> Any:
    for attempt in range(2):
        try:
            from pychunkedgraph.graph import ChunkedGraph
        except ImportError as exc:
            missing = (getattr(exc, "name", None) or "").split(".")[0]
            if attempt == 0 and missing == "graph_tool":
                for name in [m for m in sys.modules if m.split(".")[0] == "pychunkedgraph"]:
                    del sys.modules[name]  # half-imported: import again with the placeholder
                _graph_tool_placeholder()
                continue
            raise PyChunkedGraphError(
                f"PyChunkedGraph is not installed ({exc}): {INSTALL_HINT}"
            ) from None
        _check_bigtable_client()
        return ChunkedGraph
    raise AssertionError("unreachable")


def _check_bigtable_client() -> None:
    """PyChunkedGraph at this commit assigns ``RowSet.row_keys``, read-only since
    google-cloud-bigtable 2.46: every read would fail deep inside the client."""
    if "google.cloud.bigtable" not in sys.modules:
        return  # this PyChunkedGraph does not read through google-cloud-bigtable
    from google.cloud.bigtable.row_set import RowSet

    try:
        RowSet().row_keys = []
    except AttributeError:
        from importlib.metadata import version

        raise PyChunkedGraphError(
            f"google-cloud-bigtable {version('google-cloud-bigtable')} is too new for "
            "PyChunkedGraph at c1b7740 (it assigns RowSet.row_keys, read-only since 2.46): "
            "install 'google-cloud-bigtable<2.46' (`make pychunkedgraph` does)"
        ) from None


def _child_attribute() -> Any:
    from pychunkedgraph.graph import attributes

    return attributes.Hierarchy.Child


def connect(graph_id: str) -> Any:
    """``ChunkedGraph(graph_id=...)`` after the checks; one line naming the fix on failure."""
    if not graph_id or not str(graph_id).strip():
        raise PyChunkedGraphError("PyChunkedGraph backend: give a graph id (graph.graph_id)")
    chunked_graph = _chunkedgraph_class()
    check_credentials()
    where = f"{os.environ['BIGTABLE_PROJECT']}/{os.environ['BIGTABLE_INSTANCE']}"
    try:
        return chunked_graph(graph_id=str(graph_id))
    except Exception as exc:  # the client's own errors: missing table or meta row, auth, network
        reason = " ".join(str(exc).split()) or type(exc).__name__
        fix = (
            "point GOOGLE_APPLICATION_CREDENTIALS at a valid service account key with BigTable "
            "read access"
            if "Credentials" in type(exc).__name__ or "RefreshError" in type(exc).__name__
            else "check the graph id (--cg_name or graph.graph_id) and BIGTABLE_PROJECT / "
            "BIGTABLE_INSTANCE"
        )
        raise PyChunkedGraphError(
            f"PyChunkedGraph graph {graph_id!r} cannot be opened in BigTable {where} "
            f"({type(exc).__name__}: {reason[:200]}): {fix}"
        ) from None


def graph_meta(cg: Any) -> GraphMeta:
    """Our ``GraphMeta`` from PyChunkedGraph's, refusing layouts our id codec does not share."""
    meta = cg.meta
    config = meta.graph_config
    name = cg.graph_id
    if int(config.FANOUT) != ids.FANOUT or int(config.LAYER_ID_BITS) != ids.LAYER_ID_BITS:
        raise PyChunkedGraphError(
            f"PyChunkedGraph graph {name!r} has fanout {config.FANOUT} and {config.LAYER_ID_BITS} "
            f"layer bits; this mesher handles fanout {ids.FANOUT} and {ids.LAYER_ID_BITS} bits only"
        )
    cv_mip = int(getattr(meta.data_source, "CV_MIP", 0) or 0)
    if cv_mip != 0:
        raise PyChunkedGraphError(
            f"PyChunkedGraph graph {name!r} was ingested at watershed mip {cv_mip}; this mesher "
            "reads graphs ingested at mip 0 only"
        )
    bounds = np.asarray(meta.voxel_bounds, dtype=np.int64)  # [[x0, x1], [y0, y1], [z0, z1]]
    ours = GraphMeta(
        graph_id=str(name),
        n_layers=int(meta.layer_count),
        spatial_bits=int(config.SPATIAL_BITS),
        chunk_size=tuple(int(c) for c in config.CHUNK_SIZE),  # type: ignore[arg-type]
        voxel_offset=tuple(int(v) for v in bounds[:, 0]),  # type: ignore[arg-type]
        volume_size=tuple(int(v) for v in bounds[:, 1] - bounds[:, 0]),  # type: ignore[arg-type]
        resolution=tuple(float(r) for r in meta.resolution),  # type: ignore[arg-type]
    )
    theirs = {int(k): int(v) for k, v in dict(meta.bitmasks).items()}
    mine = {int(k): int(v) for k, v in ours.codec.bitmasks.items()}
    if any(theirs.get(layer) != bits for layer, bits in mine.items()):
        raise PyChunkedGraphError(
            f"PyChunkedGraph graph {name!r} has id bitmasks {theirs}, not the ChunkedGraph layout "
            f"{mine} this mesher decodes: the graph was built with another id scheme"
        )
    return ours


def _watershed_path(location: str) -> str:
    """PyChunkedGraph's watershed path as cloud-volume takes it, without ``precomputed://``."""
    prefix = "precomputed://"
    return (location[len(prefix) :] if location.startswith(prefix) else location).rstrip("/")


class PyChunkedGraphReader:
    """``ChunkedGraphReader`` over a ``pychunkedgraph.graph.ChunkedGraph``.

    Children never change, so the children read by a chunk range read are kept (until the next
    chunk's read) and answered from memory: stitching asks for the children of the nodes it
    just listed.
    """

    def __init__(self, cg: Any, watershed: str | None = None):
        self.cg = cg
        try:  # the meta reads the watershed's info through cloud-volume
            self.meta = graph_meta(cg)
        except PyChunkedGraphError:
            raise
        except Exception as exc:
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise PyChunkedGraphError(
                f"PyChunkedGraph graph {cg.graph_id!r}: its watershed "
                f"{cg.meta.data_source.WATERSHED} cannot be read ({reason}): check the "
                "watershed's info file and the credentials for its bucket"
            ) from None
        own = _watershed_path(str(cg.meta.data_source.WATERSHED))
        if watershed is not None and watershed.rstrip("/") != own:
            raise PyChunkedGraphError(
                f"the config's watershed {watershed} is not the one PyChunkedGraph graph "
                f"{self.meta.graph_id!r} was ingested from ({own}): set watershed: {own}"
            )
        self.watershed = own
        self._children: dict[int, np.ndarray] = {}

    # -- per node list ------------------------------------------------------------------------
    def l2_ids(self, supervoxels: np.ndarray, timestamp: float) -> np.ndarray:
        def parents(unique: np.ndarray) -> np.ndarray:
            return self.cg.get_parents(unique, time_stamp=_until(timestamp), fail_to_zero=True)

        return _on_unique(
            supervoxels,
            parents,
            lambda sv: (
                f"supervoxel {sv} has no layer-2 parent at {timestamp} in PyChunkedGraph "
                f"graph {self.meta.graph_id!r}: the watershed does not match this graph, or the "
                "timestamp precedes the graph"
            ),
        )

    def children(self, node_ids: Sequence[int]) -> dict[int, np.ndarray]:
        wanted = [int(n) for n in node_ids]
        missing = sorted({n for n in wanted if n not in self._children})
        if missing:
            read = self.cg.get_children(np.array(missing, dtype=np.uint64))
            for key, value in read.items():
                self._children[int(key)] = np.sort(_uint64(value))
            for node in missing:  # unknown ids: no children, as PyChunkedGraph answers
                self._children.setdefault(node, np.zeros(0, dtype=np.uint64))
        return {n: self._children[n] for n in wanted}

    def _highest(self, node_ids: np.ndarray, stop_layer: int, timestamp: float) -> np.ndarray:
        def highest(unique: np.ndarray) -> np.ndarray:
            return self.cg.get_roots(
                unique,
                time_stamp=_until(timestamp),
                stop_layer=int(stop_layer),
                ceil=False,
                fail_to_zero=True,
            )

        return _on_unique(
            node_ids,
            highest,
            lambda node: (
                f"node {node} has no parent at {timestamp} in PyChunkedGraph graph "
                f"{self.meta.graph_id!r}: the timestamp precedes the node"
            ),
        )

    def ancestors(self, node_ids: np.ndarray, layer: int, timestamp: float) -> np.ndarray:
        return self._highest(node_ids, min(int(layer), self.meta.n_layers), timestamp)

    def roots(self, node_ids: np.ndarray, timestamp: float) -> np.ndarray:
        return self._highest(node_ids, self.meta.n_layers, timestamp)

    # -- per chunk ----------------------------------------------------------------------------
    def chunk_nodes(self, layer: int, coords: Sequence[int], timestamp: float) -> np.ndarray:
        self.meta.check_layer(layer)
        when = _until(timestamp)
        rows = self.cg.range_read_chunk(
            np.uint64(self.meta.chunk_id(layer, coords)),
            properties=_child_attribute(),
            time_stamp=when,
        )
        if not rows:
            return np.zeros(0, dtype=np.uint64)
        nodes = np.array(sorted(int(k) for k in rows), dtype=np.uint64)
        self._children = {}  # keep one chunk's rows: a worker's memory must not grow per chunk
        for node in nodes:  # newest cell first, as BigTable returns them
            self._children[int(node)] = np.sort(_uint64(rows[node][0].value))
        # superseded rows stay: a node is alive when its root at t is not superseded at t (an
        # edit replaces every ancestor of what it changes, up to the root)
        roots = _uint64(self.cg.get_roots(nodes, time_stamp=when, fail_to_zero=True))
        unique = np.unique(roots[roots != 0])
        if unique.size == 0:
            return np.zeros(0, dtype=np.uint64)
        latest = np.asarray(self.cg.is_latest_roots(unique, time_stamp=when), dtype=bool)
        return nodes[np.isin(roots, unique[latest])]

    def max_chunk_node_count(self, layer: int) -> int:
        """An upper bound from PyChunkedGraph's id counters (nodes ever made in a chunk).

        Counting alive nodes over history would scan the table, so this reads the counter of
        every chunk of the layer, or of ``COUNTER_SAMPLE`` chunks spread evenly over it on big
        layers (the count only sizes minishard indices: a low guess makes them larger, not
        wrong). The root chunk's counter spreads ids over 256 sub-counters and is read whole.
        """
        self.meta.check_layer(layer)
        bounds = self.meta.layer_chunk_bounds(layer)
        total = int(np.prod(bounds))
        picks = np.unique(np.linspace(0, total - 1, min(total, COUNTER_SAMPLE)).astype(np.int64))
        root = layer == self.meta.n_layers
        best = 0
        for index in picks:
            coords = np.unravel_index(int(index), bounds)
            chunk = np.uint64(self.meta.chunk_id(layer, [int(c) for c in coords]))
            top = int(self.cg.id_client.get_max_node_id(chunk, root_chunk=root))
            best = max(best, top & int(self.meta.codec.max_segment_id(layer)))
        return best

    # -- whole graph --------------------------------------------------------------------------
    def node_counts(self, timestamp: float) -> dict[int, int]:
        return {}  # a whole-table scan on BigTable: not done (callers show "unknown")

    def history(self) -> list[float]:
        return []  # the operation log can hold millions of edits: not read

    def custom_data(self) -> dict[str, Any]:
        return copy.deepcopy(dict(self.cg.meta.custom_data or {}))

    def set_custom_data(self, data: dict[str, Any]) -> None:
        """Replace the custom data in place and store the meta through ``update_meta``."""
        custom = self.cg.meta.custom_data
        for key in [k for k in custom if k not in data]:
            del custom[key]
        custom.update(copy.deepcopy(data))
        # overwrite=False: one new cell in one row mutation (reads take the newest). The
        # procedure's overwrite=True deletes the meta row first, and a failure between the two
        # writes would leave the production graph without meta.
        self.cg.update_meta(self.cg.meta, overwrite=False)

    def dataset_info(self) -> dict[str, Any]:
        """What the ChunkedGraph server's ``info`` endpoint serves for this graph."""
        info = copy.deepcopy(dict(self.cg.meta.dataset_info))
        info["app"] = {"supported_api_versions": [0, 1]}
        info["sharded_mesh"] = True
        mesh = dict(self.cg.meta.custom_data or {}).get("mesh") or {}
        info["verify_mesh"] = bool(mesh.get("verify", False))
        if mesh.get("dir"):
            info["mesh_dir"] = mesh["dir"]
        return info

    def close(self) -> None:
        self._children.clear()


def open_pychunkedgraph(config: Any) -> PyChunkedGraphReader:
    """Open the PyChunkedGraph graph a ``GraphConfig`` names (use ``graph.open_graph``)."""
    return PyChunkedGraphReader(connect(config.graph_id), watershed=config.watershed)


def describe_graph(graph_id: str) -> dict[str, Any]:
    """What a config needs from the graph itself (for ``--cg_name``: nothing is on disk)."""
    reader = PyChunkedGraphReader(connect(graph_id))
    try:
        meta = reader.meta
        return {
            "graph_id": meta.graph_id,
            "watershed": reader.watershed,
            "chunk_size": meta.chunk_size,
            "n_layers": meta.n_layers,
            "spatial_bits": meta.spatial_bits,
            "custom_mesh": reader.custom_data().get("mesh") or {},
        }
    finally:
        reader.close()
