"""Completion and failure records of chunks, rolled up per batch, and the journal of runs.

A layer's chunks have one fixed order (x outermost, z fastest: the order ``iter_chunks`` walks a
whole layer), and a record batch is a fixed-size range of indices in it. Per meshing timestamp::

    <mesh dir>/records/<timestamp key>/<layer>/batching.json               {"chunks_per_batch": n}
    <mesh dir>/records/<timestamp key>/<layer>/chunks/<00000012>/<x_y_z>.json   one chunk, new
    <mesh dir>/records/<timestamp key>/<layer>/batch-<00000012>.json       rolled-up batch
    <mesh dir>/records/<timestamp key>/<layer>/columns/<00000012>-<id>.bin  its per-chunk columns

**Concurrent writers.** Storage here (cloud-files on file://, gs://, s3://) has no
compare-and-swap, so no object is ever read-modified-written by two writers. The chunk unit
writes one small object per chunk as soon as the chunk is published (``record_chunks``): any
number of processes, pods or SQS workers can record chunks of one batch at once, and a kill
loses only the chunks still in flight. The executor that owns a batch (the batch task, one at a
time per batch: Airflow runs one try of a task instance at a time) rolls its chunk objects up
into the batch object when the batch ends (``roll_up``): it merges them into the batch object,
writes that atomically, and only then deletes the chunk objects it merged. A reader merges a
batch object with any chunk objects not yet rolled up (a chunk object is newer than the batch
entry it overrides). It lists the chunk objects before it reads the batch object, so a roll-up
in between is harmless: a reader never misses a record, whether or not a roll-up runs meanwhile.

Each record holds either a completion (fragment count, 0 for an empty chunk, and shard bytes)
or a failure (error, try, time). ``status`` and resume read O(batches) objects plus the chunk
objects of batches still in flight (one listing per layer), not O(chunks). The batch size of a
(timestamp, layer) is frozen by its first writer, so records stay addressable when the config
changes mid-run.

``<mesh dir>/runs.json`` lists the runs (timestamp, started, finished, max_layer, state, owner)
so that ``run`` without ``--timestamp`` can resume the last unfinished one. Only one
timestamp's shards live in a mesh dir: starting a run at a timestamp supersedes the others and
drops their records. It is written only by the holder of the mesh dir's lease.
"""

from __future__ import annotations

import base64
import logging
import math
import socket
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import orjson

from meshing_core.config import DEFAULT_BATCHES, GraphConfig, positive_int
from meshing_core.errors import MeshingError
from meshing_core.graph.protocol import GraphMeta
from meshing_core.store import files
from meshing_core.timestamps import format_timestamp

log = logging.getLogger(__name__)

Coords = tuple[int, int, int]

RECORDS = "records"
RUNS = "runs.json"
BATCHING = "batching.json"
_BATCH_PREFIX = "batch-"
_CHUNKS = "chunks"
_MAX_ERROR_CHARS = 500

RUNNING = "running"
FINISHED = "finished"
FAILED = "failed"
SUPERSEDED = "superseded"
UNFINISHED = (RUNNING, FAILED)


class RecordError(MeshingError):
    """Stored records that cannot be used; the message names the object and the fix."""


# -- chunk order and batches --------------------------------------------------------------------
def layer_bounds(meta: GraphMeta, layer: int) -> Coords:
    return tuple(int(b) for b in meta.layer_chunk_bounds(layer))  # type: ignore[return-value]


def chunk_total(meta: GraphMeta, layer: int) -> int:
    bx, by, bz = layer_bounds(meta, layer)
    return bx * by * bz


def _index_in(coords: Iterable[int], bounds: Coords) -> int:
    x, y, z = (int(c) for c in coords)
    return (x * bounds[1] + y) * bounds[2] + z


def _coords_in(index: int, bounds: Coords) -> Coords:
    xy, z = divmod(int(index), bounds[2])
    x, y = divmod(xy, bounds[1])
    return (x, y, z)


def chunk_index(meta: GraphMeta, layer: int, coords: Iterable[int]) -> int:
    """Position of a chunk in its layer's fixed order (x outermost, z fastest)."""
    x, y, z = (int(c) for c in coords)
    bx, by, bz = bounds = layer_bounds(meta, layer)
    if not (0 <= x < bx and 0 <= y < by and 0 <= z < bz):
        raise ValueError(f"chunk {[x, y, z]} is outside layer {layer}'s bounds {[bx, by, bz]}")
    return _index_in((x, y, z), bounds)


def chunk_at(meta: GraphMeta, layer: int, index: int) -> Coords:
    """Inverse of ``chunk_index``."""
    bx, by, bz = bounds = layer_bounds(meta, layer)
    if not 0 <= index < bx * by * bz:
        raise ValueError(f"chunk index {index} is outside layer {layer} (0..{bx * by * bz - 1})")
    return _coords_in(index, bounds)


