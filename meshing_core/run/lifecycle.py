"""The one run lifecycle: begin -> setup -> per layer (plan, batches, summary) -> finish | end.

A run meshes one timestamp. ``python -m meshing_core run`` walks these steps in one driver
process (``run_graph``); the Airflow DAG runs the same steps as tasks (one per step, one mapped
task per batch), so the two cannot drift. Between steps, all state is the run *ticket*, a plain
dict (it travels as XCom): timestamp, max layer, sub-box, batch size, owner and lease token.

- ``begin_run`` resolves the run once (new, resume, rerun or nothing, from the journal), takes
  the mesh dir's lease for its owner, and records the run in the journal. A run that will
  change shards (new or rerun) drops the run metadata first; a forced run (rerun) clears its
  timestamp's records here, once: nothing later forces, so no retry or clear of a batch ever
  re-meshes a chunk recorded done in this run. Re-entrant for the same owner (a retried or
  cleared start task takes its own lease back and clears nothing).
- Every later step runs ``holding_lease``: it renews the lease while it works (a heartbeat
  thread) and takes it back if a teardown released it, so every write to the mesh dir (setup,
  records, journal, metadata) is made by the lease's holder. A step of a run superseded by a
  later run is refused before it writes.
- ``finish_run`` writes the run metadata only when every chunk up to the max layer is recorded
  done (a sub-box run stays resumable and advertises nothing), marks the run finished and frees
  the lease; ``end_run`` (the DAG's teardown, or ``run`` failing) marks an unfinished run failed
  and frees the lease.

No Airflow import here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from meshing_core.config import GraphConfig
from meshing_core.errors import MeshingError
from meshing_core.graph import open_graph
from meshing_core.run.lease import Lease, LeaseError, LeaseHolder, acquire, read_lease
from meshing_core.run.metadata import clear_run_metadata, write_run_metadata
from meshing_core.run.records import RUNNING, RecordStore, RunJournal, plan_run
from meshing_core.timestamps import format_timestamp, now

log = logging.getLogger(__name__)

Ticket = dict[str, Any]
CLI_BREAK_HINT = "--break-lease"


class SupersededRunError(LeaseError):
    """A step of an old run would write over a newer run's shards."""


def check_max_layer(config: GraphConfig, requested: int | None) -> int:
    """The run's top layer: ``requested`` checked against the graph's layers, else the root."""
    if requested is None:
        return int(config.n_layers)
    if not 2 <= int(requested) <= config.n_layers:
        raise MeshingError(
            f"max layer {requested} is outside 2..{config.n_layers}, the layers of this graph"
        )
    return int(requested)


def _check_box(start: Sequence[int] | None, end: Sequence[int] | None) -> dict[str, Any]:
    if (start is None) != (end is None):
        raise MeshingError("chunk_start and chunk_end go together: give both or neither")
    if start is None:
        return {"chunk_start": None, "chunk_end": None}
    return {"chunk_start": [int(v) for v in start], "chunk_end": [int(v) for v in end or ()]}


def _holder(ticket: Ticket) -> LeaseHolder:
    """The lease holder of a ticket: its process (``pid``) for ``run``, none (0) for a DAG."""
    stamp = round(time.time(), 3)
    return LeaseHolder(
        run=float(ticket["timestamp"]),
        host=socket.gethostname(),
        pid=int(ticket.get("pid", 0)),
        start=stamp,
        heartbeat=stamp,
        token=str(ticket["token"]),
        owner=str(ticket["owner"]),
    )


def _refuse_if_superseded(journal: RunJournal, ticket: Ticket) -> None:
    """Stop a run whose place in the journal was taken by a later run."""
    last = journal.last()
    if last is not None and last.timestamp != float(ticket["timestamp"]):
        raise SupersededRunError(
            f"the run at {format_timestamp(ticket['timestamp'])} ({ticket['owner']}) was "
            f"superseded by the {last.describe()}: start a new run (with this timestamp "
            "to redo it) instead of retrying steps of this one"
        )


