"""The trigger form of a meshing DAG; Airflow validates it before a run starts."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param

from meshing_airflow.entries import RUN_MODES


def _box_param(items: dict[str, Any], title: str) -> Param:
    """An optional chunk corner: null or three integers."""
    return Param(None, type=["null", "array"], items=items, minItems=3, maxItems=3, title=title)


def trigger_params(n_layers: int, mode: str) -> dict[str, Param]:
    """The trigger form; Airflow validates it before a run starts."""
    triple = {"type": "integer", "minimum": 0}
    return {
        "timestamp": Param(
            None,
            type=["null", "string"],
            format="date-time",
            title="Meshing timestamp",
            description="RFC 3339, e.g. 2021-03-01T00:00:00Z; empty = the trigger time. "
            "A rerun at the same timestamp skips finished chunks.",
        ),
        "max_layer": Param(
            n_layers,
            type="integer",
            minimum=2,
            maximum=n_layers,
            title="Highest layer to mesh",
            description="Layers above it are skipped; run metadata records it.",
        ),
        "mode": Param(
            mode,
            enum=list(RUN_MODES[mode]),
            title="Execution mode",
            description="local: batches run in their task; sqs: batches go to the graph's "
            "queue and wait deferred for SQS workers (kubernetes DAGs run pods only).",
        ),
        "force": Param(
            False,
            type="boolean",
            title="Re-mesh chunks already done",
            description="Clears this timestamp's records once, when the run starts; retries "
            "and cleared batches still redo only chunks not recorded done.",
        ),
        "break_lease": Param(
            False,
            type="boolean",
            title="Take over a stale lease",
            description="Only when the run holding the mesh dir is dead or silent for longer "
            "than lease_ttl_s; a live run's lease is never broken.",
        ),
        "chunk_start": _box_param(triple, "Sub-box start (layer-2 chunk coordinates x, y, z)"),
        "chunk_end": _box_param(triple, "Sub-box end, exclusive"),
        "batch_size": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Chunks per batch (grown to keep the map under max_map_length)",
        ),
    }
