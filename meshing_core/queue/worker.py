"""The SQS worker loop: receive a chunk task, hold it while its chunks run, then acknowledge.

Each chunk goes through the chunk unit (``run_chunk``), exactly as the local pool runs it. The
message is held with the layer's visibility timeout and extended while a chunk runs; it is
deleted only after every chunk's shard and completion record are written, and left to
redelivery on failure. A failure is recorded only on the last receive SQS allows
(``ApproximateReceiveCount`` = the queue's ``maxReceiveCount``), when the message is about to
go to the dead-letter queue: a failure record means failed for good. A redelivered chunk whose
completion record exists is acknowledged without work, so a redelivery is harmless.

Workers attach to the run named by the message (``lifecycle.attached_to_run``), never take a
lease of their own, and are refused when another run holds the mesh dir.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from meshing_core.config import GraphConfig
from meshing_core.queue.messages import ChunkTask, MessageError, decode
from meshing_core.queue.sqs import MAX_HOLD_S, max_receive_count, queue_counts, queue_url

log = logging.getLogger(__name__)

WAIT_S = 10  # long-poll length: also how soon an idle worker notices SIGTERM
EMPTY_WAIT_S = 1  # the long poll of a worker that exits when the queue is empty
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # the command line's
HOLD_MARGIN_S = 60  # stop holding a message this long before SQS's 12-hour cap


@dataclass
class WorkerTotals:
    """What one worker did, for its exit line."""

    messages: int = 0
    chunks_done: int = 0
    chunks_skipped: int = 0
    chunks_failed: int = 0
    released: int = 0
    refused: int = 0

    def add(self, other: WorkerTotals) -> None:
        for name in (f.name for f in fields(self)):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def describe(self) -> str:
        return (
            f"{self.messages} message(s): {self.chunks_done} chunk(s) done, "
            f"{self.chunks_skipped} already done, {self.chunks_failed} failed, "
            f"{self.released} message(s) released, {self.refused} refused"
        )


class _Hold:
    """Keeps one received message invisible while its chunks run (a heartbeat thread)."""

    def __init__(self, client: Any, url: str, receipt: str, timeout_s: int, on_cap: Callable):
        self.client, self.url, self.receipt = client, url, receipt
        self.timeout_s = int(timeout_s)
        self.received = time.monotonic()
        self.capped = False
        self._on_cap = on_cap
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="sqs-hold", daemon=True)

    def __enter__(self) -> _Hold:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        period = max(1.0, self.timeout_s / 3)
        while not self._stop.wait(period):
            left = MAX_HOLD_S - (time.monotonic() - self.received)
            if left < HOLD_MARGIN_S + period:
                self.capped = True
                self._on_cap()
                return
            timeout = int(min(self.timeout_s, left - HOLD_MARGIN_S))
            try:
                self.client.change_message_visibility(
                    QueueUrl=self.url, ReceiptHandle=self.receipt, VisibilityTimeout=timeout
                )
            except Exception as exc:  # the next beat tries again; redelivery is harmless
                log.warning("extending a message's visibility failed: %s", exc)

    def release(self) -> None:
        """Visible again at once: another worker takes the rest."""
        try:
            self.client.change_message_visibility(
                QueueUrl=self.url, ReceiptHandle=self.receipt, VisibilityTimeout=0
            )
        except Exception as exc:
            log.warning("releasing a message failed (it returns after its timeout): %s", exc)


class ChunkWorker:
    """One receive loop on one queue for one graph."""

    def __init__(
        self,
        config: GraphConfig,
        client: Any,
        queue: str,
        *,
        visibility_timeout_s: int | None = None,
        exit_when_empty: bool = False,
        wait_s: int = WAIT_S,
    ):
        self.config = config
        self.client = client
        self.url = queue_url(client, queue)
        self.visibility_timeout_s = visibility_timeout_s
        self.exit_when_empty = exit_when_empty
        self.wait_s = int(wait_s)
        self.max_receives = max_receive_count(client, self.url)
        self.stopping = threading.Event()
        self.totals = WorkerTotals()
        self._context: tuple[tuple[int, float], Any] | None = None

    def stop(self, *_: Any) -> None:
        """SIGTERM: finish or release the chunk in hand, then return from ``run``."""
        if not self.stopping.is_set():
            log.info("stopping: the chunk in hand finishes, the rest of its message is released")
        self.stopping.set()

    def run(self) -> WorkerTotals:
        """Poll until stopped (or, with ``exit_when_empty``, until nothing is queued or held)."""
        log.info("worker on %s for graph %s", self.url, self.config.name)
        # a worker that exits when the queue is empty polls briefly, so it notices soon
        wait_s = min(self.wait_s, EMPTY_WAIT_S) if self.exit_when_empty else self.wait_s
        while not self.stopping.is_set():
            if self.exit_when_empty and not any(queue_counts(self.client, self.url).values()):
                log.info("queue empty, nothing in flight: exiting")
                break
            answer = self.client.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=1,
                WaitTimeSeconds=wait_s,
                AttributeNames=["ApproximateReceiveCount"],
            )
            messages = answer.get("Messages") or []
            if not messages:
                continue
            self.handle(messages[0])
        log.info("worker done: %s", self.totals.describe())
        return self.totals

    def _layer_timeout(self, layer: int) -> int:
        if self.visibility_timeout_s is not None:
            return int(self.visibility_timeout_s)
        return int(self.config.layer_settings(layer)["visibility_timeout_s"])

    def _delete(self, receipt: str) -> None:
        self.client.delete_message(QueueUrl=self.url, ReceiptHandle=receipt)

    def handle(self, message: dict[str, Any]) -> None:
        """Run one message's chunks under its run; acknowledge, release or leave it."""
        self.totals.messages += 1
        receipt = message["ReceiptHandle"]
        receives = int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1))
        last_try = self.max_receives is None or receives >= self.max_receives
        try:
            task = decode(message["Body"])
        except MessageError as exc:  # never ours to run: the dead-letter queue keeps it
            log.error("message %s: %s", message.get("MessageId"), exc)
            self.totals.refused += 1
            return
        if task.graph != str(self.config.source):
            log.error(
                "message %s is for graph %s, this worker serves %s: left for its own workers",
                message.get("MessageId"), task.graph, self.config.source,
            )  # fmt: skip
            self.totals.refused += 1
            return
        from meshing_core.run.lifecycle import attached_to_run

        timeout = self._layer_timeout(task.layer)
        self.client.change_message_visibility(
            QueueUrl=self.url, ReceiptHandle=receipt, VisibilityTimeout=timeout
        )
        pending = list(task.chunks)
        context = None
        try:
            with attached_to_run(self.config, task.timestamp):
                context = self._context_for(task)
                hold = _Hold(
                    self.client, self.url, receipt, timeout,
                    on_cap=lambda: self._give_up(context, task, pending, receipt),
                )  # fmt: skip
                with hold:
                    while pending and not hold.capped:
                        if self.stopping.is_set():
                            hold.release()
                            self.totals.released += 1
                            return
                        self._run_one(context, task, pending[0], last_try, receives)
                        pending.pop(0)
                if hold.capped:
                    return
        except Exception as exc:  # refused run, unopenable inputs: this try fails
            log.error("%s (receive %d): %s", task.describe(), receives, _one_line(exc))
            if last_try and context is not None:
                context.records.record_chunks(task.layer, failed={c: exc for c in pending})
            elif last_try:
                self._record_failure(task, pending, exc)
            self.totals.chunks_failed += len(pending)
            return
        self._delete(receipt)

    def _run_one(
        self, context: Any, task: ChunkTask, coords: tuple[int, int, int], last: bool, n: int
    ) -> None:
        from meshing_core.run.chunk import ChunkFailure, run_chunk

        if context.records.is_done(task.layer, coords):
            self.totals.chunks_skipped += 1
            log.info("L%d chunk %s: already done", task.layer, list(coords))
            return
        started = time.monotonic()
        outcome = run_chunk(context, coords, record_failure=last)
        seconds = time.monotonic() - started
        if isinstance(outcome, ChunkFailure):
            log.error(
                "L%d chunk %s failed (receive %d%s) in %.1f s: %s", task.layer, list(coords), n,
                ", last: recorded failed" if last else "", seconds, _one_line(outcome.error),
            )  # fmt: skip
            raise outcome.error
        self.totals.chunks_done += 1
        log.info(
            "L%d chunk %s: %d fragment(s), %d bytes in %.1f s", task.layer, list(coords),
            outcome.fragments, outcome.bytes, seconds,
        )  # fmt: skip

    def _context_for(self, task: ChunkTask) -> Any:
        """The chunk context of the message's layer and timestamp (kept for the next one)."""
        from meshing_core.run.chunk import prepare_context
        from meshing_core.run.records import RecordStore

        key = (task.layer, task.timestamp)
        if self._context is None or self._context[0] != key:
            if self._context is not None:
                self._context[1].graph.close()
            self._context = None
            records = RecordStore(self.config, task.timestamp)
            self._context = (key, prepare_context(self.config, *key, records=records))
        return self._context[1]

    def _record_failure(self, task: ChunkTask, chunks: list, exc: BaseException) -> None:
        from meshing_core.run.records import RecordStore

        try:
            RecordStore(self.config, task.timestamp).record_chunks(
                task.layer, failed={c: exc for c in chunks}
            )
        except Exception as again:  # nothing more a worker can do: the DLQ keeps the message
            log.error("recording the failure of %s failed too: %s", task.describe(), again)

    def _give_up(self, context: Any, task: ChunkTask, pending: list, receipt: str) -> None:
        """SQS would hand the message out again at its 12-hour cap: fail, not loop."""
        error = MessageError(
            f"{task.describe()}: a chunk ran past SQS's 12-hour hold of a message; give the "
            "layer smaller chunks or run it in local or kubernetes mode"
        )
        log.error("%s", error)
        context.records.record_chunks(task.layer, failed={c: error for c in pending})
        self._delete(receipt)


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def work(
    graph: str,
    queue: str,
    *,
    visibility_timeout_s: int | None = None,
    exit_when_empty: bool = False,
    wait_s: int = WAIT_S,
) -> WorkerTotals:
    """One worker process: load the graph, poll until SIGTERM (or empty); totals."""
    from meshing_core.config import load_config
    from meshing_core.queue.sqs import sqs_client

    worker = ChunkWorker(
        load_config(graph),
        sqs_client(),
        queue,
        visibility_timeout_s=visibility_timeout_s,
        exit_when_empty=exit_when_empty,
        wait_s=wait_s,
    )
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, worker.stop)
        signal.signal(signal.SIGINT, worker.stop)
    return worker.run()


def _logged_work(level: int, graph: str, queue: str, **options: Any) -> WorkerTotals:
    """``work`` in a pool process, logging to stderr as the command line does."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
        for chatty in ("botocore", "boto3", "urllib3"):
            logging.getLogger(chatty).setLevel(max(logging.WARNING, level))
    return work(graph, queue, **options)


def run_workers(graph: str, queue: str, *, workers: int = 1, **options: Any) -> WorkerTotals:
    """``workers`` receive loops (processes beside this one when more than one); SIGTERM or
    SIGINT here stops them all the graceful way."""
    if int(workers) <= 1:
        return work(graph, queue, **options)
    from meshing_core.run.spawn import spawn_pool

    totals = WorkerTotals()
    with spawn_pool(int(workers)) as pool:
        children = list(pool._processes.values())

        def forward(signum: int, _: Any) -> None:
            for child in children:  # each loop finishes or releases its chunk, then returns
                if child.is_alive():
                    child.terminate()  # SIGTERM, which ``work`` handles

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        level = logging.getLogger().getEffectiveLevel()
        futures = [
            pool.submit(_logged_work, level, graph, queue, **options) for _ in range(int(workers))
        ]
        for future in futures:
            totals.add(future.result())
    return totals
