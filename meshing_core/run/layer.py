"""Meshing a range of chunks of one layer: plan, check, mesh in a process pool, write shards.

Every chunk is independent: mesh it (layer 2) or stitch it from the shards of lower layers
(layer 3 and up, see ``meshing_core.mesh.stitch``), pack its fragments into one shard with the
layer's sharding spec from the mesh info, and write
``<mesh dir>/initial/<layer>/<chunk position number>-0.shard`` atomically. An empty chunk gets no shard (and loses a stale one from an earlier run, so the
output always reflects the timestamp). Inputs are validated before any chunk is touched, and a
failing chunk never replaces or deletes its existing shard. zmesh holds the GIL, so parallelism
is processes.
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from tqdm import tqdm

from meshing_core.config import GraphConfig
from meshing_core.errors import MeshingError
from meshing_core.graph import open_graph
from meshing_core.graph.protocol import GraphMeta
from meshing_core.run.cpus import available_cpus
from meshing_core.run.records import RecordStore, chunk_index, chunk_order, chunk_total
from meshing_core.run.setup import static_mesh_block
from meshing_core.run.spawn import spawn_pool
from meshing_core.store import files, layout
from meshing_core.store.sharding import ShardFormatError, ShardSpec
from meshing_core.timestamps import format_timestamp

log = logging.getLogger(__name__)

MESH_INFO = layout.MESH_INFO


class LayerRunError(MeshingError):
    """A layer run that cannot start: bad layer, chunk range, config or mesh info."""


@dataclass
class LayerReport:
    """What one ``mesh_layer`` call did."""

    layer: int
    chunks: int
    empty_chunks: int
    fragments: int
    bytes: int
    seconds: float
    shard_dir: str
    skipped_nodes: list[int] = dataclass_field(default_factory=list)
    """Nodes over the size limit (``mesh.max_triangles``): not written, left to their children."""
    skipped_chunks: int = 0
    """Chunks already recorded done at this timestamp, not meshed again."""


@dataclass(frozen=True)
class ChunkResult:
    coords: tuple[int, int, int]
    fragments: int
    bytes: int
    removed_stale: bool = False
    skipped: tuple[int, ...] = ()


Coords = tuple[int, int, int]


# -- checks -----------------------------------------------------------------------------------
def check_layer(meta: GraphMeta, layer: int) -> None:
    if not 2 <= int(layer) <= meta.n_layers:
        raise LayerRunError(
            f"unknown layer {layer}: this graph has mesh layers 2..{meta.n_layers}; pick one of them"
        )


def chunk_range(
    meta: GraphMeta,
    layer: int,
    chunk_start: Sequence[int] | None = None,
    chunk_end: Sequence[int] | None = None,
) -> tuple[Coords, Coords]:
    """[start, end) chunk coordinates, defaulting to the whole layer; checked against its bounds."""
    bounds = tuple(int(b) for b in meta.layer_chunk_bounds(layer))
    start = (0, 0, 0) if chunk_start is None else tuple(int(c) for c in chunk_start)
    end = bounds if chunk_end is None else tuple(int(c) for c in chunk_end)
    if len(start) != 3 or len(end) != 3:
        raise LayerRunError(f"chunk start and end need three coordinates, got {start} and {end}")
    inside = all(0 <= s < e <= b for s, e, b in zip(start, end, bounds, strict=True))
    if not inside:
        raise LayerRunError(
            f"chunk range {list(start)}..{list(end)} is outside layer {layer}'s bounds "
            f"[0, 0, 0]..{list(bounds)} (end exclusive): pick start < end within them"
        )
    return start, end  # type: ignore[return-value]


def iter_chunks(start: Coords, end: Coords) -> Iterator[Coords]:
    """Chunks of a range in a fixed order (x outermost)."""
    yield from itertools.product(*(range(s, e) for s, e in zip(start, end, strict=True)))


def select_chunks(
    meta: GraphMeta,
    layer: int,
    start: Coords,
    end: Coords,
    chunk_indices: Sequence[int] | None = None,
) -> list[Coords]:
    """Chunks of the box [start, end), limited to an index range of the layer's chunk order."""
    if chunk_indices is None:
        return list(iter_chunks(start, end))
    total = chunk_total(meta, layer)
    first, stop = (int(i) for i in chunk_indices)
    if not 0 <= first < stop <= total:
        raise LayerRunError(
            f"chunk index range {first}..{stop} is outside layer {layer}'s chunks 0..{total} "
            "(stop exclusive): pick 0 <= start < stop <= the layer's chunk count"
        )
    whole = start == (0, 0, 0) and end == tuple(int(b) for b in meta.layer_chunk_bounds(layer))
    if whole:
        return list(chunk_order(meta, layer, first, stop))
    # walk the box's (x, y) lines clipped to the range: O(box lines), not O(range)
    chunks: list[Coords] = []
    for x in range(start[0], end[0]):
        for y in range(start[1], end[1]):
            line = chunk_index(meta, layer, (x, y, 0))
            z0, z1 = max(start[2], first - line), min(end[2], stop - line)
            chunks.extend((x, y, z) for z in range(z0, z1))
    return chunks


