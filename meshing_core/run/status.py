"""``status``: per layer, chunks done/failed/pending/total, nodes, fragments, bytes, rate, ETA.

Reads the run journal, the lease and each layer's batch record objects (O(batches), never one
object per chunk), plus the graph's node counts at the timestamp. The result is plain JSON
(``status --json``); ``format_status`` renders it as a table.
"""

from __future__ import annotations

import logging
from typing import Any

from meshing_core.config import GraphConfig
from meshing_core.errors import MeshingError
from meshing_core.graph import open_graph
from meshing_core.run import records
from meshing_core.run.lease import read_lease, staleness, ttl_from_config
from meshing_core.run.progress import layer_progress
from meshing_core.timestamps import format_timestamp

log = logging.getLogger(__name__)

MAX_FAILURES_SHOWN = 20


class StatusError(MeshingError):
    """Nothing to report (no run recorded); the message says how to start one."""


def _run_dict(entry: records.RunEntry | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {
        "timestamp": entry.timestamp,
        "timestamp_text": format_timestamp(entry.timestamp),
        "state": entry.state,
        "max_layer": entry.max_layer,
        "started": entry.started,
        "finished": entry.finished,
        "host": entry.host,
        "layers_done": list(entry.layers_done),
        "error": entry.error,
    }


def _lease_dict(config: GraphConfig) -> dict[str, Any] | None:
    holder = read_lease(config)
    if holder is None:
        return None
    return {
        "run": holder.run,
        "host": holder.host,
        "pid": holder.pid,
        "start": holder.start,
        "heartbeat": holder.heartbeat,
        "stale": staleness(holder, ttl_from_config(config)),
        "text": holder.describe(),
    }


def status(
    config: GraphConfig, timestamp: float | None = None, *, grid: bool = False, graph: Any = None
) -> dict[str, Any]:
    """Progress of the run at ``timestamp`` (default: the last run in the journal).

    The per-layer numbers come from ``progress.layer_progress``, as the Airflow progress view's
    do (it calls this with ``grid=True`` for the x-y chunk grids).
    """
    journal = records.RunJournal(config)
    entry = journal.last() if timestamp is None else journal.get(timestamp)
    if timestamp is None:
        if entry is None:
            raise StatusError(
                f"no meshing run recorded in {config.mesh_cloudpath}: start one with "
                f"`python -m meshing_core run --graph {config.source}` or pass --timestamp"
            )
        timestamp = entry.timestamp
    reader = open_graph(config) if graph is None else graph  # a caller's open graph is kept
    try:
        meta = reader.meta
        node_counts = reader.node_counts(float(timestamp))
    finally:
        if graph is None:
            reader.close()
    store = records.RecordStore(config, float(timestamp), meta=meta)
    layers = []
    for layer in range(2, meta.n_layers + 1):
        counted = layer_progress(store, layer, grid=grid)
        layers.append(
            {
                **counted.as_dict(grid=grid, failures_shown=MAX_FAILURES_SHOWN),
                "nodes": _count(node_counts, layer),
            }
        )
    return {
        "graph": config.name,
        "mesh_dir": config.mesh_cloudpath,
        "timestamp": float(timestamp),
        "timestamp_text": format_timestamp(float(timestamp)),
        "run": _run_dict(entry),
        "lease": _lease_dict(config),
        "layers": layers,
    }


def format_duration(seconds: float | None) -> str:
    """``1h02m``, ``3m05s``, ``12s``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def format_status(report: dict[str, Any]) -> str:
    """A human-readable table of a ``status`` dict."""
    lines = [f"graph {report['graph']}  mesh dir {report['mesh_dir']}"]
    run = report.get("run")
    if run is None:
        lines.append(f"timestamp {report['timestamp_text']}: no run recorded at it")
    else:
        finished = f", finished {format_timestamp(run['finished'])}" if run.get("finished") else ""
        lines.append(
            f"run at {run['timestamp_text']}: {run['state']}, max layer {run['max_layer']}, "
            f"started {format_timestamp(run['started'])}{finished}"
        )
        if run.get("error"):
            lines.append(f"  error: {run['error']}")
    lease = report.get("lease")
    if lease is not None:
        stale = f" (stale: {lease['stale']})" if lease.get("stale") else ""
        lines.append(f"lease held by {lease['text']}{stale}")
    header = (
        "layer", "done", "failed", "pending", "total", "empty", "nodes", "fragments", "unclosed",
        "bytes", "chunks/min", "eta",
    )  # fmt: skip
    rows = [header]
    for layer in report["layers"]:
        rate = layer.get("chunks_per_minute")
        rows.append(
            (
                str(layer["layer"]),
                str(layer["chunks_done"]),
                str(layer["chunks_failed"]),
                str(layer["chunks_pending"]),
                str(layer["chunks_total"]),
                str(layer["chunks_empty"]),
                "-" if layer["nodes"] is None else str(layer["nodes"]),
                str(layer["fragments"]),
                str(layer.get("unclosed", 0)),
                _size(layer["bytes"]),
                "-" if rate is None else f"{rate:.1f}",
                format_duration(layer.get("eta_seconds")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        lines.append("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
    for layer in report["layers"]:
        for failure in layer["failures"]:
            lines.append(
                f"failed: layer {layer['layer']} chunk {failure['chunk']} "
                f"(try {failure['try']}): {failure['error']}"
            )
        hidden = layer["chunks_failed"] - len(layer["failures"])
        if hidden > 0:
            lines.append(f"failed: layer {layer['layer']}: {hidden} more chunks not listed")
    return "\n".join(lines)


def _count(counts: dict[int, int], layer: int) -> int | None:
    """A layer's node count, or None where the backend does not count (PyChunkedGraph)."""
    return int(counts.get(layer, 0)) if counts else None