def chunk_order(
    meta: GraphMeta, layer: int, start: int = 0, stop: int | None = None
) -> Iterator[Coords]:
    """Chunks of a layer with index in [start, stop), lazily, in the fixed order."""
    total = chunk_total(meta, layer)
    stop = total if stop is None else min(int(stop), total)
    for index in range(max(0, int(start)), stop):
        yield chunk_at(meta, layer, index)


def _setting(config: GraphConfig, key: str) -> int | None:
    """A batch setting, re-checked (configs made in code bypass load_config's checks)."""
    value = (config.batches or {}).get(key, DEFAULT_BATCHES.get(key))
    if value is None:
        return None
    return positive_int(value, f"batches.{key}", config.source, RecordError)


def chunks_per_batch(config: GraphConfig) -> int:
    """``batches.chunks_per_batch`` if set, else enough chunks for ``batches.voxels_per_batch``.

    Voxels are counted at the mesh mip (x and y halve per mip; z is not assumed to). The count
    is the same at every layer: a higher-layer chunk covers more volume, but stitching it is far
    cheaper per voxel than meshing.
    """
    explicit = _setting(config, "chunks_per_batch")
    if explicit is not None:
        return explicit
    voxels = _setting(config, "voxels_per_batch") or DEFAULT_BATCHES["voxels_per_batch"]
    chunk_voxels = math.prod(int(c) for c in config.chunk_size) / 4 ** int(config.mip)
    return max(1, math.ceil(voxels / max(chunk_voxels, 1.0)))


def default_batch_size(config: GraphConfig, meta: GraphMeta, layer: int) -> int:
    """``chunks_per_batch(config)``, grown so a layer maps to at most ``max_map_length`` batches."""
    per_batch = chunks_per_batch(config)
    max_map = _setting(config, "max_map_length") or DEFAULT_BATCHES["max_map_length"]
    return max(per_batch, math.ceil(chunk_total(meta, layer) / max_map))


def batch_count(meta: GraphMeta, layer: int, size: int) -> int:
    return math.ceil(chunk_total(meta, layer) / int(size))


def batch_of(meta: GraphMeta, layer: int, coords: Iterable[int], size: int) -> int:
    return chunk_index(meta, layer, coords) // int(size)


def batch_chunks(meta: GraphMeta, layer: int, batch: int, size: int) -> list[Coords]:
    """The chunks of one batch, in order."""
    return list(chunk_order(meta, layer, int(batch) * int(size), (int(batch) + 1) * int(size)))


# -- names ----------------------------------------------------------------------------------------
def timestamp_key(timestamp: float) -> str:
    """Folder name of a timestamp: the shortest text that reads back as the same float."""
    return repr(float(timestamp))


def _coords_key(coords: Iterable[int]) -> str:
    return "_".join(str(int(c)) for c in coords)


def _parse_coords(key: str) -> Coords:
    x, y, z = map(int, key.split("_"))
    return (x, y, z)


def _one_line(error: Any) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:_MAX_ERROR_CHARS]


def _failure_entry(value: Any, previous: Mapping[str, Any] | None, when: float) -> dict[str, Any]:
    """A failure record; ``try`` counts up from ``previous`` unless ``value`` gives it."""
    tries = int((previous or {}).get("try", 0)) + 1
    if isinstance(value, Mapping):
        error, tries = value.get("error", ""), int(value.get("try", tries))
    else:
        error = value
    return {"error": _one_line(error), "try": tries, "time": when}


def _done_entry(value: Any, when: float) -> dict[str, Any]:
    """A completion record from an int (fragments), a mapping, or an object with attributes."""
    if isinstance(value, Mapping):
        fragments, size = value.get("fragments"), value.get("bytes", 0)
        unclosed = value.get("unclosed", 0)
    elif isinstance(value, int):
        fragments, size, unclosed = value, 0, 0
    else:
        fragments, size = getattr(value, "fragments", None), getattr(value, "bytes", 0)
        unclosed = getattr(value, "unclosed", 0)
    if fragments is None or int(fragments) < 0:
        raise ValueError(f"a completion record needs a fragment count >= 0, got {value!r}")
    entry = {"fragments": int(fragments), "bytes": int(size or 0), "time": when}
    if unclosed:
        entry["unclosed"] = int(unclosed)
    return entry


# -- completion records: a summary in the batch object, per-chunk columns beside it -------------
# A rolled-up batch object holds its failures, a summary of its completions (counts, sums, first
# and last time, and a bitmap of the done chunks over the batch's index range) and the name of a
# binary object holding the per-chunk columns (offset in the batch, fragments, bytes, time,
# unclosed fragments; little endian; objects written before the last column was added say
# nothing of ``columns_layout`` and are read with the first four). ``status`` and the progress view read only the small batch objects: a layer of
# a million chunks is a thousand objects of a few hundred bytes. Readers that need each chunk
# (resume, stitching) read the columns too. The columns object is written before the batch
# object names it, and has a new name each time, so a batch object never names a columns object
# that is not whole; the one it replaced is deleted afterwards. Batch objects written before
# hold a ``done`` dict and read the same.
COLUMNS_DIR = "columns"
_COLUMNS = (
    ("offset", "<u4"), ("fragments", "<u4"), ("bytes", "<u8"), ("time", "<f8"), ("unclosed", "<u4")
)  # fmt: skip
COLUMNS_LAYOUT = 2  # ``columns_layout`` of a batch object: 1 (absent) = the first four columns


