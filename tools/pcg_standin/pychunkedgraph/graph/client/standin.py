"""The stand-in's "BigTable table": a folder holding ``meta.json`` and ``graph.sqlite``.

``graph.sqlite`` is an embedded ChunkedGraph file (tables ``nodes(id, layer, created,
expired)``, ``children(child, parent)``), opened read-only. It is presented as PyChunkedGraph's
rows, one per node id, with these columns (cells newest first, timestamps at BigTable's
millisecond resolution, tz-aware UTC):

* ``Hierarchy.Child`` (nodes of layer >= 2): one cell, the sorted children, at the node's
  creation time;
* ``Hierarchy.Parent`` (any node): one cell per parent the node ever had, at that parent's
  creation time, so the parent "at t" is the newest cell not after t, even for a node that is no
  longer alive at t (it keeps pointing at its old parent, as in PyChunkedGraph);
* ``Hierarchy.NewParent`` (expired root-layer nodes): one cell at the expiry time holding the
  root-layer nodes created at that time;
* ``Hierarchy.FormerParent`` (root-layer nodes created by an edit): one cell at the creation
  time holding the root-layer nodes that expired then.

A row without a visible cell in the requested columns is absent from a read's result.
"""

import datetime
import functools
import json
import os
import sqlite3
import threading
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np

from .. import attributes, exceptions
from .._counting import counted
from ..meta import ChunkedGraphMeta, DataSource, GraphConfig
from ..utils import basetypes
from ..utils.id_helpers import get_segment_id_limit

TABLES_ENV = "PCG_STANDIN_TABLES"
META_FILE = "meta.json"
GRAPH_FILE = "graph.sqlite"

_SQLITE_MAX = (1 << 63) - 1
_MAX_VARS = 900  # below SQLite's bound on host parameters
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MICROSECOND = datetime.timedelta(microseconds=1)
_MODELLED = (
    attributes.Hierarchy.Child,
    attributes.Hierarchy.Parent,
    attributes.Hierarchy.NewParent,
    attributes.Hierarchy.FormerParent,
)


class Cell:
    """One versioned value of a column: ``value`` and its ``timestamp`` (tz-aware UTC)."""

    __slots__ = ("value", "timestamp", "labels")

    def __init__(self, value, timestamp: datetime.datetime):
        self.value = value
        self.timestamp = timestamp
        self.labels: list = []

    def __eq__(self, other):
        if not isinstance(other, Cell):
            return NotImplemented
        return self.timestamp == other.timestamp and bool(np.array_equal(self.value, other.value))

    __hash__ = None

    def __repr__(self):
        return f"<Cell value={self.value!r} timestamp={self.timestamp.isoformat()}>"


# -- time ---------------------------------------------------------------------------------------
def _to_micros(moment: datetime.datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return (moment - _EPOCH) // _MICROSECOND


def _floor_ms(micros: int) -> int:
    return micros - micros % 1000


def _cell_micros(seconds: float) -> int:
    """A stored Unix time as a cell timestamp: microseconds, truncated to the millisecond."""
    return _floor_ms(round(seconds * 1_000_000))


@functools.lru_cache(maxsize=4096)
def _stamp(micros: int) -> datetime.datetime:
    return _EPOCH + datetime.timedelta(microseconds=micros)


class _Window:
    """The cell timestamps a read sees, as BigTable's time range filter does.

    PyChunkedGraph rounds the start down and the end up (``end_inclusive``) or down to whole
    milliseconds, and BigTable's range end is always exclusive: an "inclusive" read at a whole
    millisecond t does not see a cell written at exactly t.
    """

    def __init__(self, start_time=None, end_time=None, end_inclusive=False):
        self.low = None if start_time is None else _floor_ms(_to_micros(start_time))
        if end_time is None:
            self.high = None
        else:
            micros = _to_micros(end_time)
            end = _floor_ms(micros)
            if end_inclusive and end != micros:
                end += 1000  # rounded up to the next millisecond
            self.high = end - 1  # exclusive end

    def __contains__(self, micros: int) -> bool:
        return (self.low is None or micros >= self.low) and (
            self.high is None or micros <= self.high
        )


# -- row selections -----------------------------------------------------------------------------
class _Rows:
    """Row keys to read: explicit ids, or the inclusive range [low, high]."""

    def __init__(self, ids=None, low=None, high=None):
        self.ids = ids
        self.low = low
        self.high = high

    @classmethod
    def of_ids(cls, node_ids) -> "_Rows":
        keys = set()
        for node_id in node_ids:
            key = int(node_id)
            if 0 <= key <= _SQLITE_MAX:  # larger ids cannot be stored, so have no row
                keys.add(key)
        return cls(ids=sorted(keys))

    def empty(self) -> bool:
        if self.ids is not None:
            return not self.ids
        return self.low > self.high

    def clauses(self, column: str):
        """(SQL condition on ``column``, parameters) pieces covering the selection."""
        if self.ids is not None:
            for start in range(0, len(self.ids), _MAX_VARS):
                part = self.ids[start : start + _MAX_VARS]
                yield f"{column} IN ({','.join('?' * len(part))})", part
        elif self.low <= self.high:
            yield f"{column} BETWEEN ? AND ?", (self.low, self.high)


# -- meta.json ----------------------------------------------------------------------------------
def _json_default(obj):
    if isinstance(obj, datetime.timedelta):
        return {"__timedelta_seconds__": obj.total_seconds()}
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"meta value {obj!r} of type {type(obj).__name__} is not JSON serializable")