def begin_run(
    config: GraphConfig,
    *,
    owner: str,
    timestamp: float | None = None,
    max_layer: int | None = None,
    force: bool = False,
    break_lease: bool = False,
    chunk_start: Sequence[int] | None = None,
    chunk_end: Sequence[int] | None = None,
    batch_size: int | None = None,
    process: bool = False,
    break_hint: str = CLI_BREAK_HINT,
    default_timestamp: float | None = None,
) -> Ticket:
    """Resolve the run, take the lease for ``owner`` and record the run; return its ticket.

    ``process``: the lease holder is this process (``run``: a dead pid on this host frees it),
    else a holder spanning processes (a DAG run). The ticket's ``action`` is new | resume |
    rerun | nothing; with nothing (the last run finished and no timestamp or force was given)
    no lease is taken and nothing is written. ``default_timestamp`` (a DAG run's trigger time)
    is the new run's timestamp when none is given and nothing is unfinished: then a finished
    last run means a new run at that time, not nothing.
    """
    top = check_max_layer(config, max_layer)
    box = _check_box(chunk_start, chunk_end)
    journal = RunJournal(config)
    plan = plan_run(
        journal, timestamp, force, now() if default_timestamp is None else default_timestamp
    )
    if plan.action == "nothing" and default_timestamp is not None:
        plan = plan_run(journal, float(default_timestamp), force, float(default_timestamp))
    ticket: Ticket = {
        "action": plan.action,
        "message": plan.message,
        "timestamp": None if plan.timestamp is None else float(plan.timestamp),
        "max_layer": top,
        "owner": owner,
        "token": "",
        "pid": os.getpid() if process else 0,
        "batch_size": batch_size,
        **box,
    }
    if plan.action == "nothing" or plan.timestamp is None:
        log.info(plan.message)
        return ticket
    ts = float(plan.timestamp)
    entry = journal.get(ts)
    reentry = entry is not None and owner in (entry.owners or [entry.owner])
    if reentry:
        _refuse_if_superseded(journal, ticket)  # this run started before: still current?
        ticket["action"] = "resume"
    current = read_lease(config)
    mine = current is not None and current.owner == owner
    ticket["token"] = current.token if mine else uuid.uuid4().hex
    lease = acquire(config, _holder(ticket), break_lease, heartbeat=False, break_hint=break_hint)
    try:
        if not reentry and ticket["action"] != "resume":
            graph = open_graph(config)
            try:
                cleared = clear_run_metadata(config, graph)  # shards are about to change
            finally:
                graph.close()
            log.info("run metadata cleared before the run: %s", cleared)
            if ticket["action"] == "rerun":
                removed = RecordStore(config, ts).clear()
                log.info("forced run: %d record object(s) of %s cleared", removed, plan.message)
        journal.start(ts, top, owner=owner, fresh=not reentry and ticket["action"] != "resume")
    except BaseException:
        lease.release()
        raise
    log.info("%s (%s run for %s)", plan.message, ticket["action"], owner)
    return ticket


def _refuse_if_taken_over(journal: RunJournal, ticket: Ticket) -> None:
    """Stop a step of a run that someone else (``run``, another DAG run) has since taken over."""
    _refuse_if_superseded(journal, ticket)
    entry = journal.get(float(ticket["timestamp"]))
    if entry is not None and entry.owner and entry.owner != ticket["owner"]:
        raise SupersededRunError(
            f"the run at {format_timestamp(ticket['timestamp'])} was taken over by "
            f"{entry.owner} ({entry.state}) after {ticket['owner']} began it: start it again "
            "(or a new run) instead of retrying steps of the old one"
        )


@contextlib.contextmanager
def holding_lease(config: GraphConfig, ticket: Ticket) -> Iterator[Lease]:
    """Renew the run's lease while a step works; take it back if a teardown released it.

    Raises ``LeaseError`` before anything is written when another run holds the mesh dir or
    a later run (or another owner of this one) took over, and after the block when the lease
    was taken over meanwhile. A lease taken back here is released again if the step fails, so
    a retried step of a stopped run never leaves the mesh dir locked.
    """
    retaken = False
    try:
        lease = Lease.attach(config, str(ticket["token"]))
    except LeaseError:
        _refuse_if_taken_over(RunJournal(config), ticket)
        hint = CLI_BREAK_HINT if int(ticket.get("pid", 0)) else "break_lease in a new run"
        lease = acquire(config, _holder(ticket), heartbeat=False, break_hint=hint)
        retaken = True
    lease.heartbeat()  # at once: the run is alive as soon as a step starts
    lease.start_heartbeat()
    try:
        yield lease
    except BaseException:
        if retaken:
            lease.release()
        raise
    finally:
        lease.stop_heartbeat()
    lease.check()