def _layout(layout: int) -> tuple[tuple[str, str], ...]:
    return _COLUMNS if int(layout) >= 2 else _COLUMNS[:4]


def _row_bytes(layout: int) -> int:
    return sum(np.dtype(t).itemsize for _, t in _layout(layout))


def pack_done(
    done: Mapping[str, Mapping[str, Any]], bounds: Coords, first: int, size: int
) -> tuple[bytes, dict[str, Any]]:
    """Per-chunk columns (bytes) and the summary of a batch's completions.

    ``first`` is the batch's first layer index and ``size`` its length (for the bitmap).
    """
    keys = list(done)
    offset = np.array([_index_in(_parse_coords(k), bounds) - first for k in keys], dtype=np.int64)
    order = np.argsort(offset, kind="stable")
    values = {
        "offset": offset[order],
        "fragments": np.array([int(done[k]["fragments"]) for k in keys], np.int64)[order],
        "bytes": np.array([int(done[k].get("bytes", 0)) for k in keys], np.int64)[order],
        "time": np.array([float(done[k].get("time", 0.0)) for k in keys], np.float64)[order],
        "unclosed": np.array([int(done[k].get("unclosed", 0)) for k in keys], np.int64)[order],
    }
    blob = b"".join(np.ascontiguousarray(values[n], dtype=t).tobytes() for n, t in _COLUMNS)
    bits = np.zeros(int(size), dtype=bool)
    bits[values["offset"]] = True
    summary = {
        "done": len(keys),
        "empty": int(np.count_nonzero(values["fragments"] == 0)),
        "fragments": int(values["fragments"].sum()),
        "bytes": int(values["bytes"].sum()),
        "unclosed": int(values["unclosed"].sum()),
        "first": float(values["time"].min()) if keys else None,
        "last": float(values["time"].max()) if keys else None,
        "bits": base64.b64encode(np.packbits(bits, bitorder="little").tobytes()).decode(),
    }
    return blob, summary


def unpack_done(
    blob: bytes, bounds: Coords, first: int, layout: int = COLUMNS_LAYOUT
) -> dict[str, dict[str, Any]]:
    """The ``done`` dict of a batch from its columns object."""
    rows = len(blob) // _row_bytes(layout)
    arrays, at = {}, 0
    for name, kind in _layout(layout):
        width = np.dtype(kind).itemsize * rows
        arrays[name] = np.frombuffer(blob[at : at + width], dtype=kind)
        at += width
    unclosed = arrays.get("unclosed", np.zeros(rows, dtype=np.int64))
    done = {}
    for o, f, b, t, u in zip(
        arrays["offset"], arrays["fragments"], arrays["bytes"], arrays["time"], unclosed,
        strict=True,
    ):  # fmt: skip
        entry = {"fragments": int(f), "bytes": int(b), "time": float(t)}
        if u:
            entry["unclosed"] = int(u)
        done[_coords_key(_coords_in(first + int(o), bounds))] = entry
    return done