def read_mesh_info(config: GraphConfig) -> dict[str, Any]:
    """The mesh info written by ``setup``; a one-line error if it is missing or broken."""
    where = f"{config.mesh_cloudpath.rstrip('/')}/{MESH_INFO}"
    setup_cmd = f"`python -m meshing_core setup --graph {config.source}`"
    try:
        info = files.read_json(config.mesh_cloudpath, MESH_INFO)
    except ValueError as exc:
        raise LayerRunError(f"mesh info {where} is not JSON: re-run {setup_cmd}") from exc
    except Exception as exc:  # noqa: BLE001 - unreachable storage is reported, not crashed on
        raise LayerRunError(f"cannot read mesh info {where} ({type(exc).__name__})") from exc
    if info is None:
        raise LayerRunError(f"mesh info {where} not found: run {setup_cmd} first")
    if not isinstance(info, dict):
        raise LayerRunError(f"mesh info {where} is not a JSON object: re-run setup")
    return info


def check_mesh_info(
    info: dict[str, Any], config: GraphConfig, block_shape: Sequence[int], layer: int
) -> dict[str, Any]:
    """The layer's sharding spec, after checking the mesh info matches the config."""
    where = f"{config.mesh_cloudpath.rstrip('/')}/{MESH_INFO}"
    if info.get("mip") is not None and int(info["mip"]) != int(config.mip):
        raise LayerRunError(
            f"mesh info {where} says mip {info['mip']} but {config.source} says mesh.mip "
            f"{config.mip}: fix graph.yaml or re-run setup into an empty mesh dir"
        )
    want = [int(v) for v in block_shape]
    have = info.get("chunk_size")
    if have is not None and [int(v) for v in have] != want:
        raise LayerRunError(
            f"mesh info {where} has chunk_size {list(have)} but {config.source} gives {want} at "
            f"mip {config.mip}: the mesh dir belongs to another config; re-run setup"
        )
    spec = (info.get("sharding") or {}).get(str(layer))
    if not isinstance(spec, dict):
        raise LayerRunError(
            f"mesh info {where} has no sharding spec for layer {layer}: re-run setup"
        )
    try:
        ShardSpec.parse(spec)
    except ShardFormatError as exc:
        raise LayerRunError(
            f"mesh info {where}: layer {layer}'s {exc}: re-run "
            f"`python -m meshing_core setup --graph {config.source}` (with --reset if shards exist)"
        ) from exc
    return spec


def check_timestamp(history: Sequence[float], timestamp: float) -> None:
    """Refuse a time before the graph existed: every chunk would be empty and lose its shard."""
    if history and float(timestamp) < min(float(t) for t in history):
        created = format_timestamp(min(float(t) for t in history))
        raise LayerRunError(
            f"timestamp {format_timestamp(float(timestamp))} is before the graph was created "
            f"({created}): give a timestamp at or after {created}"
        )


def check_custom_data(custom: dict[str, Any], config: GraphConfig) -> None:
    """The graph's ``mesh`` custom data (written by setup) must describe this config's meshes.

    Viewers find and read the meshes through it, so meshing with other settings than it names
    would publish meshes nobody can locate or trust.
    """
    setup_cmd = f"`python -m meshing_core setup --graph {config.source}`"
    stored = custom.get("mesh")
    if not isinstance(stored, dict) or not stored:
        raise LayerRunError(f"the graph's custom data has no mesh block: run {setup_cmd} first")
    want = static_mesh_block(config)
    for field in ("dir", "mip", "max_error"):
        have = stored.get(field)
        try:
            same = have is not None and (
                float(have) == float(want[field]) if field != "dir" else have == want[field]
            )
        except (TypeError, ValueError):
            same = False
        if not same:
            raise LayerRunError(
                f"the graph's custom data has mesh.{field} {have!r} but {config.source} says "
                f"{want[field]!r}: re-run {setup_cmd} (with --reset if shards exist)"
            )