@contextlib.contextmanager
def attached_to_run(config: GraphConfig, timestamp: float) -> Iterator[Lease | None]:
    """For an executor handed one batch of the run at ``timestamp`` (a pod, ``mesh
    --chunk-index-range``): renew that run's lease while working, never take one of its own.

    Refused in one line when another run (another timestamp) holds the mesh dir. With no lease
    at all the batch is meshed and recorded under its timestamp outside any run, as a plain
    ``mesh`` is (yields None).
    """
    holder = read_lease(config)
    if holder is None:
        yield None
        return
    if float(holder.run) != float(timestamp):
        raise LeaseError(
            f"mesh dir {config.mesh_cloudpath} is leased by {holder.describe()}, not by the run "
            f"at {format_timestamp(timestamp)}: this batch would write over that run's shards; "
            "wait for it to finish or give its timestamp"
        )
    lease = Lease.attach(config, holder.token)
    lease.heartbeat()  # at once: the run is alive as soon as an executor picks up its batch
    lease.start_heartbeat()
    try:
        yield lease
    finally:
        lease.stop_heartbeat()
    lease.check()


def setup_run(config: GraphConfig, ticket: Ticket) -> dict[str, Any]:
    """The one-time mesh setup (``run.setup``), under the run's lease."""
    from meshing_core.run.setup import setup_meshes

    with holding_lease(config, ticket):
        return setup_meshes(config)