@dataclass
class LayerTally:
    """What a layer's records add up to, without a dict per chunk (``status``, progress view).

    Each batch's done bitmap lands in one row of ``packed`` (a batch covers a fixed index range),
    unpacked once for the whole layer by ``done_mask``.
    """

    total: int
    size: int  # chunks per record batch
    packed: np.ndarray  # (batches, bytes per bitmap) uint8
    empty: int = 0
    fragments: int = 0
    bytes: int = 0
    unclosed: int = 0
    first: float | None = None
    last: float | None = None
    failures: dict[Coords, dict[str, Any]] = field(default_factory=dict)
    batches_recorded: int = 0

    @classmethod
    def start(cls, total: int, size: int) -> LayerTally:
        rows = -(-int(total) // int(size))
        return cls(int(total), int(size), np.zeros((rows, -(-int(size) // 8)), dtype=np.uint8))

    def add(self, batch: int, summary: Mapping[str, Any]) -> None:
        row = np.frombuffer(base64.b64decode(summary["bits"]), dtype=np.uint8)
        self.packed[batch, : row.size] |= row
        self.empty += summary["empty"]
        self.fragments += summary["fragments"]
        self.bytes += summary["bytes"]
        self.unclosed += summary.get("unclosed", 0)
        first, last = summary.get("first"), summary.get("last")
        if first is not None:
            self.first = first if self.first is None else min(self.first, first)
            self.last = last if self.last is None else max(self.last, last)

    @property
    def done_mask(self) -> np.ndarray:
        """Bool per layer chunk index: has a completion record."""
        bits = np.unpackbits(self.packed, axis=1, bitorder="little")[:, : self.size]
        return bits.reshape(-1)[: self.total].view(bool)

    @property
    def done(self) -> int:
        return int(np.unpackbits(self.packed).sum(dtype=np.int64))


# -- the record store -----------------------------------------------------------------------------
class RecordStore:
    """Completion/failure records of one meshing timestamp (any ``files`` path: file://, gs://...)."""

    def __init__(self, config: GraphConfig, timestamp: float, meta: GraphMeta | None = None):
        self.config = config
        self.timestamp = float(timestamp)
        self.root = config.mesh_cloudpath
        self.prefix = f"{RECORDS}/{timestamp_key(timestamp)}"
        self._meta = meta
        self._sizes: dict[int, int] = {}
        self._cache: dict[tuple[int, int], dict[str, Any]] = {}
        self._completion: dict[tuple[int, int], frozenset[int] | None] = {}

    # geometry
    @property
    def meta(self) -> GraphMeta:
        if self._meta is None:
            from meshing_core.graph import open_graph

            graph = open_graph(self.config)
            try:
                self._meta = graph.meta
            finally:
                graph.close()
        return self._meta

    def layer_prefix(self, layer: int) -> str:
        return f"{self.prefix}/{int(layer)}"

    def batch_name(self, layer: int, batch: int) -> str:
        return f"{self.layer_prefix(layer)}/{_BATCH_PREFIX}{int(batch):08d}.json"

    def batch_size(self, layer: int, *, persist: bool = False) -> int:
        """The layer's batch size at this timestamp: the stored one, else the config's.

        ``persist`` (used by writers) stores the config's size so that it stays frozen.
        """
        layer = int(layer)
        if layer not in self._sizes:
            name = f"{self.layer_prefix(layer)}/{BATCHING}"
            stored = self._read(name)
            if stored is not None:
                self._sizes[layer] = int(stored["chunks_per_batch"])
            elif not persist:
                return default_batch_size(self.config, self.meta, layer)
            else:
                size = default_batch_size(self.config, self.meta, layer)
                files.write_json(self.root, name, {"chunks_per_batch": size})
                self._sizes[layer] = size
        return self._sizes[layer]

    def batch_count(self, layer: int) -> int:
        return batch_count(self.meta, layer, self.batch_size(layer))

    def batch_chunks(self, layer: int, batch: int) -> list[Coords]:
        return batch_chunks(self.meta, layer, batch, self.batch_size(layer))

    def batch_of(self, layer: int, coords: Iterable[int]) -> int:
        return batch_of(self.meta, layer, coords, self.batch_size(layer))

    # reading
    def _read(self, name: str) -> Any:
        try:
            return files.read_json(self.root, name)
        except ValueError as exc:
            raise RecordError(
                f"record {self.root}/{name} is not valid JSON ({exc}): delete it and re-run "
                "the batch (its chunks will be meshed again)"
            ) from exc

    def columns_name(self, layer: int, name: str) -> str:
        """Path of a batch's per-chunk columns object (``name`` as its batch object gives it)."""
        return f"{self.layer_prefix(layer)}/{COLUMNS_DIR}/{name}"

    def chunk_dir(self, layer: int, batch: int) -> str:
        """Folder of one batch's chunk objects (not yet rolled up)."""
        return f"{self.layer_prefix(layer)}/{_CHUNKS}/{int(batch):08d}"

    def chunk_name(self, layer: int, batch: int, coords: Iterable[int]) -> str:
        return f"{self.chunk_dir(layer, batch)}/{_coords_key(coords)}.json"

    def _merge(self, stored: dict[str, Any] | None, chunk_names: Iterable[str]) -> dict[str, Any]:
        """A batch object with the given chunk objects applied on top (they are newer)."""
        done = {} if stored is None else self._stored_done(stored)
        merged = {
            **{
                k: v
                for k, v in (stored or {}).items()
                if k not in ("columns", "summary", "columns_layout")
            },
            "done": done,
            "failed": dict((stored or {}).get("failed", {})),
        }
        names = list(chunk_names)
        try:
            contents = files.read_json_many(self.root, names)
        except ValueError as exc:
            raise RecordError(
                f"a chunk record under {self.root}/{self.prefix} is not valid JSON ({exc}): "
                "delete it and re-run its batch (that chunk will be meshed again)"
            ) from exc
        for name in names:
            record = contents.get(name)
            if record is None:  # rolled up and deleted since the listing: in ``stored`` now
                continue
            key = str(record["chunk"])
            if "done" in record:
                merged["done"][key] = record["done"]
                merged["failed"].pop(key, None)
            else:
                merged["failed"][key] = record["failed"]
                merged["done"].pop(key, None)
        return merged

    def _read_batch(self, layer: int, batch: int, *, cache: bool = True) -> dict[str, Any]:
        key = (int(layer), int(batch))
        if key in self._cache:
            return self._cache[key]
        # list first, then read the batch object: a roll-up between the two has written the
        # batch object before deleting the chunk objects, so each record is seen in one place
        pending = files.list_files(self.root, self.chunk_dir(layer, batch) + "/")
        stored = self._read(self.batch_name(layer, batch))
        merged = self._merge(stored, pending)
        if cache:
            self._cache[key] = merged
        return merged

    def _batch_objects(self, layer: int) -> Iterator[dict[str, Any]]:
        """Every batch of a layer with records (one listing; one read per batch and chunk object).

        The batch object of a batch that had chunk objects is read even when the listing did
        not show it: a roll-up may have written it (and deleted them) since.
        """
        layer_prefix = self.layer_prefix(layer) + "/"
        pending: dict[int, list[str]] = {}
        for name in files.iter_files(self.root, layer_prefix):
            rest = name[len(layer_prefix) :]
            if rest.startswith(_BATCH_PREFIX):
                pending.setdefault(int(rest[len(_BATCH_PREFIX) :].split(".")[0]), [])
            elif rest.startswith(_CHUNKS + "/"):
                pending.setdefault(int(rest.split("/")[1]), []).append(name)
        for number, chunk_names in sorted(pending.items()):
            merged = self._merge(self._read(self.batch_name(layer, number)), chunk_names)
            if merged["done"] or merged["failed"]:
                self._cache[(int(layer), number)] = merged
                yield merged

    def _stored_done(self, stored: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """A stored batch object's completions, reading its columns object if it has one."""
        name = stored.get("columns")
        if not name:
            return dict(stored.get("done") or {})
        layer, batch = int(stored["layer"]), int(stored["batch"])
        path = self.columns_name(layer, name)
        layout = int(stored.get("columns_layout", 1))
        blob = files.read_file(self.root, path)
        if blob is None or len(blob) % _row_bytes(layout):
            raise RecordError(
                f"record {self.root}/{path} named by {self.batch_name(layer, batch)} is missing or "
                "truncated: delete the batch object and re-run the batch (its chunks will be "
                "meshed again)"
            )
        first = batch * int(stored["chunks_per_batch"])
        return unpack_done(blob, layer_bounds(self.meta, layer), first, layout)

    def layer_tally(self, layer: int) -> LayerTally:
        """Every record of a layer, added up: a done mask over the layer, sums, times, failures.

        One listing of the layer's in-flight chunk objects; then one plain read of each batch
        object (its summary: no columns, no dict per chunk), and for batches in flight their
        chunk objects merged as every reader does.
        """
        layer = int(layer)
        bounds = layer_bounds(self.meta, layer)
        total = chunk_total(self.meta, layer)
        size = self.batch_size(layer)
        tally = LayerTally.start(total, size)
        pending: dict[int, list[str]] = {}
        for name in files.iter_files(self.root, f"{self.layer_prefix(layer)}/{_CHUNKS}/"):
            pending.setdefault(int(name.rsplit("/", 2)[1]), []).append(name)
        head = f"{self.layer_prefix(layer)}/{_BATCH_PREFIX}"
        names = [  # listed before the chunk objects' batches are read: see the docstring
            n
            for n in files.list_folder(self.root, self.layer_prefix(layer))
            if n.startswith(head) and int(n[len(head) :].split(".")[0]) not in pending
        ]
        for name, data in files.read_many(self.root, names).items():
            if data is None:
                continue
            try:
                stored = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise RecordError(
                    f"record {self.root}/{name} is not valid JSON ({exc}): delete it and re-run "
                    "the batch (its chunks will be meshed again)"
                ) from exc
            self._tally_batch(tally, stored, bounds, size)
        for number, chunk_names in sorted(pending.items()):
            merged = self._merge(self._read(self.batch_name(layer, number)), chunk_names)
            merged["batch"] = number
            self._tally_batch(tally, merged, bounds, size)
        return tally

    def _tally_batch(
        self, tally: LayerTally, stored: Mapping[str, Any], bounds: Coords, size: int
    ) -> None:
        batch = int(stored["batch"])
        summary = stored.get("summary")
        if summary is None:  # a batch object from before summaries, or a merged one
            _, summary = pack_done(stored.get("done") or {}, bounds, batch * size, size)
        failed = stored.get("failed") or {}
        if summary["done"] or failed:
            tally.batches_recorded += 1
        tally.add(batch, summary)
        for key, entry in failed.items():
            tally.failures[_parse_coords(key)] = entry

    def done_chunks(self, layer: int) -> dict[Coords, int]:
        """Chunks with a completion record -> their fragment count (0: empty chunk)."""
        out: dict[Coords, int] = {}
        for stored in self._batch_objects(layer):
            for key, entry in stored.get("done", {}).items():
                out[_parse_coords(key)] = int(entry["fragments"])
        return out

    def failures(self, layer: int) -> dict[Coords, dict[str, Any]]:
        """Chunks whose last attempt failed -> ``{"error", "try", "time"}``."""
        out: dict[Coords, dict[str, Any]] = {}
        for stored in self._batch_objects(layer):
            for key, entry in stored.get("failed", {}).items():
                out[_parse_coords(key)] = dict(entry)
        return out

    def chunk_records(
        self, layer: int, chunks: Iterable[Iterable[int]]
    ) -> dict[Coords, int | None]:
        """Fragment count of each given chunk, None without a completion record.

        Reads only the batch objects holding those chunks (cached on this store), so a
        stitching task can check its children's chunks cheaply.
        """
        out: dict[Coords, int | None] = {}
        for coords in chunks:
            key = tuple(int(c) for c in coords)
            entry = self._read_batch(layer, self.batch_of(layer, key))["done"].get(_coords_key(key))
            out[key] = None if entry is None else int(entry["fragments"])  # type: ignore[index]
        return out

    def failures_of(
        self, layer: int, chunks: Iterable[Iterable[int]]
    ) -> dict[Coords, dict[str, Any]]:
        """The failure records of the given chunks (those that have one)."""
        out: dict[Coords, dict[str, Any]] = {}
        for coords in chunks:
            key = tuple(int(c) for c in coords)
            entry = self._read_batch(layer, self.batch_of(layer, key))["failed"].get(
                _coords_key(key)
            )
            if entry is not None:
                out[key] = dict(entry)  # type: ignore[index]
        return out

    def _done_indices(self, layer: int, batch: int) -> frozenset[int] | None:
        """Indices recorded done in one batch; None when the whole batch is done.

        Kept per store as this small summary (not the batch object), so checking every layer-2
        chunk under a top-layer chunk holds only the incomplete batches' indices in memory.
        """
        key = (int(layer), int(batch))
        if key not in self._completion:
            done = self._read_batch(layer, batch, cache=False).get("done", {})
            size = self.batch_size(layer)
            first = int(batch) * size
            expected = min(size, chunk_total(self.meta, layer) - first)
            self._completion[key] = (
                None
                if len(done) >= expected
                else frozenset(chunk_index(self.meta, layer, _parse_coords(k)) for k in done)
            )
        return self._completion[key]

    def first_unrecorded(
        self, layer: int, start: Iterable[int], end: Iterable[int]
    ) -> Coords | None:
        """The first chunk of the box [start, end) without a completion record, else None.

        Walks the box as z-runs of consecutive indices and reads only the batches they touch.
        """
        size = self.batch_size(layer)
        bx, by, bz = layer_bounds(self.meta, layer)
        (x0, y0, z0), (x1, y1, z1) = (
            tuple(max(0, int(c)) for c in start),
            (min(int(a), b) for a, b in zip(end, (bx, by, bz), strict=True)),
        )
        for x in range(x0, x1):
            for y in range(y0, y1):
                row = (x * by + y) * bz
                lo, hi = row + z0, row + z1
                index = lo
                while index < hi:
                    batch = index // size
                    stop = min(hi, (batch + 1) * size)
                    done = self._done_indices(layer, batch)
                    if done is not None:
                        missing = next((i for i in range(index, stop) if i not in done), None)
                        if missing is not None:
                            return chunk_at(self.meta, layer, missing)
                    index = stop
        return None

    def is_done(self, layer: int, coords: Iterable[int]) -> bool:
        return next(iter(self.chunk_records(layer, [coords]).values())) is not None

    def layer_summary(self, layer: int) -> dict[str, Any]:
        """Counts of one layer: done, empty, failed, fragments, bytes (``layer_tally``)."""
        tally = self.layer_tally(layer)
        return {
            "layer": int(layer),
            "batches_recorded": tally.batches_recorded,
            "chunks_done": tally.done,
            "chunks_empty": tally.empty,
            "chunks_failed": len(tally.failures),
            "fragments": tally.fragments,
            "bytes": tally.bytes,
        }

    # writing
    def record_batch(
        self,
        layer: int,
        batch: int,
        done: Mapping[Iterable[int], Any] | None = None,
        failed: Mapping[Iterable[int], Any] | None = None,
        *,
        merged_chunk_objects: Iterable[str] = (),
    ) -> dict[str, Any]:
        """Merge results of chunks of one batch into its batch object, atomically.

        Single writer per batch (the batch's owner, see the module docstring); concurrent
        writers use ``record_chunks``. ``done`` maps chunk coords to a fragment count,
        ``{"fragments", "bytes"}`` or an object with those attributes (a ``ChunkResult``).
        ``failed`` maps coords to an error (exception or text; ``try`` counts up from the
        stored one) or ``{"error", "try"}``. A success removes the chunk's failure record; a
        failure removes its completion record (a failed chunk has no shard). Every chunk must
        belong to ``batch``. ``merged_chunk_objects`` are applied first (a roll-up).
        """
        layer, batch = int(layer), int(batch)
        self._cache.pop((layer, batch), None)  # re-read: another process may have written it
        self._completion.pop((layer, batch), None)
        previous = self._read(self.batch_name(layer, batch))
        stored = self._merge(previous, merged_chunk_objects)
        new = {
            "layer": layer,
            "batch": batch,
            "timestamp": self.timestamp,
            "chunks_per_batch": self.batch_size(layer, persist=True),
            "done": stored["done"],
            "failed": stored["failed"],
        }
        now = round(time.time(), 3)
        for coords, value in (done or {}).items():
            key = self._key_in_batch(layer, batch, coords)
            new["done"][key] = _done_entry(value, now)
            new["failed"].pop(key, None)
        for coords, value in (failed or {}).items():
            key = self._key_in_batch(layer, batch, coords)
            new["failed"][key] = _failure_entry(value, new["failed"].get(key), now)
            new["done"].pop(key, None)
        size = new["chunks_per_batch"]
        blob, summary = pack_done(new["done"], layer_bounds(self.meta, layer), batch * size, size)
        columns = f"{batch:08d}-{uuid.uuid4().hex[:12]}.bin"
        # whole before the batch object names it
        files.write_atomic(self.root, self.columns_name(layer, columns), blob)
        on_disk = {k: v for k, v in new.items() if k != "done"}
        on_disk.update(columns=columns, columns_layout=COLUMNS_LAYOUT, summary=summary)
        files.write_json(self.root, self.batch_name(layer, batch), on_disk)
        replaced = (previous or {}).get("columns")
        if replaced and replaced != columns:
            files.delete_files(self.root, [self.columns_name(layer, replaced)])
        self._cache[(layer, batch)] = new
        return new

    def record_chunks(
        self,
        layer: int,
        done: Mapping[Iterable[int], Any] | None = None,
        failed: Mapping[Iterable[int], Any] | None = None,
    ) -> list[int]:
        """Record chunk outcomes as one object per chunk: safe with concurrent writers.

        Values as in ``record_batch``. Returns the batches touched. A failure's ``try`` counts
        up from the chunk's last stored failure.
        """
        layer = int(layer)
        touched: set[int] = set()
        now = round(time.time(), 3)
        outcomes = [(c, v, True) for c, v in (done or {}).items()]
        outcomes += [(c, v, False) for c, v in (failed or {}).items()]
        for coords, value, ok in outcomes:
            key = tuple(int(c) for c in coords)
            batch = self.batch_of(layer, key)
            if not touched:
                self.batch_size(layer, persist=True)
            record: dict[str, Any] = {"chunk": _coords_key(key)}
            if ok:
                record["done"] = _done_entry(value, now)
            else:
                previous = self._read(self.chunk_name(layer, batch, key))
                if previous is not None:
                    previous = previous.get("failed")
                else:
                    previous = self._read_batch(layer, batch)["failed"].get(_coords_key(key))
                record["failed"] = _failure_entry(value, previous, now)
            files.write_json(self.root, self.chunk_name(layer, batch, key), record)
            self._cache.pop((layer, batch), None)
            self._completion.pop((layer, batch), None)
            touched.add(batch)
        return sorted(touched)

    def roll_up(self, layer: int, batches: Iterable[int]) -> int:
        """Fold the chunk objects of ``batches`` into their batch objects; returns how many.

        Only the batch's owner calls this (one at a time per batch). The chunk objects are
        deleted after the batch object holding them is written, so a reader always sees each
        record in one of the two places.
        """
        folded = 0
        for batch in sorted({int(b) for b in batches}):
            names = files.list_files(self.root, self.chunk_dir(layer, batch) + "/")
            if not names:
                continue
            self.record_batch(layer, batch, merged_chunk_objects=names)
            files.delete_files(self.root, names)
            folded += len(names)
        return folded

    def _key_in_batch(self, layer: int, batch: int, coords: Iterable[int]) -> str:
        key = tuple(int(c) for c in coords)
        if self.batch_of(layer, key) != batch:
            raise ValueError(f"chunk {list(key)} of layer {layer} is not in batch {batch}")
        return _coords_key(key)

    def clear(self, layer: int | None = None) -> int:
        """Delete the records of one layer (or all layers) at this timestamp, e.g. for --force."""
        prefix = self.prefix + "/" if layer is None else self.layer_prefix(layer) + "/"
        self._cache = {k: v for k, v in self._cache.items() if layer is not None and k[0] != layer}
        self._completion = {
            k: v for k, v in self._completion.items() if layer is not None and k[0] != layer
        }
        if layer is None:
            self._sizes.clear()
        else:
            self._sizes.pop(int(layer), None)
        return files.delete_prefix(self.root, prefix)


# -- the run journal ------------------------------------------------------------------------------
@dataclass
class RunEntry:
    """One run of the mesh dir: meshing timestamp, wall times, target layer, state."""

    timestamp: float
    started: float
    max_layer: int
    state: str = RUNNING
    finished: float | None = None
    host: str = ""
    owner: str = ""  # who drives the run now: "airflow <dag>/<run id>" or "run <host> pid <n>"
    owners: list[str] = field(default_factory=list)  # everyone who began it since it was fresh
    layers_done: list[int] = field(default_factory=list)
    error: str | None = None

    @property
    def unfinished(self) -> bool:
        return self.state in UNFINISHED

    def describe(self) -> str:
        return (
            f"run at {format_timestamp(self.timestamp)} (max layer {self.max_layer}, {self.state}, "
            f"started {format_timestamp(self.started)} on {self.host or 'unknown host'})"
        )


@dataclass(frozen=True)
class RunPlan:
    """What ``run`` should do: ``action`` is new | resume | rerun | nothing."""

    action: str
    timestamp: float | None
    message: str


class RunJournal:
    """``<mesh dir>/runs.json``: the runs of a mesh dir, oldest first. Written under the lease."""

    def __init__(self, config: GraphConfig):
        self.config = config
        self.root = config.mesh_cloudpath

    def runs(self) -> list[RunEntry]:
        try:
            stored = files.read_json(self.root, RUNS)
        except ValueError as exc:
            raise RecordError(
                f"run journal {self.root}/{RUNS} is not valid JSON ({exc}): delete it "
                "(then pass --timestamp to resume a run)"
            ) from exc
        if stored is None:
            return []
        known = {f.name for f in fields(RunEntry)}
        return [
            RunEntry(**{k: v for k, v in entry.items() if k in known})
            for entry in stored.get("runs", [])
        ]

    def _write(self, runs: list[RunEntry]) -> None:
        files.write_json(self.root, RUNS, {"runs": [asdict(r) for r in runs]})

    def get(self, timestamp: float) -> RunEntry | None:
        return next((r for r in self.runs() if r.timestamp == float(timestamp)), None)

    def last(self) -> RunEntry | None:
        """The most recently started run (the one ``run`` without --timestamp looks at)."""
        runs = self.runs()
        return max(runs, key=lambda r: r.started) if runs else None

    def start(
        self, timestamp: float, max_layer: int, owner: str = "", *, fresh: bool = True
    ) -> RunEntry:
        """Record a run as running (resuming its entry if it exists); supersede every other.

        Other timestamps' records are deleted: this run overwrites the mesh dir's shards, so
        their completion records would no longer describe what is stored.
        """
        timestamp = float(timestamp)
        now = round(time.time(), 3)
        runs = self.runs()
        entry = next((r for r in runs if r.timestamp == timestamp), None)
        if entry is None:
            entry = RunEntry(timestamp=timestamp, started=now, max_layer=int(max_layer))
            runs.append(entry)
        entry.state, entry.finished, entry.error = RUNNING, None, None
        entry.max_layer, entry.started, entry.host = int(max_layer), now, socket.gethostname()
        entry.owner = owner
        entry.owners = [owner] if fresh else [*(o for o in entry.owners if o != owner), owner]
        for other in runs:
            if other is not entry and other.state != SUPERSEDED:
                other.state = SUPERSEDED
        runs.remove(entry)
        runs.append(entry)  # the journal stays in start order
        self._write(runs)
        for name in {n.split("/")[1] for n in files.iter_files(self.root, RECORDS + "/")}:
            if name != timestamp_key(timestamp):
                files.delete_prefix(self.root, f"{RECORDS}/{name}/")
        return entry

    def _update(self, timestamp: float, **changes: Any) -> RunEntry:
        runs = self.runs()
        entry = next((r for r in runs if r.timestamp == float(timestamp)), None)
        if entry is None:
            raise RecordError(
                f"no run at {format_timestamp(timestamp)} in {self.root}/{RUNS}: start it first"
            )
        for key, value in changes.items():
            setattr(entry, key, value)
        self._write(runs)
        return entry

    def layer_done(self, timestamp: float, layer: int) -> RunEntry:
        entry = self.get(timestamp)
        done = sorted(set(entry.layers_done if entry else []) | {int(layer)})
        return self._update(timestamp, layers_done=done)

    def finish(self, timestamp: float) -> RunEntry:
        return self._update(timestamp, state=FINISHED, finished=round(time.time(), 3), error=None)

    def fail(self, timestamp: float, error: Any) -> RunEntry:
        return self._update(timestamp, state=FAILED, error=_one_line(error))


def plan_run(journal: RunJournal, timestamp: float | None, force: bool, now: float) -> RunPlan:
    """Decide the timestamp of ``run`` from its flags and the journal.

    - ``--timestamp T``: run at T (resume if T has an unfinished entry; rerun if ``force``).
    - no timestamp, last run unfinished: resume it at its recorded timestamp.
    - no timestamp, last run finished: nothing, unless ``force`` (rerun at its timestamp).
    - no timestamp, no run yet: a new run at ``now``.
    """
    if timestamp is not None:
        entry = journal.get(timestamp)
        if force:
            return RunPlan(
                "rerun",
                float(timestamp),
                f"re-meshing every chunk at {format_timestamp(timestamp)}",
            )
        if entry is not None and entry.state != SUPERSEDED:
            return RunPlan("resume", float(timestamp), f"resuming the {entry.describe()}")
        return RunPlan("new", float(timestamp), f"new run at {format_timestamp(timestamp)}")
    last = journal.last()
    if last is None:
        return RunPlan("new", float(now), f"new run at {format_timestamp(now)}")
    if last.unfinished:
        return RunPlan("resume", last.timestamp, f"resuming the {last.describe()}")
    if force:
        return RunPlan("rerun", last.timestamp, f"re-meshing every chunk of the {last.describe()}")
    return RunPlan(
        "nothing",
        None,
        f"the last {last.describe()} is finished: nothing to do; pass --timestamp T to mesh "
        "another state or --force to re-mesh this one",
    )
