"""Batch planning for mapped layer tasks (and ``run``), and a layer's summary from records.

A layer's chunks have one fixed order (``meshing_core.run.records.chunk_order``: x outermost, z
fastest). A batch is a half-open range of indices in it, so a plan is a short list of small
descriptors ``{"layer", "batch", "start", "stop"}`` whatever the layer's size: planning never
opens chunk lists. Batch ``b`` of size ``n`` always covers ``[b * n, (b + 1) * n)``.

The batch size is a multiple of the completion records' batch size, so every record object
(``records/<ts>/<layer>/batch-*.json``, rolled up by the batch that owns it) has one roller: two mapped
tasks running at once never overwrite each other's records.

A plan for a sub-box keeps the same grid but only the batches holding a chunk of the box, and
each descriptor carries the box: its task meshes the chunks of
its range that are inside the box. The box rides along as ``"box": [x0, y0, z0, x1, y1, z1]``
(end exclusive), six numbers, so 1024 descriptors stay well under 100 KB of XCom.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from meshing_core.config import DEFAULT_BATCHES, GraphConfig, positive_int
from meshing_core.errors import MeshingError
from meshing_core.graph.protocol import GraphMeta
from meshing_core.run.records import (
    RecordStore,
    chunk_total,
    chunks_per_batch,
    default_batch_size,
    layer_bounds,
)

log = logging.getLogger(__name__)


class PlanError(MeshingError):
    """A batch plan or batch descriptor that cannot be used."""


def _meta_of(config: GraphConfig) -> GraphMeta:
    from meshing_core.graph import open_graph

    graph = open_graph(config)
    try:
        return graph.meta
    finally:
        graph.close()


def _positive(value: Any, name: str, config: GraphConfig) -> int:
    return positive_int(value, name, config.source, PlanError)


def _box(
    meta: GraphMeta, layer: int, chunk_start: Sequence[int] | None, chunk_end: Sequence[int] | None
) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """The checked sub-box, or None when it is the whole layer."""
    if chunk_start is None and chunk_end is None:
        return None
    from meshing_core.run.checks import LayerRunError, chunk_range

    try:
        start, end = chunk_range(meta, layer, chunk_start, chunk_end)
    except LayerRunError as exc:
        raise PlanError(str(exc)) from exc
    if start == (0, 0, 0) and end == layer_bounds(meta, layer):
        return None
    return start, end


def _touched_batches(
    meta: GraphMeta, layer: int, box: tuple[Sequence[int], Sequence[int]], size: int
) -> np.ndarray:
    """Sorted numbers of the batches of ``size`` holding a chunk of the box.

    Works on the box's (x, y) lines (each a contiguous index run), not on its chunks.
    """
    (x0, y0, z0), (x1, y1, z1) = box
    _, by, bz = layer_bounds(meta, layer)
    xs = np.arange(x0, x1, dtype=np.int64)[:, None]
    ys = np.arange(y0, y1, dtype=np.int64)[None, :]
    base = ((xs * by + ys) * bz).ravel()
    first = (base + z0) // size
    last = (base + z1 - 1) // size
    n_batches = math.ceil(chunk_total(meta, layer) / size)
    marks = np.zeros(n_batches + 1, dtype=np.int64)
    np.add.at(marks, first, 1)
    np.add.at(marks, last + 1, -1)
    return np.flatnonzero(np.cumsum(marks[:-1]) > 0)


def plan_layer(
    config: GraphConfig,
    layer: int,
    *,
    batch_size: int | None = None,
    max_map_length: int | None = None,
    chunk_start: Sequence[int] | None = None,
    chunk_end: Sequence[int] | None = None,
    meta: GraphMeta | None = None,
    timestamp: float | None = None,
) -> list[dict[str, Any]]:
    """Compact batch descriptors covering the layer (or the sub-box) in chunk order.

    The size is ``batch_size`` (default ``chunks_per_batch(config)``), grown so there are at
    most ``max_map_length`` (default ``batches.max_map_length``) batches, and rounded up to a
    multiple of the records' batch size (the one frozen at ``timestamp`` if given). ``meta``
    spares opening the graph.
    """
    meta = _meta_of(config) if meta is None else meta
    from meshing_core.run.checks import LayerRunError, check_layer

    try:
        check_layer(meta, layer)
    except LayerRunError as exc:
        raise PlanError(str(exc)) from exc
    layer = int(layer)
    batches = config.batches or {}
    wanted = _positive(
        batch_size if batch_size is not None else chunks_per_batch(config),
        "batch size (batch_size / batches.chunks_per_batch / voxels_per_batch)",
        config,
    )
    max_map = _positive(
        max_map_length
        if max_map_length is not None
        else batches.get("max_map_length", DEFAULT_BATCHES["max_map_length"]),
        "batches.max_map_length",
        config,
    )
    if timestamp is not None:
        record_size = RecordStore(config, timestamp, meta=meta).batch_size(layer)
    else:
        record_size = default_batch_size(config, meta, layer)
    total = chunk_total(meta, layer)
    box = _box(meta, layer, chunk_start, chunk_end)
    in_box = total if box is None else math.prod(e - s for s, e in zip(*box, strict=True))
    size = max(wanted, math.ceil(in_box / max_map))
    size = math.ceil(size / record_size) * record_size
    while True:
        if box is None:
            numbers: Sequence[int] = range(math.ceil(total / size))
        else:
            numbers = _touched_batches(meta, layer, box, size).tolist()
        if len(numbers) <= max_map:
            break
        size *= 2  # a thin box touches many batches: coarser grid until the map fits
    extra: dict[str, Any] = {}
    if box is not None:
        extra = {"box": [*box[0], *box[1]]}
    plan = [descriptor(layer, b, b * size, min((b + 1) * size, total), extra) for b in numbers]
    log.info(
        "layer %d: %d batch(es) of %d chunk indices (%d chunks%s)",
        layer, len(plan), size, in_box, "" if box is None else f" in box {extra}",
    )  # fmt: skip
    return plan


def batch_label(descriptor: dict[str, Any]) -> str:
    """How a batch is named in logs and errors: ``L3 b12 chunks 1200-1299``.

    The grid view renders the same text from the descriptor's fields (the batch operator's
    ``map_index_template``); the descriptor does not carry it, to keep 1024 of them small.
    """
    d = descriptor
    return f"L{int(d['layer'])} b{int(d['batch'])} chunks {int(d['start'])}-{int(d['stop']) - 1}"


def descriptor(
    layer: int, batch: int, start: int, stop: int, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A batch descriptor: layer, batch number, index range [start, stop) (+ box)."""
    return {
        "layer": int(layer),
        "batch": int(batch),
        "start": int(start),
        "stop": int(stop),
        **(extra or {}),
    }


