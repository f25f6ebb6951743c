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
from meshing_core.graph import open_graph
from meshing_core.run.lease import Lease, LeaseError, LeaseHolder, acquire, read_lease
from meshing_core.run.metadata import clear_run_metadata, write_run_metadata
from meshing_core.run.records import RUNNING, RunJournal
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


BREAK_HINT = "break_lease=true in the trigger form"


class SupersededRunError(LeaseError):
    """A cleared task of an old DAG run would write over a newer run's shards."""


def _refuse_if_superseded(journal: RunJournal, ticket: dict[str, Any]) -> None:
    """Stop a DAG run whose place in the journal was taken by a later run."""
    last = journal.last()
    if last is not None and last.timestamp != float(ticket["timestamp"]):
        raise SupersededRunError(
            f"the run at {format_timestamp(ticket['timestamp'])} ({ticket['owner']}) was "
            f"superseded by the {last.describe()}: trigger a new run (with this timestamp "
            "to redo it) instead of clearing tasks of this one"
        )


def begin_run(
    config: GraphConfig,
    timestamp: float,
    max_layer: int,
    *,
    owner: str,
    force: bool = False,
    break_lease: bool = False,
) -> dict[str, Any]:
    """Take the lease for ``owner`` and record the run; return its ticket.

    Re-entrant for the same owner (a retried or cleared start task takes its own lease back),
    unless a later run has started since. A run at a timestamp other than the last one's (or
    forced) drops the run metadata first, since shards are about to change; the journal drops
    other timestamps' records. ``break_lease`` takes over a stale lease (dead or expired).
    """
    timestamp = float(timestamp)
    journal = RunJournal(config)
    ticket = {"timestamp": timestamp, "max_layer": int(max_layer), "owner": owner, "token": ""}
    if any(r.owner == owner for r in journal.runs()):
        _refuse_if_superseded(journal, ticket)  # this DAG run started before: still current?
    current = read_lease(config)
    mine = current is not None and current.owner == owner
    ticket["token"] = current.token if mine else uuid.uuid4().hex
    acquire(config, _holder(ticket), break_lease, heartbeat=False, break_hint=BREAK_HINT)
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
    journal.start(timestamp, int(max_layer), owner=owner)
    log.info("%s run at %s for %s", ticket["action"], format_timestamp(timestamp), owner)
    return ticket


@contextlib.contextmanager
def holding_lease(config: GraphConfig, ticket: dict[str, Any]) -> Iterator[Lease]:
    """Renew the run's lease while a batch works; take it back if a teardown released it.

    Raises ``LeaseError`` before any shard is written when another run holds the mesh dir or
    a later run superseded this one, and after the block when the lease was taken over.
    """
    try:
        lease = Lease.attach(config, str(ticket["token"]))
    except LeaseError:
        _refuse_if_superseded(RunJournal(config), ticket)
        lease = acquire(config, _holder(ticket), heartbeat=False, break_hint=BREAK_HINT)
    lease.start_heartbeat()
    try:
        yield lease
    finally:
        lease.stop_heartbeat()
    lease.check()


def layer_finished(config: GraphConfig, ticket: dict[str, Any], layer: int) -> None:
    """Record in the journal that every chunk of ``layer`` is done."""
    RunJournal(config).layer_done(float(ticket["timestamp"]), int(layer))


def _incomplete_layers(config: GraphConfig, ticket: dict[str, Any]) -> dict[int, str]:
    """Layers up to the run's max layer with chunks not recorded done (a sub-box run)."""
    from meshing_core.run.plan import layer_summary

    out: dict[int, str] = {}
    for layer in range(2, int(ticket["max_layer"]) + 1):
        totals = layer_summary(config, layer, float(ticket["timestamp"]))
        if totals["chunks_done"] < totals["chunks_total"]:
            out[layer] = f"{totals['chunks_done']} of {totals['chunks_total']}"
    return out


def finish_run(config: GraphConfig, ticket: dict[str, Any]) -> dict[str, Any]:
    """Write the run metadata, mark the run finished and free the lease, if every chunk is done.

    A sub-box run leaves chunks of its layers unmeshed: it is recorded as stopped (so ``run``
    resumes the rest) and no metadata is written, since it would advertise absent meshes.
    The lease is freed here and not only in the teardown: clearing just the failed tasks of a
    DAG run reruns this task but not the (already successful) teardown.
    """
    timestamp = float(ticket["timestamp"])
    result: dict[str, Any] = {"complete": True}
    with holding_lease(config, ticket) as lease:
        journal = RunJournal(config)
        incomplete = _incomplete_layers(config, ticket)
        if incomplete:
            why = "; ".join(f"layer {k}: {v} chunks done" for k, v in incomplete.items())
            journal.fail(
                timestamp,
                f"partial run ({why}); run metadata not written: mesh the rest at "
                f"{format_timestamp(timestamp)} (run --timestamp, or trigger without a sub-box)",
            )
            log.warning("partial run, no run metadata written: %s", why)
            result = {"complete": False, "incomplete_layers": incomplete}
        else:
            graph = open_graph(config)
            try:
                result.update(
                    write_run_metadata(config, graph, int(ticket["max_layer"]), timestamp)
                )
            finally:
                graph.close()
            journal.finish(timestamp)
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
