"""Enqueue a layer's (or a batch's) chunks as chunk tasks: task creation apart from execution.

``mesh --queue_name`` and the DAG's ``sqs`` batches both send through here. Chunks already
recorded done at the timestamp are not sent, so a retry re-sends only what is not done.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from meshing_core.config import GraphConfig
from meshing_core.graph import open_graph
from meshing_core.queue.messages import DEFAULT_CHUNKS_PER_MESSAGE, chunk_tasks
from meshing_core.queue.sqs import queue_url, send_tasks, sqs_client
from meshing_core.run.checks import check_layer, chunk_range, select_chunks
from meshing_core.run.records import RecordStore

log = logging.getLogger(__name__)


def enqueue_chunks(
    config: GraphConfig,
    layer: int,
    timestamp: float,
    queue: str,
    *,
    chunk_start: Sequence[int] | None = None,
    chunk_end: Sequence[int] | None = None,
    chunk_indices: Sequence[int] | None = None,
    batch: int | None = None,
    per_message: int = DEFAULT_CHUNKS_PER_MESSAGE,
    client: Any = None,
) -> dict[str, int]:
    """Send the not-yet-done chunks of the box / index range; counts of chunks and messages.

    ``queue`` is an existing queue's URL or name: it is only sent to, never created.
    """
    client = sqs_client() if client is None else client
    url = queue_url(client, queue)
    graph = open_graph(config)
    try:
        meta = graph.meta
        check_layer(meta, layer)
        start, end = chunk_range(meta, layer, chunk_start, chunk_end)
        chunks = select_chunks(meta, int(layer), start, end, chunk_indices)
        stored = RecordStore(config, timestamp, meta=meta).chunk_records(int(layer), chunks)
    finally:
        graph.close()
    todo = [c for c in chunks if stored.get(c) is None]
    tasks = chunk_tasks(
        str(config.source), int(layer), timestamp, todo, batch=batch, per_message=per_message
    )
    messages = send_tasks(client, url, tasks)
    log.info(
        "layer %d: %d chunk(s) in %d message(s) to %s (%d already done)",
        layer, len(todo), messages, url, len(chunks) - len(todo),
    )  # fmt: skip
    return {"chunks": len(todo), "already_done": len(chunks) - len(todo), "messages": messages}