def layer_box(ticket: Ticket, layer: int) -> dict[str, Any]:
    """The run's sub-box (given in layer-2 chunks) in ``layer``'s chunk coordinates."""
    start, end = ticket.get("chunk_start"), ticket.get("chunk_end")
    if start is None or end is None:
        return {}
    scale = 2 ** (int(layer) - 2)
    return {
        "chunk_start": [int(s) // scale for s in start],
        "chunk_end": [-(-int(e) // scale) for e in end],
    }


def plan_batches(config: GraphConfig, ticket: Ticket, layer: int) -> list[dict[str, Any]]:
    """The batch descriptors of ``layer`` in this run (empty above the run's max layer)."""
    from meshing_core.run.plan import plan_layer

    if int(layer) > int(ticket["max_layer"]):
        return []
    return plan_layer(
        config,
        int(layer),
        batch_size=ticket.get("batch_size"),
        timestamp=float(ticket["timestamp"]),
        **layer_box(ticket, layer),
    )


def run_batch(
    config: GraphConfig,
    ticket: Ticket,
    descriptor: dict[str, Any],
    *,
    workers: int | None = None,
    progress: bool | tqdm = False,
    pool: Executor | None = None,
) -> dict[str, Any]:
    """One planned batch on the local process pool, under the run's lease (``layer.run_batch``).

    The lease is checked after every chunk: a batch whose lease was taken over stops at once.
    """
    from meshing_core.run import layer as layer_run

    with holding_lease(config, ticket) as lease:
        return layer_run.run_batch(
            config,
            descriptor,
            timestamp=float(ticket["timestamp"]),
            workers=workers,
            progress=progress,
            pool=pool,
            check=lease.check,
        )


def enqueue_batch(
    config: GraphConfig, ticket: Ticket, descriptor: dict[str, Any], *, client: Any = None
) -> dict[str, Any]:
    """Send one planned batch's chunks not recorded done to the graph's queue (``sqs`` mode),
    under the run's lease; the counts, the queue's URL and when they were sent.

    Chunks recorded done are not sent again, so a retry or a Clear re-sends only the rest;
    their earlier failure records count as pending from ``sent_at`` on.
    """
    from meshing_core.queue.producer import enqueue_chunks
    from meshing_core.queue.sqs import queue_url, sqs_client
    from meshing_core.run.plan import parse_descriptor

    layer, batch, (start, stop), box = parse_descriptor(descriptor)
    client = sqs_client() if client is None else client
    with holding_lease(config, ticket):
        url = queue_url(client, config.queue)
        sent_at = time.time()
        counts = enqueue_chunks(
            config,
            layer,
            float(ticket["timestamp"]),
            url,
            chunk_start=box.get("chunk_start"),
            chunk_end=box.get("chunk_end"),
            chunk_indices=(start, stop),
            batch=batch,
            per_message=int(config.sqs["chunks_per_message"]),
            client=client,
        )
    return {**counts, "queue_url": url, "sent_at": sent_at}


def collect_batch(
    config: GraphConfig, ticket: Ticket, descriptor: dict[str, Any]
) -> dict[str, Any]:
    """A batch whose chunks ran elsewhere (a deferred batch): roll its records up, summarise.

    The deferred task owns the batch, so it is the one roller of its record batches.
    """
    from meshing_core.run.plan import batch_progress, parse_descriptor
    from meshing_core.run.records import RecordStore

    layer, batch, (start, stop), _ = parse_descriptor(descriptor)
    timestamp = float(ticket["timestamp"])
    with holding_lease(config, ticket):
        store = RecordStore(config, timestamp)
        size = store.batch_size(layer)
        store.roll_up(layer, range(start // size, -(-stop // size)))
        progress = batch_progress(config, descriptor, timestamp)
    return {
        "layer": layer,
        "batch": batch,
        "chunks": progress["total"],
        "skipped": 0,
        "done": progress["done"],
        "failed": len(progress["failed"]),
        "failed_chunks": progress["failed"],
        "seconds": 0.0,
    }


def finish_layer(
    config: GraphConfig,
    ticket: Ticket,
    layer: int,
    batches: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The layer's totals from its records; the journal marks it done when every chunk is.

    ``batches`` (the summaries this run's batches returned) add what this run did: batch
    count, chunks meshed, chunks skipped as already done, seconds.
    """
    from meshing_core.run.plan import layer_summary

    with holding_lease(config, ticket):
        totals = layer_summary(config, int(layer), float(ticket["timestamp"]))
        if totals["chunks_done"] == totals["chunks_total"]:  # not for a sub-box
            RunJournal(config).layer_done(float(ticket["timestamp"]), int(layer))
    if batches is not None:
        done = [b for b in batches if b]
        totals.update(
            batches=len(done),
            chunks_this_run=sum(int(b.get("chunks", 0)) - int(b.get("skipped", 0)) for b in done),
            skipped=sum(int(b.get("skipped", 0)) for b in done),
            seconds=round(sum(float(b.get("seconds", 0.0)) for b in done), 3),
        )
    return totals


def _incomplete_layers(config: GraphConfig, ticket: Ticket) -> dict[int, str]:
    """Layers up to the run's max layer with chunks not recorded done (a sub-box run)."""
    from meshing_core.run.plan import layer_summary

    out: dict[int, str] = {}
    for layer in range(2, int(ticket["max_layer"]) + 1):
        totals = layer_summary(config, layer, float(ticket["timestamp"]))
        if totals["chunks_done"] < totals["chunks_total"]:
            out[layer] = f"{totals['chunks_done']} of {totals['chunks_total']}"
    return out


def finish_run(config: GraphConfig, ticket: Ticket) -> dict[str, Any]:
    """Write the run metadata, mark the run finished and free the lease, if every chunk is done.

    A sub-box run leaves chunks of its layers unmeshed: it is recorded as stopped (so ``run``
    resumes the rest) and no metadata is written, since it would advertise absent meshes.
    The lease is freed here and not only in ``end_run``: clearing just the failed tasks of a
    DAG run reruns this step but not the (already successful) teardown.
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


def end_run(config: GraphConfig, ticket: Ticket, *, why: str) -> str:
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


# -- the command-line driver ------------------------------------------------------------------
@dataclass
class LayerTotals:
    """One layer of a ``run``: the sum of its batches' summaries."""

    layer: int
    chunks: int = 0
    empty_chunks: int = 0
    skipped_chunks: int = 0
    fragments: int = 0
    bytes: int = 0
    seconds: float = 0.0
    skipped_nodes: list[int] = field(default_factory=list)

    def add(self, batch: dict[str, Any]) -> None:
        self.chunks += int(batch["chunks"])
        self.empty_chunks += int(batch["empty"])
        self.skipped_chunks += int(batch["skipped"])
        self.fragments += int(batch["fragments"])
        self.bytes += int(batch["bytes"])
        self.seconds = round(self.seconds + float(batch["seconds"]), 3)
        self.skipped_nodes.extend(batch.get("skipped_nodes", []))


@dataclass
class RunSummary:
    """What a ``run`` did: its plan, each layer's totals, and what it left out."""

    action: str
    message: str
    timestamp: float | None = None
    max_layer: int | None = None
    layers: list[LayerTotals] = field(default_factory=list)

    @property
    def skipped_nodes(self) -> list[int]:
        return sorted(node for report in self.layers for node in report.skipped_nodes)

    def describe(self) -> str:
        if self.timestamp is None:
            return self.message
        lines = [f"{self.message}; meshed up to layer {self.max_layer}"]
        for r in self.layers:
            lines.append(
                f"layer {r.layer}: {r.chunks} chunks ({r.empty_chunks} empty, "
                f"{r.skipped_chunks} already done), {r.fragments} fragments, "
                f"{r.bytes} bytes, {r.seconds:.1f} s"
            )
        if self.skipped_nodes:
            lines.append(
                f"{len(self.skipped_nodes)} node(s) over the size limit were left to their "
                f"children: {self.skipped_nodes}"
            )
        lines.append(f"run at {format_timestamp(self.timestamp)} finished")
        return "\n".join(lines)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _run_layer(
    config: GraphConfig,
    ticket: Ticket,
    layer: int,
    total: int,
    pool: Executor | None,
    workers: int,
    progress: bool,
) -> LayerTotals:
    """Every batch of one layer in turn; chunk failures are raised together at the layer's end.

    A failed chunk does not stop the layer's other batches (as in the DAG, where batches are
    independent tasks); a ``MeshingError`` (bad input) or a lost lease stops the run at once.
    """
    from meshing_core.run.layer import ChunkFailuresError

    totals = LayerTotals(layer)
    failures = []
    with tqdm(total=total, desc=f"layer {layer}", unit="chunk", disable=not progress) as bar:
        for descriptor in plan_batches(config, ticket, layer):
            try:
                batch = run_batch(
                    config, ticket, descriptor, workers=workers, progress=bar, pool=pool
                )
            except ChunkFailuresError as exc:
                failures.extend(exc.failures)
                continue
            totals.add(batch)
    finish_layer(config, ticket, layer)
    if failures:
        raise ChunkFailuresError(layer, failures) from failures[0].error
    return totals


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
    """Mesh the graph from layer 2 to ``max_layer`` (default: the root layer) at one timestamp.

    Walks the lifecycle in this process: every batch of a layer on the local pool, one after
    another (a failed batch does not stop the layer's others; the first failure is raised at
    the layer's end, and the run is marked failed, resumable). One process pool serves every
    batch of the run.
    """
    from meshing_core.run.cpus import available_cpus
    from meshing_core.run.records import chunk_total
    from meshing_core.run.spawn import spawn_pool

    owner = f"run {socket.gethostname()} pid {os.getpid()}"
    ticket = begin_run(
        config,
        owner=owner,
        timestamp=timestamp,
        max_layer=max_layer,
        force=force,
        break_lease=break_lease,
        process=True,
    )
    summary = RunSummary(ticket["action"], ticket["message"], ticket["timestamp"])
    if ticket["action"] == "nothing":
        return summary
    summary.max_layer = int(ticket["max_layer"])
    try:
        setup_run(config, ticket)
        graph = open_graph(config)
        try:
            meta = graph.meta
        finally:
            graph.close()
        with contextlib.ExitStack() as stack:
            n_workers = available_cpus() if workers is None else int(workers)
            pool = stack.enter_context(spawn_pool(n_workers)) if n_workers > 1 else None
            for layer in range(2, summary.max_layer + 1):
                summary.layers.append(
                    _run_layer(
                        config, ticket, layer, chunk_total(meta, layer), pool, n_workers, progress
                    )
                )
        finish_run(config, ticket)
    except BaseException as exc:
        end_run(config, ticket, why=_one_line(exc))
        raise
    return summary
