"""The chunk unit: mesh or stitch one chunk, publish its shard, record the outcome.

Every executor runs chunks through ``run_chunk`` only: the local process pool, the DAG's batch
task, ``mesh --chunk-index-range`` and (next) SQS workers and pods. What a chunk needs besides
its coordinates (the checked settings, the open graph, the sharding specs of the layers below)
is a ``ChunkContext``, prepared and checked once per batch by ``prepare_context``; pool workers
rebuild it once from its ``ContextSeed`` (the driver's checked settings, without the open graph
and record store, which must not cross a process boundary) and keep it for the batch.

Layer 2 is meshed from the watershed (``meshing_core.mesh.layer2``); layers 3 and up are
stitched from the shards of the layers below (``meshing_core.mesh.stitch``). The shard
``<mesh dir>/initial/<layer>/<chunk position number>-0.shard`` is written atomically; an empty
chunk writes none and removes a stale one left by another timestamp. A failing chunk never
replaces or deletes its existing shard. With records, the outcome is recorded as soon as the
chunk is published (one object per chunk, see ``records``), so a kill loses only chunks in
flight.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from meshing_core.config import GraphConfig
from meshing_core.errors import MeshingError
from meshing_core.graph import open_graph
from meshing_core.run import checks
from meshing_core.run.memory import unmap_large_arrays
from meshing_core.run.records import RecordStore
from meshing_core.store import files, layout

log = logging.getLogger(__name__)

Coords = tuple[int, int, int]


@dataclass(frozen=True)
class ChunkResult:
    """A published chunk: its fragments and shard bytes (0, 0 for an empty chunk)."""

    coords: Coords
    fragments: int
    bytes: int
    removed_stale: bool = False
    skipped: tuple[int, ...] = ()
    """Nodes over ``mesh.max_triangles``: not written, left to their children."""
    unclosed: int = 0
    """Fragments written with open edges away from the chunk's faces or non-manifold edges."""


@dataclass(frozen=True)
class ChunkFailure:
    """A chunk that failed: no shard was published for it; ``error`` is what it raised."""

    coords: Coords
    error: BaseException


@dataclass
class ChunkContext:
    """Everything a chunk of one layer needs but its coordinates; one per process and layer."""

    config: GraphConfig
    layer: int
    timestamp: float
    spec: dict[str, Any]
    graph: Any
    sharding: dict[str, Any] | None = None  # layer -> spec, for stitching
    max_triangles: int | None = None
    records: RecordStore | None = None

    @property
    def shard_dir(self) -> str:
        return layout.initial_dir(self.config, self.layer)

    def seed(self) -> ContextSeed:
        """What a pool worker needs to rebuild this (already checked) context cheaply."""
        return ContextSeed(
            self.config,
            self.layer,
            self.timestamp,
            self.spec,
            self.sharding,
            self.max_triangles,
            self.records is not None,
        )

    def shard_name(self, coords: Coords) -> str:
        return layout.chunk_shard_name(self.graph.meta, self.layer, coords)


@dataclass(frozen=True)
class ContextSeed:
    """A checked context without its open graph and record store (it pickles to workers)."""

    config: GraphConfig
    layer: int
    timestamp: float
    spec: dict[str, Any]
    sharding: dict[str, Any] | None
    max_triangles: int | None
    record: bool


def prepare_context(
    config: GraphConfig,
    layer: int,
    timestamp: float,
    *,
    graph: Any = None,
    records: RecordStore | None = None,
) -> ChunkContext:
    """Check the layer's inputs and gather what its chunks need (one-line errors).

    ``graph`` is an open graph to use (the caller closes it), else one is opened for the
    context's lifetime. With ``records`` (a store at ``timestamp``) outcomes are recorded.
    """
    from meshing_core.mesh.stitch import StitchError, max_triangles_of
    from meshing_core.mesh.watershed import mip_geometry

    graph = open_graph(config) if graph is None else graph
    meta = graph.meta
    layer = int(layer)
    checks.check_layer(meta, layer)
    checks.check_config(config, meta)
    checks.check_timestamp(graph.history(), timestamp)
    info = checks.read_mesh_info(config)
    checks.check_custom_data(graph.custom_data(), config)
    block = mip_geometry(meta, config.watershed, int(config.mip)).block_shape.tolist()
    spec = checks.check_mesh_info(info, config, block, layer)
    context = ChunkContext(config, layer, float(timestamp), spec, graph)
    if layer >= 3:
        context.sharding = {
            str(k): checks.check_mesh_info(info, config, block, k) for k in range(2, layer + 1)
        }
        try:
            context.max_triangles = max_triangles_of(config)
        except StitchError as exc:
            raise checks.LayerRunError(str(exc)) from exc
    context.records = records
    return context


