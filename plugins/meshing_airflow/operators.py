"""The batch operator: one mapped task instance per planned batch of a layer.

A class-based operator (a TaskFlow ``@task`` cannot defer). ``local`` mode runs the batch in
the task's process on the local pool, under the run's lease (``lifecycle.run_batch``). ``sqs``
mode sends the batch's chunks not yet done to the graph's queue (``lifecycle.enqueue_batch``),
then defers on ``BatchRecordsTrigger``, which renews the run's lease while SQS workers mesh,
and finishes in ``execute_complete``. ``kubernetes`` batches are pods (``pods.py``). The grid's label comes from the mapped descriptor
(``map_index_template``), so it renders the same before, during and after a deferral.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from meshing_airflow.outcomes import airflow_outcomes

# ``meshing_core.run.plan.batch_label`` as a template (tests check they agree); pass it as
# ``map_index_template`` to ``partial()``: a mapped operator takes it from there
LABEL_TEMPLATE = (
    "L{{ task.descriptor['layer'] }} b{{ task.descriptor['batch'] }} chunks "
    "{{ task.descriptor['start'] }}-{{ task.descriptor['stop'] - 1 }}"
)
MAX_NAMED_CHUNKS = 20


class MeshBatchOperator(BaseOperator):
    """Mesh (or stitch) one batch of a layer at the run's timestamp."""

    template_fields = ("descriptor", "ticket")
    ui_color = "#d8ecf3"

    def __init__(
        self,
        *,
        graph_yaml: str,
        descriptor: dict[str, Any],
        ticket: dict[str, Any],
        workers: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.graph_yaml = str(graph_yaml)
        self.descriptor = descriptor
        self.ticket = ticket
        self.workers = workers

    def execute(self, context: Any) -> dict[str, Any]:
        mode = str(self.ticket.get("mode", "local"))
        if mode not in ("local", "sqs"):
            raise AirflowFailException(
                f"mode {mode!r} runs batches as pods, a DAG of another shape: set `mode: "
                f"{mode}` in the graph's configs entry, or trigger this DAG with local or sqs"
            )
        from meshing_core.config import load_config
        from meshing_core.run.lifecycle import run_batch
        from meshing_core.run.plan import batch_label

        with airflow_outcomes(f"{batch_label(self.descriptor)}: "):
            config = load_config(self.graph_yaml)
            if mode == "sqs":
                return self._send_and_defer(config)
            return run_batch(config, self.ticket, self.descriptor, workers=self.workers)

    def _send_and_defer(self, config: Any) -> dict[str, Any]:
        """``sqs`` mode: send the chunks not done, then wait on their records, holding no slot."""
        from meshing_airflow.hooks import sqs_client_for
        from meshing_airflow.triggers import BatchRecordsTrigger
        from meshing_core.run.lifecycle import collect_batch, enqueue_batch
        from meshing_core.run.plan import parse_descriptor

        layer = parse_descriptor(self.descriptor)[0]
        settings = config.sqs
        sent = enqueue_batch(
            config,
            self.ticket,
            self.descriptor,
            client=sqs_client_for(settings["aws_conn_id"]),
        )
        self.log.info(
            "%d chunk(s) sent in %d message(s) to %s (%d already done)",
            sent["chunks"], sent["messages"], sent["queue_url"], sent["already_done"],
        )  # fmt: skip
        if sent["chunks"] == 0:
            return collect_batch(config, self.ticket, self.descriptor)
        poll_s = float(settings["poll_s"])
        self.defer(
            trigger=BatchRecordsTrigger(
                self.graph_yaml,
                self.descriptor,
                float(self.ticket["timestamp"]),
                poll_s=poll_s,
                failed_since=float(sent["sent_at"]),
                lease_token=str(self.ticket["token"]),
                queue_url=sent["queue_url"],
                aws_conn_id=settings["aws_conn_id"],
                lost_after_s=float(config.layer_settings(layer)["visibility_timeout_s"]) + poll_s,
            ),
            method_name="execute_complete",
            timeout=self.execution_timeout,
        )
        raise AssertionError("unreachable: defer raises")

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after ``BatchRecordsTrigger`` fired: roll the batch's records up, then
        succeed, or fail naming the chunks."""
        from meshing_core.config import load_config
        from meshing_core.run.lifecycle import collect_batch

        label = event.get("label", "batch")
        with airflow_outcomes(f"{label}: "):
            summary = collect_batch(load_config(self.graph_yaml), self.ticket, self.descriptor)
        if event.get("status") == "done" and not summary["failed"]:
            return summary
        failed = event.get("failed", [])
        pending = event.get("pending", [])
        named = _named(failed)
        status = event.get("status")
        if status == "error":
            raise AirflowException(f"{label}: {event.get('error')}")
        if status == "timeout":
            raise AirflowException(
                f"{label}: {len(pending)} chunk(s) still pending after the timeout"
                + (f"; failed: {named}" if failed else "")
            )
        if status == "lost":
            from meshing_core.queue.sqs import dead_letter_name

            queue = str(event.get("queue_url") or self.ticket.get("queue_url") or "the queue")
            raise AirflowException(
                f"{label}: {len(pending)} chunk(s) lost: {_named(pending)}: no record and "
                "nothing visible or in flight in the queue for longer than the visibility "
                "timeout (a worker died on its last allowed receive); their messages are in "
                f"the dead-letter queue {dead_letter_name(queue)}: clear this task to send "
                "them again" + (f"; failed: {named}" if failed else "")
            )
        raise AirflowException(f"{label}: {len(failed)} chunk(s) failed: {named}")


def _named(chunks: list[Any]) -> str:
    """The first chunks of a list, then how many more: a failure line stays readable."""
    text = ", ".join(str(c) for c in chunks[:MAX_NAMED_CHUNKS])
    extra = len(chunks) - MAX_NAMED_CHUNKS
    return text + (f" and {extra} more" if extra > 0 else "")
