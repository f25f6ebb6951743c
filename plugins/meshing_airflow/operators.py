"""The batch operator: one mapped task instance per planned batch of a layer.

A class-based operator (a TaskFlow ``@task`` cannot defer). ``local`` mode runs the batch in
the task's process on the local pool, under the run's lease (``lifecycle.run_batch``). Modes
whose chunks run elsewhere defer on ``BatchRecordsTrigger`` and finish in ``execute_complete``;
they are added by the distributed modes. The grid's label comes from the mapped descriptor
(``map_index_template``), so it renders the same before, during and after a deferral.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from meshing_airflow.entries import IMPLEMENTED_MODES
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
        if mode not in IMPLEMENTED_MODES:
            raise AirflowFailException(
                f"mode {mode!r} is not implemented yet: trigger with mode=local"
            )
        from meshing_core.config import load_config
        from meshing_core.run.lifecycle import run_batch
        from meshing_core.run.plan import batch_label

        with airflow_outcomes(f"{batch_label(self.descriptor)}: "):
            return run_batch(
                load_config(self.graph_yaml), self.ticket, self.descriptor, workers=self.workers
            )

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
        named = ", ".join(str(c) for c in failed[:MAX_NAMED_CHUNKS])
        more = (
            f" and {len(failed) - MAX_NAMED_CHUNKS} more" if len(failed) > MAX_NAMED_CHUNKS else ""
        )
        if event.get("status") == "timeout":
            raise AirflowException(
                f"{label}: {event.get('pending')} chunk(s) still pending after the timeout"
                + (f"; failed: {named}{more}" if failed else "")
            )
        raise AirflowException(f"{label}: {len(failed)} chunk(s) failed: {named}{more}")
