"""The trigger a deferred batch waits on: it watches the batch's chunk records.

A batch whose chunks run elsewhere (SQS workers, a pod) defers on ``BatchRecordsTrigger``, so
no worker slot is held while it waits. The trigger polls the records (``batch_progress``: a few
record objects per poll) in a thread, never on the triggerer's event loop, and fires once every
chunk has a completion record (``done``) or every chunk not done has a failure record
(``failed``, naming them), or when ``timeout_s`` passes with chunks still pending (``timeout``).
Airflow may run a trigger twice; polling records is idempotent, so that is harmless. It
rebuilds everything it reads from the graph.yaml path it was serialised with.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


def _progress(graph_yaml: str, descriptor: dict[str, Any], timestamp: float) -> dict[str, Any]:
    from meshing_core.config import load_config
    from meshing_core.run.plan import batch_progress

    return batch_progress(load_config(graph_yaml), descriptor, timestamp)


class BatchRecordsTrigger(BaseTrigger):
    """Fires when every chunk of one batch is recorded done, or failed for good."""

    def __init__(
        self,
        graph_yaml: str,
        descriptor: dict[str, Any],
        timestamp: float,
        poll_s: float = 30.0,
        timeout_s: float | None = None,
    ):
        super().__init__()
        self.graph_yaml = str(graph_yaml)
        self.descriptor = dict(descriptor)
        self.timestamp = float(timestamp)
        self.poll_s = float(poll_s)
        self.timeout_s = None if timeout_s is None else float(timeout_s)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "graph_yaml": self.graph_yaml,
                "descriptor": self.descriptor,
                "timestamp": self.timestamp,
                "poll_s": self.poll_s,
                "timeout_s": self.timeout_s,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from meshing_core.run.plan import batch_label

        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        label = batch_label(self.descriptor)
        while True:
            progress = await asyncio.to_thread(
                _progress, self.graph_yaml, self.descriptor, self.timestamp
            )
            status = None
            if progress["done"] == progress["total"]:
                status = "done"
            elif progress["pending"] == 0:
                status = "failed"
            elif deadline is not None and time.monotonic() > deadline:
                status = "timeout"
            if status is not None:
                yield TriggerEvent({"status": status, "label": label, **progress})
                return
            self.log.info("%s: %s", label, progress)
            await asyncio.sleep(self.poll_s)
