"""A run whose steps an orchestrator (the Airflow DAG) executes in many processes.

``run`` holds the lease and the journal in one process. A DAG run is the same run split into
tasks, so the same state is kept across them: ``begin_run`` takes the mesh dir's lease for the
DAG run (a holder with no pid, named by ``owner``; its token travels in the run ticket) and
records the run in the journal; each batch renews that lease while it works
(``holding_lease``); ``layer_finished`` and ``finish_run`` update the journal and write the
run metadata; ``end_run`` (the DAG's teardown) marks an unfinished run failed and releases the
lease, so ``run`` on the command line can resume it and a cleared task can take it back.

No Airflow import here: the ticket is a plain dict (it travels as XCom).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

from meshing_core.config import GraphConfig
from meshing_core.graph.embedded import open_graph
from meshing_core.run.lease import Lease, LeaseError, LeaseHolder, acquire, read_lease
from meshing_core.run.records import RUNNING, RunJournal
from meshing_core.store.metadata import clear_run_metadata, write_run_metadata
from meshing_core.timestamps import format_timestamp

log = logging.getLogger(__name__)


def _holder(ticket: dict[str, Any]) -> LeaseHolder:
    now = round(time.time(), 3)
    return LeaseHolder(
        run=float(ticket["timestamp"]),
        host=socket.gethostname(),
        pid=0,
        start=now,
        heartbeat=now,
        token=str(ticket["token"]),
        owner=str(ticket["owner"]),
    )


def begin_run(
    config: GraphConfig, timestamp: float, max_layer: int, *, owner: str, force: bool = False
) -> dict[str, Any]:
    """Take the lease for ``owner`` and record the run; return its ticket.

    Re-entrant for the same owner (a retried or cleared start task takes its own lease back).
    A run at a timestamp other than the last one's (or forced) drops the run metadata first,
    since shards are about to change; the journal drops other timestamps' records.
    """
    timestamp = float(timestamp)
    current = read_lease(config)
    token = current.token if current is not None and current.owner == owner else uuid.uuid4().hex
    ticket = {"timestamp": timestamp, "max_layer": int(max_layer), "owner": owner, "token": token}
    acquire(config, _holder(ticket), heartbeat=False)
    journal = RunJournal(config)
    previous = journal.last()
    ticket["action"] = (
        "resume" if previous is not None and previous.timestamp == timestamp else "new"
    )
    if previous is None or previous.timestamp != timestamp or force:
        graph = open_graph(config)
        try:
            cleared = clear_run_metadata(config, graph)
        finally:
            graph.close()
        log.info("run metadata cleared before a new run: %s", cleared)
    journal.start(timestamp, int(max_layer))
    log.info("%s run at %s for %s", ticket["action"], format_timestamp(timestamp), owner)
    return ticket


@contextlib.contextmanager
def holding_lease(config: GraphConfig, ticket: dict[str, Any]) -> Iterator[Lease]:
    """Renew the run's lease while a batch works; take it back if a teardown released it.

    Raises ``LeaseError`` when another run holds the mesh dir, before any shard is written,
    and after the block when the lease was taken over meanwhile.
    """
    try:
        lease = Lease.attach(config, str(ticket["token"]))
    except LeaseError:
        lease = acquire(config, _holder(ticket), heartbeat=False)
    lease.start_heartbeat()
    try:
        yield lease
    finally:
        lease.stop_heartbeat()
    lease.check()


def layer_finished(config: GraphConfig, ticket: dict[str, Any], layer: int) -> None:
    """Record in the journal that every chunk of ``layer`` is done."""
    RunJournal(config).layer_done(float(ticket["timestamp"]), int(layer))


def finish_run(config: GraphConfig, ticket: dict[str, Any]) -> dict[str, Any]:
    """Write the run metadata (after every layer succeeded), mark the run finished, free the lease.

    The lease is freed here and not only in the teardown: clearing just the failed tasks of a
    DAG run reruns this task but not the (already successful) teardown.
    """
    with holding_lease(config, ticket) as lease:
        graph = open_graph(config)
        try:
            result = write_run_metadata(
                config, graph, int(ticket["max_layer"]), float(ticket["timestamp"])
            )
        finally:
            graph.close()
        RunJournal(config).finish(float(ticket["timestamp"]))
    lease.release()
    return result


def end_run(config: GraphConfig, ticket: dict[str, Any], *, why: str) -> str:
    """Mark the run failed unless it finished, and release its lease; returns the run's state.

    ``why`` is recorded as the failure (e.g. which DAG run stopped and how to resume it).
    Leaves another holder's lease and another run's journal entry alone.
    """
    timestamp = float(ticket["timestamp"])
    journal = RunJournal(config)
    entry = journal.get(timestamp)
    state = entry.state if entry is not None else "unknown"
    current = read_lease(config)
    ours = current is not None and current.token == str(ticket["token"])
    if entry is not None and entry.state == RUNNING and (ours or current is None):
        state = journal.fail(timestamp, why).state
    if ours:
        Lease.attach(config, str(ticket["token"])).release()
    elif current is not None:
        log.warning("lease is held by %s, not this run: left alone", current.describe())
    log.info("run at %s: %s", format_timestamp(timestamp), state)
    return state
