"""`run`: setup -> layer 2 .. max layer in order -> metadata, resumable and leased.

One run meshes one timestamp. The run journal in the mesh dir says which run is unfinished, so
`run` without a timestamp resumes it; completion records make a resumed layer skip its finished
chunks; the lease keeps a second run of the same mesh dir from starting meanwhile. Metadata that
advertises meshes (custom data `max_layer`/`initial_ts`, `mesh_metadata.max_meshed_layer`) is
written only after the last layer succeeded, so a failed run never claims meshes that are absent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from meshing_core.config import GraphConfig
from meshing_core.errors import MeshingError
from meshing_core.graph import open_graph
from meshing_core.run.layer import LayerReport, mesh_layer
from meshing_core.run.lease import leased
from meshing_core.run.metadata import clear_run_metadata, write_run_metadata
from meshing_core.run.records import RecordStore, RunJournal, plan_run
from meshing_core.run.setup import setup_meshes
from meshing_core.timestamps import format_timestamp, now

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What a `run` did: its plan, each layer's report, and what it left out."""

    action: str
    message: str
    timestamp: float | None = None
    max_layer: int | None = None
    layers: list[LayerReport] = field(default_factory=list)

    @property
    def skipped_nodes(self) -> list[int]:
        return [node for report in self.layers for node in report.skipped_nodes]

    def describe(self) -> str:
        if self.timestamp is None:
            return self.message
        lines = [f"{self.message}; meshed up to layer {self.max_layer}"]
        for r in self.layers:
            lines.append(
                f"layer {r.layer}: {r.chunks} chunks ({r.empty_chunks} empty, "
                f"{getattr(r, 'skipped_chunks', 0)} already done), {r.fragments} fragments, "
                f"{r.bytes} bytes, {r.seconds:.1f} s"
            )
        if self.skipped_nodes:
            lines.append(
                f"{len(self.skipped_nodes)} node(s) over the size limit were left to their "
                f"children: {self.skipped_nodes}"
            )
        lines.append(f"run at {format_timestamp(self.timestamp)} finished")
        return "\n".join(lines)


def _max_layer(config: GraphConfig, requested: int | None) -> int:
    if requested is None:
        return config.n_layers
    if not 2 <= requested <= config.n_layers:
        raise MeshingError(
            f"--max-layer {requested} is outside 2..{config.n_layers}, the layers of this graph"
        )
    return int(requested)


def run_graph(
    config: GraphConfig,
    *,
    timestamp: float | None = None,
    max_layer: int | None = None,
    force: bool = False,
    break_lease: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> RunSummary:
    """Mesh the graph from layer 2 to ``max_layer`` (default: the root layer) at one timestamp."""
    top = _max_layer(config, max_layer)
    journal = RunJournal(config)
    plan = plan_run(journal, timestamp, force, now())
    if plan.action == "nothing" or plan.timestamp is None:
        log.info(plan.message)
        return RunSummary(plan.action, plan.message)
    ts = float(plan.timestamp)
    log.info(plan.message)
    summary = RunSummary(plan.action, plan.message, ts, top)
    with leased(config, ts, break_stale=break_lease) as lease:
        setup_meshes(config)
        previous = journal.last()
        graph = open_graph(config)
        try:
            if previous is None or previous.timestamp != ts or plan.action != "resume":
                clear_run_metadata(config, graph)  # shards are about to change
            journal.start(ts, top)
            records = RecordStore(config, ts, meta=graph.meta)
            if plan.action == "rerun":
                records.clear()
            try:
                for layer in range(2, top + 1):
                    lease.check()
                    report = mesh_layer(
                        config,
                        layer,
                        timestamp=ts,
                        workers=workers,
                        progress=progress,
                        records=records,
                    )
                    summary.layers.append(report)
                    journal.layer_done(ts, layer)
                write_run_metadata(config, graph, top, ts)
            except BaseException as exc:
                journal.fail(ts, exc)
                raise
            journal.finish(ts)
        finally:
            graph.close()
    return summary