def check_workers(workers: int | None) -> None:
    if workers is not None and int(workers) < 1:
        raise LayerRunError(f"--workers must be >= 1 (got {workers})")


def check_config(config: GraphConfig, meta: GraphMeta) -> None:
    if tuple(int(c) for c in config.chunk_size) != tuple(meta.chunk_size):
        raise LayerRunError(
            f"{config.source} says chunk_size {list(config.chunk_size)} but the graph has "
            f"{list(meta.chunk_size)}: fix graph.yaml"
        )


# -- per-chunk work (runs in worker processes) -------------------------------------------------
_GRAPHS: dict[str, Any] = {}


def _graph_for(config: GraphConfig) -> Any:
    """One open graph per process (SQLite connections must not cross a fork)."""
    key = str(config.graph_path)
    graph = _GRAPHS.get(key)
    if graph is None:
        graph = open_graph(config)
        _GRAPHS[key] = graph
    return graph


def shard_dir(config: GraphConfig, layer: int) -> str:
    """``<mesh dir>/initial/<layer>``."""
    return layout.initial_dir(config, layer)


def shard_name(meta: GraphMeta, layer: int, coords: Sequence[int]) -> str:
    """``<chunk position number>-0.shard`` (one shard per chunk)."""
    return layout.shard_name(meta.codec, meta.chunk_id(layer, coords))


def mesh_one_chunk(
    config: GraphConfig,
    layer: int,
    coords: Coords,
    timestamp: float,
    spec: dict[str, Any],
    graph: Any = None,
    *,
    sharding: dict[str, Any] | None = None,
    max_triangles: int | None = None,
) -> ChunkResult:
    """Mesh (layer 2) or stitch (layer >= 3) one chunk and publish its shard.

    An empty chunk removes a stale shard instead. ``graph`` defaults to this process's cached
    reader (pool workers). Stitching reads lower layers' shards with the specs in ``sharding``
    (layer -> spec, default: the mesh info's) and skips nodes over ``max_triangles``
    (default: ``mesh.max_triangles`` of the config, else 2M).
    """
    from meshing_core.mesh.layer2 import mesh_chunk
    from meshing_core.store.sharding import encode_shard

    if graph is None:
        graph = _graph_for(config)
    if int(layer) >= 3:
        return _stitch_one_chunk(
            config, int(layer), coords, timestamp, spec, graph, sharding, max_triangles
        )
    meta = graph.meta
    target_dir = shard_dir(config, layer)
    name = shard_name(meta, layer, coords)
    try:
        fragments = mesh_chunk(graph, config, coords, timestamp)
    except MeshingError:
        raise
    except Exception as exc:
        exc.add_note(f"while meshing layer-{layer} chunk {list(coords)}")
        raise
    if not fragments:
        stale = files.exists(target_dir, name)
        if stale:
            files.delete_file(target_dir, name)
        return ChunkResult(coords, 0, 0, removed_stale=stale)
    data = encode_shard(fragments, spec)
    files.write_atomic(target_dir, name, data)
    return ChunkResult(coords, len(fragments), len(data))


@dataclass(frozen=True)
class ChunkFailure:
    """A chunk that failed: no shard was published for it; ``error`` is what it raised."""

    coords: tuple[int, int, int]
    error: BaseException


def attempt_chunk(*args: Any, **kwargs: Any) -> ChunkResult | ChunkFailure:
    """``mesh_one_chunk`` that reports a failure instead of raising, so other chunks go on."""
    try:
        return mesh_one_chunk(*args, **kwargs)
    except Exception as exc:  # recorded and re-raised by mesh_layer once the others are done
        return ChunkFailure(tuple(int(c) for c in args[2]), exc)  # type: ignore[arg-type]