def _json_object(data: dict):
    if set(data) == {"__timedelta_seconds__"}:
        return datetime.timedelta(seconds=data["__timedelta_seconds__"])
    return data


def meta_to_json(meta: ChunkedGraphMeta) -> str:
    document = {
        "graph_config": meta.graph_config._asdict(),
        "data_source": meta.data_source._asdict(),
        "custom_data": meta.custom_data,
    }
    return json.dumps(document, default=_json_default, indent=2, sort_keys=True)


def meta_from_json(text: str) -> ChunkedGraphMeta:
    document = json.loads(text, object_hook=_json_object)

    def pick(record, data):
        return record(**{k: v for k, v in (data or {}).items() if k in record._fields})

    return ChunkedGraphMeta(
        pick(GraphConfig, document.get("graph_config")),
        pick(DataSource, document.get("data_source")),
        document.get("custom_data") or {},
    )


def write_meta_file(table_dir: Path, text: str) -> None:
    """Write ``meta.json`` atomically (a temporary file renamed over it)."""
    target = Path(table_dir) / META_FILE
    temporary = target.with_name(f".{META_FILE}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    finally:
        if temporary.exists():
            temporary.unlink()


def tables_dir() -> Path:
    root = os.environ.get(TABLES_ENV)
    if not root:
        raise RuntimeError(
            f"{TABLES_ENV} is not set: the PyChunkedGraph stand-in needs the folder of its tables"
        )
    return Path(root)


# -- the client ---------------------------------------------------------------------------------
class StandinClient:
    """Reads one stand-in table; also the graph's id client (``get_max_node_id``)."""

    def __init__(self, table_id: str, config=None, graph_meta: ChunkedGraphMeta | None = None):
        if not table_id:
            raise ValueError("a graph id is required")
        self._table_id = table_id
        self._table_dir = tables_dir() / table_id
        self._config = config
        self._graph_meta = graph_meta
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._conn_pid: int | None = None
        self._roots_cache: dict = {}

    @property
    def table_dir(self) -> Path:
        return self._table_dir

    @property
    def graph_meta(self) -> ChunkedGraphMeta | None:
        return self._graph_meta

    def exists(self) -> bool:
        return (self._table_dir / META_FILE).is_file()

    # -- meta ---------------------------------------------------------------------------------
    def create_graph(self, meta: ChunkedGraphMeta, version: str) -> None:
        raise NotImplementedError(
            "the PyChunkedGraph stand-in cannot create graphs: use tools.pcg_standin.create_table"
        )

    @counted("read_graph_meta")
    def read_graph_meta(self) -> ChunkedGraphMeta:
        path = self._table_dir / META_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            # BigTable answers an empty row; indexing it by the meta column raises KeyError
            raise KeyError(attributes.GraphMeta.Meta) from None
        self._graph_meta = meta_from_json(text)
        return self._graph_meta

    @counted("update_graph_meta")
    def update_graph_meta(self, meta: ChunkedGraphMeta, overwrite: bool | None = False) -> None:
        if not self._table_dir.is_dir():
            raise KeyError(f"table {self._table_id} does not exist")
        self._graph_meta = meta
        write_meta_file(self._table_dir, meta_to_json(meta))

    @counted("read_graph_version")
    def read_graph_version(self) -> str | None:
        from pychunkedgraph import __version__

        return __version__ if self.exists() else None

    # -- SQLite -------------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        pid = os.getpid()
        if self._conn is None or self._conn_pid != pid:  # never reuse a connection across fork
            path = self._table_dir / GRAPH_FILE
            if not path.is_file():
                raise FileNotFoundError(f"table {self._table_id} has no {GRAPH_FILE}")
            uri = f"{path.resolve().as_uri()}?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, timeout=60, check_same_thread=False)
            self._conn_pid = pid
            self._lock = threading.RLock()
        return self._conn

    def _select(self, sql: str, column: str, rows: _Rows, extra: tuple = ()) -> list[tuple]:
        """Run ``sql`` (with ``{where}``, a condition on ``column``) over every piece of ``rows``."""
        out: list[tuple] = []
        conn = self._connection()
        with self._lock:
            for clause, params in rows.clauses(column):
                out.extend(conn.execute(sql.format(where=clause), (*extra, *params)).fetchall())
        return out

    def _layer_range(self, layer: int) -> tuple[int, int]:
        shift = 64 - self._graph_meta.graph_config.LAYER_ID_BITS
        return layer << shift, min(((layer + 1) << shift) - 1, _SQLITE_MAX)

    def _root_layer(self) -> int:
        return int(self._graph_meta.layer_count)

    def _roots_where(self, column: str, seconds: float) -> np.ndarray:
        """Root-layer nodes whose ``column`` (created / expired) equals ``seconds``."""
        key = (column, seconds)
        if key not in self._roots_cache:
            low, high = self._layer_range(self._root_layer())
            conn = self._connection()
            with self._lock:
                found = conn.execute(
                    f"SELECT id FROM nodes WHERE id BETWEEN ? AND ? AND {column} = ? ORDER BY id",
                    (low, high, seconds),
                ).fetchall()
            self._roots_cache[key] = np.array([r[0] for r in found], dtype=basetypes.NODE_ID)
        return self._roots_cache[key].copy()

    # -- columns ------------------------------------------------------------------------------
    def _child_cells(self, rows: _Rows, window: _Window) -> dict[int, list[Cell]]:
        created = {}
        for node_id, seconds in self._select(
            "SELECT id, created FROM nodes WHERE layer >= 2 AND {where}", "id", rows
        ):
            micros = _cell_micros(seconds)
            if micros in window:
                created[node_id] = micros
        if not created:
            return {}
        kid_rows = rows if rows.ids is None else _Rows(ids=sorted(created))
        kids: dict[int, list[int]] = defaultdict(list)
        for parent, child in self._select(
            "SELECT parent, child FROM children WHERE {where}", "parent", kid_rows
        ):
            kids[parent].append(child)
        return {
            node_id: [
                Cell(
                    np.sort(np.array(kids.get(node_id, ()), dtype=basetypes.NODE_ID)),
                    _stamp(micros),
                )
            ]
            for node_id, micros in created.items()
        }

    def _parent_cells(self, rows: _Rows, window: _Window) -> dict[int, list[Cell]]:
        found: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for child, parent, seconds in self._select(
            "SELECT c.child, c.parent, n.created FROM children c "
            "JOIN nodes n ON n.id = c.parent WHERE {where}",
            "c.child",
            rows,
        ):
            micros = _cell_micros(seconds)
            if micros in window:
                found[child].append((micros, parent))
        return {
            child: [Cell(np.uint64(p), _stamp(m)) for m, p in sorted(pairs, reverse=True)]
            for child, pairs in found.items()
        }

    def _new_parent_cells(self, rows: _Rows, window: _Window) -> dict[int, list[Cell]]:
        out = {}
        for node_id, expired in self._select(
            "SELECT id, expired FROM nodes WHERE layer = ? AND expired IS NOT NULL AND {where}",
            "id",
            rows,
            (self._root_layer(),),
        ):
            micros = _cell_micros(expired)
            if micros in window:
                out[node_id] = [Cell(self._roots_where("created", expired), _stamp(micros))]
        return out

    def _former_parent_cells(self, rows: _Rows, window: _Window) -> dict[int, list[Cell]]:
        out = {}
        for node_id, created in self._select(
            "SELECT id, created FROM nodes WHERE layer = ? AND {where}",
            "id",
            rows,
            (self._root_layer(),),
        ):
            micros = _cell_micros(created)
            if micros in window:
                former = self._roots_where("expired", created)
                if former.size:
                    out[node_id] = [Cell(former, _stamp(micros))]
        return out

    def _column_cells(self, column, rows: _Rows, window: _Window) -> dict[int, list[Cell]]:
        readers = {
            attributes.Hierarchy.Child: self._child_cells,
            attributes.Hierarchy.Parent: self._parent_cells,
            attributes.Hierarchy.NewParent: self._new_parent_cells,
            attributes.Hierarchy.FormerParent: self._former_parent_cells,
        }
        return readers[column](rows, window)

    # -- reads --------------------------------------------------------------------------------
    @counted("read_nodes")
    def read_nodes(
        self,
        start_id=None,
        end_id=None,
        end_id_inclusive=False,
        user_id=None,
        node_ids=None,
        properties=None,
        start_time=None,
        end_time=None,
        end_time_inclusive: bool = False,
        fake_edges: bool = False,
    ) -> dict:
        """Rows by ids (``node_ids``) or by the key range [start_id, end_id] / [start_id, end_id).

        Returns {np.uint64 id: cells} when ``properties`` is one attribute, else
        {np.uint64 id: {attribute: cells}}.
        """
        if user_id is not None or fake_edges:
            raise NotImplementedError("the stand-in has no operation logs or fake edges")
        if properties is None:
            raise NotImplementedError(
                "the stand-in reads named columns only: pass `properties` (Hierarchy columns)"
            )
        single = isinstance(properties, attributes._Attribute)
        columns = [properties] if single else list(dict.fromkeys(properties))
        if not columns:
            raise ValueError(
                f"Empty column filter {properties} is ambiguous. Pass `None` if no column "
                "filter should be applied."
            )
        for column in columns:
            if column not in _MODELLED:
                raise NotImplementedError(
                    f"the stand-in does not store column {column.family_id}:{column.key.decode()}"
                )
        if node_ids is not None:
            rows = _Rows.of_ids(node_ids)
        elif start_id is not None and end_id is not None:
            high = int(end_id) if end_id_inclusive else int(end_id) - 1
            rows = _Rows(low=max(int(start_id), 0), high=min(high, _SQLITE_MAX))
        else:
            raise exceptions.PreconditionError(
                "Need to either provide a valid set of rows, or both, a start row and an end row."
            )
        if rows.empty():
            return {}
        window = _Window(start_time, end_time, end_time_inclusive)
        per_column = {column: self._column_cells(column, rows, window) for column in columns}
        keys = sorted(set().union(*per_column.values()))
        if single:
            cells = per_column[properties]
            return {np.uint64(key): cells[key] for key in keys}
        return {
            np.uint64(key): {c: per_column[c][key] for c in columns if key in per_column[c]}
            for key in keys
        }

    @counted("read_node")
    def read_node(
        self,
        node_id,
        properties=None,
        start_time=None,
        end_time=None,
        end_time_inclusive: bool = False,
        fake_edges: bool = False,
    ):
        """One row: its cells (one attribute) or {attribute: cells}; [] / {} when absent."""
        found = self.read_nodes(
            node_ids=[node_id],
            properties=properties,
            start_time=start_time,
            end_time=end_time,
            end_time_inclusive=end_time_inclusive,
            fake_edges=fake_edges,
        )
        empty = [] if isinstance(properties, attributes._Attribute) else {}
        return found.get(np.uint64(node_id), empty) if 0 <= int(node_id) <= _SQLITE_MAX else empty

    # -- ids ----------------------------------------------------------------------------------
    @counted("get_max_node_id")
    def get_max_node_id(self, chunk_id, root_chunk=False):
        """``chunk_id`` | the highest segment id of any node row in the chunk (0 if none)."""
        low = int(chunk_id)
        high = min(low | int(get_segment_id_limit(self._graph_meta, chunk_id)), _SQLITE_MAX)
        conn = self._connection()
        with self._lock:
            (highest,) = conn.execute(
                "SELECT MAX(id) FROM nodes WHERE id BETWEEN ? AND ?", (low, high)
            ).fetchone()
        segment = 0 if highest is None else highest - low
        return chunk_id | basetypes.SEGMENT_ID.type(segment)

    def close(self) -> None:
        if self._conn is not None and self._conn_pid == os.getpid():
            self._conn.close()
        self._conn = None