_GRAPHS: dict[str, Any] = {}


def _graph(config: GraphConfig) -> Any:
    """This process's open graph of ``config`` (one per graph file)."""
    key = str(config.graph_path)
    if key not in _GRAPHS:
        _GRAPHS[key] = open_graph(config)
    return _GRAPHS[key]


def _publish(context: ChunkContext, coords: Coords) -> ChunkResult:
    """Mesh or stitch the chunk and write (or remove) its shard."""
    from meshing_core.mesh.closedness import ClosednessTally
    from meshing_core.mesh.layer2 import mesh_chunk
    from meshing_core.store.sharding import encode_shard

    if context.layer >= 3:
        from meshing_core.mesh.stitch import stitch_chunk

        outcome = stitch_chunk(
            context.graph,
            context.config,
            context.layer,
            coords,
            context.timestamp,
            dict(context.sharding or {}),
            context.max_triangles,
        )
        return ChunkResult(
            coords, outcome.fragments, outcome.bytes, outcome.removed_stale, outcome.skipped,
            outcome.unclosed,
        )  # fmt: skip
    target, name = context.shard_dir, context.shard_name(coords)
    try:
        closedness = ClosednessTally()
        fragments = mesh_chunk(context.graph, context.config, coords, context.timestamp, closedness)
    except MeshingError:
        raise
    except Exception as exc:
        exc.add_note(f"while meshing layer-{context.layer} chunk {list(coords)}")
        raise
    if not fragments:
        stale = files.exists(target, name)
        if stale:
            files.delete_file(target, name)
        return ChunkResult(coords, 0, 0, removed_stale=stale)
    data = encode_shard(fragments, context.spec)
    files.write_atomic(target, name, data)
    return ChunkResult(coords, len(fragments), len(data), unclosed=closedness.unclosed)


def run_chunk(
    context: ChunkContext, coords: Coords, *, record_failure: bool = True
) -> ChunkResult | ChunkFailure:
    """Mesh or stitch, publish and record one chunk; a failure is returned, not raised.

    Returning the failure lets the other chunks of a batch go on; the executor raises it once
    they are done. The outcome is recorded (when the context records) before returning; an
    SQS worker whose message will be delivered again records no failure (``record_failure``):
    a failure record means failed for good.
    """
    coords = tuple(int(c) for c in coords)  # type: ignore[assignment]
    if context.layer >= 3:
        unmap_large_arrays()  # a node mesh's stages free tens of MiB each: give them back
    try:
        outcome: ChunkResult | ChunkFailure = _publish(context, coords)
    except Exception as exc:  # recorded, then re-raised by the executor once the others are done
        outcome = ChunkFailure(coords, exc)
    if context.records is not None:
        if isinstance(outcome, ChunkFailure):
            if record_failure:
                context.records.record_chunks(context.layer, failed={coords: outcome.error})
        else:
            context.records.record_chunks(context.layer, done={coords: outcome})
    return outcome


_SEEDED: list[tuple[ContextSeed, ChunkContext]] = []  # one batch's context per worker


def run_seeded_chunk(seed: ContextSeed, coords: Coords) -> ChunkResult | ChunkFailure:
    """``run_chunk`` in a pool worker, with the context its driver checked (rebuilt once)."""
    context = _SEEDED[0][1] if _SEEDED and _SEEDED[0][0] == seed else None
    if context is None:
        try:
            graph = _graph(seed.config)
        except Exception as exc:  # a graph that cannot open fails the chunk like any error
            return ChunkFailure(tuple(int(c) for c in coords), exc)  # type: ignore[arg-type]
        records = RecordStore(seed.config, seed.timestamp, meta=graph.meta) if seed.record else None
        context = ChunkContext(
            seed.config, seed.layer, seed.timestamp, seed.spec, graph,
            seed.sharding, seed.max_triangles, records,
        )  # fmt: skip
        _SEEDED[:] = [(seed, context)]
    return run_chunk(context, coords)