def _stitch_one_chunk(
    config: GraphConfig,
    layer: int,
    coords: Coords,
    timestamp: float,
    spec: dict[str, Any],
    graph: Any,
    sharding: dict[str, Any] | None,
    max_triangles: int | None,
) -> ChunkResult:
    from meshing_core.mesh.stitch import stitch_chunk

    if sharding is None:
        sharding = dict(read_mesh_info(config).get("sharding") or {})
    sharding = {**sharding, str(layer): spec}
    outcome = stitch_chunk(graph, config, layer, coords, timestamp, sharding, max_triangles)
    return ChunkResult(
        tuple(int(c) for c in coords),  # type: ignore[arg-type]
        outcome.fragments,
        outcome.bytes,
        removed_stale=outcome.removed_stale,
        skipped=outcome.skipped,
    )


def _run_serial(
    tasks: list[Coords], args: tuple, kwargs: dict[str, Any], bar: tqdm, graph: Any
) -> Iterator[ChunkResult | ChunkFailure]:
    for coords in tasks:
        result = attempt_chunk(args[0], args[1], coords, args[2], args[3], graph, **kwargs)
        bar.update(1)
        yield result


def _run_pool(
    tasks: list[Coords], args: tuple, kwargs: dict[str, Any], bar: tqdm, workers: int
) -> Iterator[ChunkResult | ChunkFailure]:
    """At most ``4 * workers`` chunks in flight, so huge ranges do not pile up futures."""
    with spawn_pool(workers) as pool:
        pending: set[Future] = set()
        queue = iter(tasks)
        try:
            while True:
                while len(pending) < 4 * workers:
                    coords = next(queue, None)
                    if coords is None:
                        break
                    pending.add(
                        pool.submit(attempt_chunk, args[0], args[1], coords, *args[2:], **kwargs)
                    )
                if not pending:
                    break
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    result = future.result()
                    bar.update(1)
                    yield result
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def unrecorded_children(
    records: RecordStore, meta: GraphMeta, layer: int, chunks: Sequence[Coords]
) -> dict[Coords, str]:
    """Chunks of ``layer`` with a lower-layer chunk under them that has no completion record.

    A child counts as done only when its record exists: a shard alone may be left by another
    timestamp or a half-finished run. Children may sit at any lower layer (layers are skipped),
    so every lower layer's chunks under the parent are checked; only the record batches under
    these parents are read, and complete batches are not held chunk by chunk.
    """
    missing: dict[Coords, str] = {}
    for lower in range(2, layer):
        span = 2 ** (layer - lower)
        for coords in chunks:
            if coords in missing:
                continue
            child = records.first_unrecorded(
                lower, [c * span for c in coords], [(c + 1) * span for c in coords]
            )
            if child is not None:
                record = records.batch_name(lower, records.batch_of(lower, child))
                missing[coords] = (
                    f"layer-{layer} chunk {list(coords)} not stitched, nothing written: its "
                    f"layer-{lower} child chunk {list(child)} has no completion record at this "
                    f"timestamp ({records.root}/{record}): mesh layer {lower} first"
                )
    return missing


class _Recorder:
    """Buffers chunk outcomes and writes them as per-batch records (O(batches) objects)."""

    def __init__(self, records: RecordStore | None, layer: int, every: int = 64):
        self.records, self.layer, self.every = records, int(layer), every
        self.done: dict[Coords, ChunkResult] = {}
        self.failed: dict[Coords, str] = {}

    def add(self, result: ChunkResult | ChunkFailure) -> None:
        if self.records is None:
            return
        if isinstance(result, ChunkFailure):
            self.failed[result.coords] = " ".join(str(result.error).split())
        else:
            self.done[result.coords] = result
        if len(self.done) + len(self.failed) >= self.every:
            self.flush()

    def flush(self) -> None:
        if self.records is not None and (self.done or self.failed):
            self.records.record_chunks(self.layer, self.done, self.failed)
        self.done, self.failed = {}, {}


