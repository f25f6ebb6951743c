"""Running chunks of one layer on the local process pool: a box, an index range, a batch.

The executor behind ``mesh``, ``mesh --chunk-index-range``, ``run`` and the DAG's batch task in
``local`` mode. Inputs are checked once (``chunk.prepare_context``) before any chunk is
touched; chunks already recorded done are skipped, and a parent whose children are not all
recorded done is failed without being stitched. Each chunk goes through the chunk unit
(``chunk.run_chunk``), which records it as soon as it is published; when the batch ends its
chunk records are rolled up into the batch objects. zmesh holds the GIL, so parallelism is
processes (``spawn_pool``), at most ``4 * workers`` chunks in flight.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from tqdm import tqdm

from meshing_core.config import GraphConfig
from meshing_core.graph import open_graph
from meshing_core.graph.protocol import GraphMeta
from meshing_core.run.checks import (
    LayerRunError,
    check_layer,
    check_workers,
    chunk_range,
    select_chunks,
)
from meshing_core.run.chunk import (
    ChunkContext,
    ChunkFailure,
    ChunkResult,
    prepare_context,
    run_chunk,
    run_seeded_chunk,
)
from meshing_core.run.cpus import available_cpus
from meshing_core.run.records import RecordStore
from meshing_core.run.spawn import spawn_pool

log = logging.getLogger(__name__)

Coords = tuple[int, int, int]


@dataclass
class LayerReport:
    """What one ``mesh_layer`` call (a box, a range or a batch of one layer) did."""

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
    failures: list[ChunkFailure] = dataclass_field(default_factory=list)


def _run_serial(context: ChunkContext, tasks: list[Coords]) -> Iterator[ChunkResult | ChunkFailure]:
    for coords in tasks:
        yield run_chunk(context, coords)


@contextlib.contextmanager
def _pool_for(workers: int, pool: Executor | None) -> Iterator[Executor]:
    if pool is not None:
        yield pool  # the caller's pool, kept for its next batch
    else:
        with spawn_pool(workers) as own:
            yield own


def _run_pool(
    context: ChunkContext, tasks: list[Coords], workers: int, pool: Executor | None = None
) -> Iterator[ChunkResult | ChunkFailure]:
    """At most ``4 * workers`` chunks in flight, so huge ranges do not pile up futures."""
    seed = context.seed()  # checked by this driver: workers skip the checks
    with _pool_for(workers, pool) as pool:
        pending: set[Future] = set()
        queue = iter(tasks)
        try:
            while True:
                while len(pending) < 4 * workers:
                    coords = next(queue, None)
                    if coords is None:
                        break
                    pending.add(pool.submit(run_seeded_chunk, seed, coords))
                if not pending:
                    break
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
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


def mesh_layer(
    config: GraphConfig,
    layer: int,
    *,
    chunk_start: Sequence[int] | None = None,
    chunk_end: Sequence[int] | None = None,
    timestamp: float,
    workers: int | None = None,
    progress: bool | tqdm = True,
    record: bool = False,
    chunk_indices: tuple[int, int] | None = None,
    raise_failures: bool = True,
    pool: Executor | None = None,
    check: Callable[[], None] | None = None,
) -> LayerReport:
    """Mesh every chunk of ``layer`` in [chunk_start, chunk_end) at ``timestamp``.

    ``chunk_indices`` (a half-open range in the layer's fixed chunk order, one planned batch)
    restricts the chunks further: with a box, the chunks of the range inside the box.

    With ``record``, chunks already recorded done at ``timestamp`` are skipped and every
    outcome is recorded (a forced run clears its records once, at its start, never here).
    A failing chunk does not stop the others; the first failure is raised once all are done
    (or, without ``raise_failures``, returned in the report). ``progress`` is a flag or a
    tqdm bar to advance (a run's bar spanning the layer's batches). ``pool`` is a process pool
    to reuse (``run`` keeps one for all its batches; its size is ``workers``). ``check`` is
    called after every chunk and may raise to stop the batch (a lost lease).
    """
    started = time.monotonic()
    check_workers(workers)
    graph = open_graph(config)
    stack = contextlib.ExitStack()
    try:
        meta = graph.meta
        check_layer(meta, layer)
        start, end = chunk_range(meta, layer, chunk_start, chunk_end)
        tasks = select_chunks(meta, int(layer), start, end, chunk_indices)
        selected = tasks
        count = len(tasks)
        records = RecordStore(config, timestamp, meta=meta) if record else None
        already: set[Coords] = set()
        missing: dict[Coords, str] = {}  # parents whose children are not all recorded done
        if records is not None:
            # only the record objects of these chunks' batches are read
            stored = records.chunk_records(layer, tasks)
            already = {c for c, fragments in stored.items() if fragments is not None}
            tasks = [c for c in tasks if c not in already]
            if int(layer) >= 3:
                missing = unrecorded_children(records, meta, int(layer), tasks)
                tasks = [c for c in tasks if c not in missing]
        n_workers = available_cpus() if workers is None else int(workers)
        if pool is None:
            n_workers = max(1, min(n_workers, len(tasks)))
            if n_workers > 1:  # start the workers now: they import while the inputs are checked
                pool = stack.enter_context(spawn_pool(n_workers))
        context = prepare_context(config, layer, timestamp, graph=graph, records=records)
        blocked = [ChunkFailure(c, LayerRunError(m)) for c, m in missing.items()]
        if blocked:
            records.record_chunks(layer, failed={f.coords: f.error for f in blocked})
        log.info(
            "layer %d: meshing %d chunks %s..%s%s at t=%s with %d worker(s) into %s",
            layer, count, list(start), list(end),
            "" if chunk_indices is None else f" indices {list(chunk_indices)}",
            timestamp, n_workers, context.shard_dir,
        )  # fmt: skip
        report = LayerReport(int(layer), count, 0, 0, 0, 0.0, context.shard_dir)
        report.skipped_chunks = len(already)
        own_bar = not isinstance(progress, tqdm)
        bar = (
            tqdm(
                total=count,
                desc=f"layer {layer}",
                unit="chunk",
                file=sys.stderr,
                disable=not progress,
            )
            if own_bar
            else progress
        )
        try:
            bar.update(len(already) + len(blocked))
            if pool is None:
                results = _run_serial(context, tasks)
            else:
                results = _run_pool(context, tasks, n_workers, pool)
            for failure in blocked:
                _tally(report, failure, timestamp)
            for result in results:
                bar.update(1)
                _tally(report, result, timestamp)
                if check is not None:
                    check()
        finally:
            if own_bar:
                bar.close()
            if records is not None:  # every record batch of the range: also ones a kill left
                records.roll_up(layer, {records.batch_of(layer, c) for c in selected})
    finally:
        stack.close()
        graph.close()
    report.seconds = round(time.monotonic() - started, 3)
    report.skipped_nodes.sort()
    if report.failures and raise_failures:
        raise_first(report)
    if report.skipped_nodes:
        log.warning(
            "layer %d: %d node(s) over the size limit were not written (their children stand "
            "for them): %s", layer, len(report.skipped_nodes), report.skipped_nodes,
        )  # fmt: skip
    log.info("layer %d done: %s", layer, report)
    return report


def _tally(report: LayerReport, result: ChunkResult | ChunkFailure, timestamp: float) -> None:
    if isinstance(result, ChunkFailure):
        report.failures.append(result)
        log.error("layer-%d chunk %s failed: %s", report.layer, list(result.coords),
                  " ".join(str(result.error).split()))  # fmt: skip
        return
    if result.fragments == 0:
        report.empty_chunks += 1
        note = "; removed its stale shard" if result.removed_stale else ""
        log.info("chunk %s is empty at t=%s: no shard written%s",
                 list(result.coords), timestamp, note)  # fmt: skip
    report.fragments += result.fragments
    report.bytes += result.bytes
    report.skipped_nodes.extend(result.skipped)


class ChunkFailuresError(Exception):
    r"""Chunks of a batch failed (their failure records say why); the others were published.

    Not a ``MeshingError``: a chunk may fail for reasons a retry fixes (a storage hiccup, memory,
    a shard another batch was still writing), so an executor retries the batch, which redoes
    only the chunks not recorded done. Input problems found before any chunk ran are
    ``MeshingError``\ s and are not retried.
    """

    def __init__(self, layer: int, failures: Sequence[ChunkFailure]):
        self.layer = int(layer)
        self.failures = list(failures)
        first = self.failures[0]
        text = " ".join(str(first.error).split()) or type(first.error).__name__
        super().__init__(
            f"{len(self.failures)} chunk(s) of layer {self.layer} failed, first "
            f"{list(first.coords)}: {text}"
        )


def raise_first(report: LayerReport) -> None:
    """Raise ``ChunkFailuresError`` for the report's failed chunks (the first one as cause)."""
    raise ChunkFailuresError(report.layer, report.failures) from report.failures[0].error


def run_batch(
    config: GraphConfig,
    descriptor: dict[str, Any],
    *,
    timestamp: float,
    workers: int | None = None,
    progress: bool | tqdm = False,
    pool: Executor | None = None,
    check: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Mesh one planned batch at ``timestamp`` with its records; returns its summary.

    The one implementation of "run a batch": the DAG's batch task, ``run`` and
    ``mesh --chunk-index-range`` all call it. Chunks recorded done are skipped; a failed chunk
    is raised (as ``mesh_layer`` does) once the batch's other chunks are done.
    """
    from meshing_core.run.plan import parse_descriptor

    layer, batch, indices, box = parse_descriptor(descriptor)
    started = time.monotonic()
    records = RecordStore(config, timestamp)
    size = records.batch_size(layer)
    if indices[0] % size:
        log.warning(
            "layer %d batch %d: indices %s do not start on a record batch of %d chunks at this "
            "timestamp; do not run overlapping batches at once (plan with timestamp=)",
            layer, batch, list(indices), size,
        )  # fmt: skip
    report = mesh_layer(
        config,
        layer,
        chunk_indices=indices,
        chunk_start=box.get("chunk_start"),
        chunk_end=box.get("chunk_end"),
        timestamp=float(timestamp),
        workers=workers,
        progress=progress,
        record=True,
        pool=pool,
        check=check,
    )
    summary = batch_summary(report, batch, time.monotonic() - started)
    log.info("layer %d batch %d: %s", layer, batch, summary)
    return summary


def batch_summary(report: LayerReport, batch: int, seconds: float) -> dict[str, Any]:
    """The small JSON a batch reports (XCom in a DAG run)."""
    return {
        "layer": report.layer,
        "batch": int(batch),
        "chunks": report.chunks,
        "skipped": report.skipped_chunks,
        "empty": report.empty_chunks,
        "fragments": report.fragments,
        "bytes": report.bytes,
        "failed": len(report.failures),
        "skipped_nodes": report.skipped_nodes,
        "seconds": round(seconds, 3),
    }
