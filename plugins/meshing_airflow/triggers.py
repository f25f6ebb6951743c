"""The trigger a deferred batch waits on: it watches the batch's chunk records.

A batch whose chunks run elsewhere (SQS workers, a pod) defers on ``BatchRecordsTrigger``, so
no worker slot is held while it waits. The trigger polls the records (``batch_progress``: a few
record objects per poll) in a thread, never on the triggerer's event loop, and fires once every
chunk has a completion record (``done``) or every chunk not done has a failure record
(``failed``, naming them), or when ``timeout_s`` passes with chunks still pending (``timeout``).

In ``sqs`` mode it also renews the run's lease (the deferred batch is what keeps the run alive
while workers mesh) and reads the queue's counts: SQS cannot list a queue, so a chunk whose
worker died on its last allowed receive leaves no record and no message. When chunks are
pending with nothing visible or in flight for longer than ``lost_after_s`` (the layer's
visibility timeout and a poll), it fires ``lost`` naming them. Clients are rebuilt here from
the connection id (a hook's endpoint set on the task would be lost when it defers).

Airflow may run a trigger twice; polling records is idempotent, so that is harmless. It
rebuilds everything it reads from the graph.yaml path it was serialised with.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

_FIELDS = (
    "graph_yaml", "descriptor", "timestamp", "poll_s", "timeout_s", "failed_since",
    "lease_token", "queue_url", "aws_conn_id", "lost_after_s",
)  # fmt: skip


class BatchRecordsTrigger(BaseTrigger):
    """Fires when every chunk of one batch is recorded done, or failed for good (or lost)."""

    def __init__(
        self,
        graph_yaml: str,
        descriptor: dict[str, Any],
        timestamp: float,
        poll_s: float = 30.0,
        timeout_s: float | None = None,
        failed_since: float | None = None,
        lease_token: str | None = None,
        queue_url: str | None = None,
        aws_conn_id: str | None = None,
        lost_after_s: float | None = None,
    ):
        super().__init__()
        self.graph_yaml = str(graph_yaml)
        self.descriptor = dict(descriptor)
        self.timestamp = float(timestamp)
        self.poll_s = float(poll_s)
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self.failed_since = None if failed_since is None else float(failed_since)
        self.lease_token = lease_token
        self.queue_url = queue_url
        self.aws_conn_id = aws_conn_id
        self.lost_after_s = None if lost_after_s is None else float(lost_after_s)
        self._config: Any = None
        self._client: Any = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {name: getattr(self, name) for name in _FIELDS},
        )

    def _look(self) -> dict[str, Any]:
        """One poll, in a thread: renew the lease, read the records (and the queue's counts)."""
        from meshing_core.config import load_config
        from meshing_core.run.plan import batch_progress

        if self._config is None:
            self._config = load_config(self.graph_yaml)
        if self.lease_token:
            from meshing_core.run.lease import Lease

            Lease.attach(self._config, self.lease_token).heartbeat()
        progress = batch_progress(
            self._config, self.descriptor, self.timestamp, failed_since=self.failed_since
        )
        if self.queue_url and progress["pending"]:
            from meshing_airflow.hooks import sqs_client_for
            from meshing_core.queue.sqs import queue_counts

            if self._client is None:
                self._client = sqs_client_for(self.aws_conn_id)
            progress["queue"] = queue_counts(self._client, self.queue_url)
        return progress

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from meshing_core.errors import MeshingError
        from meshing_core.run.plan import batch_label

        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        label = batch_label(self.descriptor)
        quiet_since: float | None = None
        while True:
            try:
                progress = await asyncio.to_thread(self._look)
            except MeshingError as exc:  # lease taken over, records unreadable: one line
                yield TriggerEvent({"status": "error", "label": label, "error": str(exc)})
                return
            status = None
            now = time.monotonic()
            queue = progress.get("queue")
            if queue is not None and not any(queue.values()):
                quiet_since = now if quiet_since is None else quiet_since
            else:
                quiet_since = None
            if progress["done"] == progress["total"]:
                status = "done"
            elif not progress["pending"]:
                status = "failed"
            elif (
                quiet_since is not None
                and self.lost_after_s is not None
                and now - quiet_since > self.lost_after_s
            ):
                status = "lost"
            elif deadline is not None and now > deadline:
                status = "timeout"
            if status is not None:
                yield TriggerEvent(
                    {"status": status, "label": label, "queue_url": self.queue_url, **progress}
                )
                return
            self.log.info(
                "%s: %d/%d done, %d failed, %d pending%s", label, progress["done"],
                progress["total"], len(progress["failed"]), len(progress["pending"]),
                f", queue {queue}" if queue is not None else "",
            )  # fmt: skip
            await asyncio.sleep(self.poll_s)