def mesh_layer(
    config: GraphConfig,
    layer: int,
    *,
    chunk_start: Sequence[int] | None = None,
    chunk_end: Sequence[int] | None = None,
    timestamp: float,
    workers: int | None = None,
    progress: bool = True,
    records: RecordStore | None = None,
    force: bool = False,
    chunk_indices: tuple[int, int] | None = None,
) -> LayerReport:
    """Mesh every chunk of ``layer`` in [chunk_start, chunk_end) at ``timestamp``.

    ``chunk_indices`` (a half-open range in the layer's fixed chunk order, one planned batch)
    restricts the chunks further: with a box, the chunks of the range inside the box.

    Layer 2 is meshed from the watershed; layers 3 and up are stitched from the shards of the
    layers below, which must have been meshed at the same timestamp. A failing chunk does not
    stop the others; the first failure is raised once all are done. With ``records``, chunks
    already recorded done are skipped (unless ``force``) and every outcome is recorded.
    """
    from meshing_core.mesh.stitch import StitchError, max_triangles_of
    from meshing_core.mesh.watershed import mip_geometry

    started = time.monotonic()
    check_workers(workers)
    graph = open_graph(config)
    try:
        meta = graph.meta
        check_layer(meta, layer)
        start, end = chunk_range(meta, layer, chunk_start, chunk_end)
        check_config(config, meta)
        check_timestamp(graph.history(), timestamp)
        info = read_mesh_info(config)
        check_custom_data(graph.custom_data(), config)
        geometry = mip_geometry(meta, config.watershed, int(config.mip))
        spec = check_mesh_info(info, config, geometry.block_shape.tolist(), layer)
        kwargs: dict[str, Any] = {}
        if int(layer) >= 3:
            sharding = {
                str(k): check_mesh_info(info, config, geometry.block_shape.tolist(), k)
                for k in range(2, int(layer) + 1)
            }
            try:
                limit = max_triangles_of(config)
            except StitchError as exc:
                raise LayerRunError(str(exc)) from exc
            kwargs = {"sharding": sharding, "max_triangles": limit}

        tasks = select_chunks(meta, int(layer), start, end, chunk_indices)
        count = len(tasks)
        already: set[Coords] = set()
        if records is not None and not force:
            # only the record objects of these chunks' batches are read
            stored = records.chunk_records(layer, tasks)
            already = {c for c, fragments in stored.items() if fragments is not None}
            tasks = [c for c in tasks if c not in already]
        failures: list[ChunkFailure] = []
        blocked: list[ChunkFailure] = []  # parents whose children are not all recorded done
        if records is not None and int(layer) >= 3:
            missing = unrecorded_children(records, meta, int(layer), tasks)
            blocked = [ChunkFailure(c, LayerRunError(m)) for c, m in missing.items()]
            tasks = [c for c in tasks if c not in missing]
        n_workers = max(1, min(available_cpus() if workers is None else int(workers), len(tasks)))
        target = shard_dir(config, layer)
        log.info(
            "layer %d: meshing %d chunks %s..%s%s at t=%s with %d worker(s) into %s",
            layer, count, list(start), list(end),
            "" if chunk_indices is None else f" indices {list(chunk_indices)}",
            timestamp, n_workers, target,
        )  # fmt: skip
        args = (config, int(layer), float(timestamp), spec)
        empty = fragments = size = 0
        skipped: list[int] = []
        with tqdm(
            total=count,
            initial=len(already) + len(blocked),
            desc=f"layer {layer}",
            unit="chunk",
            file=sys.stderr,
            disable=not progress,
        ) as bar:
            if n_workers == 1:
                results = _run_serial(tasks, args, kwargs, bar, graph)
            else:
                results = _run_pool(tasks, args, kwargs, bar, n_workers)
            log_results = _Recorder(records, layer)
            for result in itertools.chain(blocked, results):
                log_results.add(result)
                if isinstance(result, ChunkFailure):
                    failures.append(result)
                    log.error("layer-%d chunk %s failed: %s", layer, list(result.coords),
                              " ".join(str(result.error).split()))  # fmt: skip
                    continue
                if result.fragments == 0:
                    empty += 1
                    note = "; removed its stale shard" if result.removed_stale else ""
                    log.info("chunk %s is empty at t=%s: no shard written%s",
                             list(result.coords), timestamp, note)  # fmt: skip
                fragments += result.fragments
                size += result.bytes
                skipped.extend(result.skipped)
            log_results.flush()
    finally:
        graph.close()
    if failures:
        first = failures[0]
        first.error.add_note(f"{len(failures)} chunk(s) of layer {layer} failed")
        raise first.error
    report = LayerReport(
        layer=int(layer),
        chunks=count,
        empty_chunks=empty,
        fragments=fragments,
        bytes=size,
        seconds=round(time.monotonic() - started, 3),
        shard_dir=target,
        skipped_nodes=sorted(skipped),
        skipped_chunks=len(already),
    )
    if skipped:
        log.warning(
            "layer %d: %d node(s) over the size limit were not written (their children stand "
            "for them): %s", layer, len(skipped), report.skipped_nodes,
        )  # fmt: skip
    log.info("layer %d done: %s", layer, report)
    return report