def parse_descriptor(
    descriptor: dict[str, Any],
) -> tuple[int, int, tuple[int, int], dict[str, Any]]:
    try:
        layer, batch = int(descriptor["layer"]), int(descriptor["batch"])
        indices = (int(descriptor["start"]), int(descriptor["stop"]))
        box: dict[str, list[int]] = {}
        if descriptor.get("box") is not None:
            corners = [int(c) for c in descriptor["box"]]
            if len(corners) != 6:
                raise ValueError(corners)
            box = {"chunk_start": corners[:3], "chunk_end": corners[3:]}
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanError(
            f"batch descriptor {descriptor!r} needs integer layer, batch, start, stop (and an "
            "optional six-number box): pass one made by plan_layer"
        ) from exc
    return layer, batch, indices, box


def batch_command(descriptor: dict[str, Any], graph: str, timestamp: str) -> list[str]:
    """The ``python -m meshing_core mesh`` arguments that run this batch (for a pod or a user)."""
    layer, _, (start, stop), box = parse_descriptor(descriptor)
    argv = ["mesh", "--graph", str(graph), "--layer", str(layer), "--timestamp", str(timestamp)]
    argv += ["--chunk-index-range", str(start), str(stop)]
    for key in ("chunk_start", "chunk_end"):
        if key in box:
            argv += ["--" + key.replace("_", "-"), *(str(c) for c in box[key])]
    return argv


def layer_summary(
    config: GraphConfig, layer: int, timestamp: float, *, meta: GraphMeta | None = None
) -> dict[str, Any]:
    """A layer's totals at ``timestamp`` from its records (reads O(batches) objects)."""
    meta = _meta_of(config) if meta is None else meta
    counts = RecordStore(config, timestamp, meta=meta).layer_summary(layer)
    return {
        "layer": int(layer),
        "chunks_total": chunk_total(meta, layer),
        "chunks_done": counts["chunks_done"],
        "chunks_empty": counts["chunks_empty"],
        "chunks_failed": counts["chunks_failed"],
        "fragments": counts["fragments"],
        "bytes": counts["bytes"],
    }


def batch_progress(
    config: GraphConfig,
    descriptor: dict[str, Any],
    timestamp: float,
    *,
    failed_since: float | None = None,
) -> dict[str, Any]:
    """Where a batch's chunks stand at ``timestamp``, from their records.

    ``{"total", "done", "failed": [[x, y, z], ...], "pending": [[x, y, z], ...]}``: what a
    deferred batch's trigger (and a progress view) polls. Reads only the record batches of the
    batch's range. Failures recorded before ``failed_since`` (an earlier try of a retried
    batch, whose chunks were sent again) count as pending.
    """
    from meshing_core.run.checks import select_chunks

    layer, _, indices, box = parse_descriptor(descriptor)
    meta = _meta_of(config)
    bounds = layer_bounds(meta, layer)
    start = tuple(box.get("chunk_start", (0, 0, 0)))
    end = tuple(box.get("chunk_end", bounds))
    chunks = select_chunks(meta, layer, start, end, indices)  # type: ignore[arg-type]
    store = RecordStore(config, timestamp, meta=meta)
    done = store.chunk_records(layer, chunks)
    failures = store.failures_of(layer, [c for c, f in done.items() if f is None])
    if failed_since is not None:
        failures = {c: f for c, f in failures.items() if float(f["time"]) >= failed_since}
    finished = sum(1 for f in done.values() if f is not None)
    pending = [c for c, f in done.items() if f is None and c not in failures]
    return {
        "total": len(chunks),
        "done": finished,
        "failed": [list(c) for c in sorted(failures)],
        "pending": [list(c) for c in sorted(pending)],
    }
