"""The "Layer progress" tab of a meshing run: a FastAPI app the Airflow API server mounts.

``GET /meshing/runs/<dag_id>/<run_id>`` is the tab's page (the UI shows it in an iframe on the
run's page); it fetches ``.../data`` every few seconds while the run is active. The data is
``meshing_core.run.status.status`` of the run's meshing timestamp (the numbers ``python -m
meshing_core status`` prints, from the same code) plus Airflow's own state of the run: its
ticket (the ``start`` task's XCom), each layer's plan (which mapped batch holds a chunk, for a
link to its log) and batch task states, and in ``sqs`` mode the queue's depth. No second
bookkeeping store. Every endpoint depends on the API server's own security (a user with read
access to the DAG's runs); Airflow does not protect a plugin's app by itself.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow.api_fastapi.common.db.common import SessionDep
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse

log = logging.getLogger(__name__)

URL_PREFIX = "/meshing"
VIEW_NAME = "Layer progress"
VIEW_ROUTE = "layer-progress"
ACTIVE_STATES = ("queued", "running")
PAGE = Path(__file__).with_name("progress_page.html")


def _read_access() -> Any:
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.RUN))


def _xcom(session: Any, dag_id: str, run_id: str, task_id: str) -> Any:
    from airflow.models.xcom import XCOM_RETURN_KEY, XComModel

    row = session.scalar(
        XComModel.get_many(
            run_id=run_id,
            dag_ids=dag_id,
            task_ids=task_id,
            key=XCOM_RETURN_KEY,
            map_indexes=-1,
            limit=1,
        )
    )
    return None if row is None else XComModel.deserialize_value(row)


def _batch_of(descriptors: list[dict[str, Any]] | None, index: int) -> int | None:
    """The map index of the planned batch whose index range holds a layer chunk index."""
    for position, d in enumerate(descriptors or []):
        if int(d["start"]) <= index < int(d["stop"]):
            return int(d.get("batch", position))
    return None


def _queue(config: Any) -> dict[str, Any]:
    """Queue depth, in flight and dead letters of the graph's SQS queue, or why not."""
    from meshing_airflow.hooks import sqs_client_for
    from meshing_core.queue.sqs import dead_letter_name, queue_counts, queue_url

    try:
        client = sqs_client_for(config.sqs["aws_conn_id"])
        url = queue_url(client, config.queue)
        counts = queue_counts(client, url)
        dead = queue_counts(client, queue_url(client, dead_letter_name(url)))
        return {"queue": config.queue, **counts, "dead_letter_visible": dead["visible"]}
    except Exception as exc:  # the view still shows the records when SQS is unreachable
        return {"queue": config.queue, "error": " ".join(str(exc).split())[:300]}


def run_view(dag_id: str, run_id: str, session: Any) -> dict[str, Any]:
    """Everything the tab shows about one run (plain JSON)."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    from meshing_airflow.entries import entry_for_dag
    from meshing_core.graph import open_graph
    from meshing_core.run import records
    from meshing_core.run.status import status

    run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
    if run is None:
        raise HTTPException(status_code=404, detail=f"no run {run_id!r} of DAG {dag_id!r}")
    state = str(getattr(run.state, "value", run.state))
    out: dict[str, Any] = {"dag_id": dag_id, "run_id": run_id, "state": state,
                           "active": state in ACTIVE_STATES}  # fmt: skip
    entry = entry_for_dag(dag_id)
    if entry is None:
        return {**out, "message": f"{dag_id} is not a meshing DAG of this deployment"}
    ticket = _xcom(session, dag_id, run_id, "start")
    if not isinstance(ticket, dict) or "timestamp" not in ticket:
        return {**out, "message": "the run has not begun meshing yet (its start task has not run)"}
    graph = open_graph(entry.config)  # once: for status and for the failed chunks' indices
    try:
        report = status(entry.config, float(ticket["timestamp"]), grid=True, graph=graph)
        meta = graph.meta
    finally:
        graph.close()
    tis = session.execute(
        select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state).where(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id
        )
    ).all()
    run_path = f"dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
    for layer in report["layers"]:
        number = layer["layer"]
        batch_task = f"layer_{number}.batch"
        states: dict[str, int] = {}
        for task_id, map_index, ti_state in tis:
            if task_id == batch_task and map_index is not None and map_index >= 0:
                key = str(getattr(ti_state, "value", ti_state) or "none")
                states[key] = states.get(key, 0) + 1
        layer["batch_states"] = states
        plan = _xcom(session, dag_id, run_id, f"layer_{number}.plan")
        for failure in layer["failures"]:
            index = records.chunk_index(meta, number, failure["chunk"])
            batch = _batch_of(plan if isinstance(plan, list) else None, index)
            failure["batch"] = batch
            failure["log"] = (
                None if batch is None else f"{run_path}/tasks/{batch_task}/mapped/{batch}"
            )
    out.update(
        graph=report["graph"],
        timestamp=report["timestamp"],
        timestamp_text=report["timestamp_text"],
        mode=ticket.get("mode", "local"),
        max_layer=ticket.get("max_layer"),
        journal=report["run"],
        lease=report["lease"],
        layers=report["layers"],
        run_path=run_path,
    )
    if out["mode"] == "sqs":
        out["sqs"] = _queue(entry.config)
    return out


def create_app() -> FastAPI:
    """The plugin's app (mounted at ``URL_PREFIX`` by the API server)."""
    app = FastAPI(title="Meshing progress", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/runs/{dag_id}/{run_id}", response_class=HTMLResponse, dependencies=[_read_access()])
    def page(dag_id: str, run_id: str) -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/runs/{dag_id}/{run_id}/data", dependencies=[_read_access()])
    def data(dag_id: str, run_id: str, session: SessionDep) -> dict[str, Any]:
        from meshing_core.errors import MeshingError

        try:
            return run_view(dag_id, run_id, session)
        except MeshingError as exc:  # e.g. unreadable records: the message names the fix
            raise HTTPException(status_code=409, detail=" ".join(str(exc).split())) from None

    return app


def external_view() -> dict[str, Any]:
    """The tab on every DAG run's page (Airflow fills in ``{DAG_ID}`` and ``{RUN_ID}``)."""
    return {
        "name": VIEW_NAME,
        "href": f"{URL_PREFIX.strip('/')}/runs/{{DAG_ID}}/{{RUN_ID}}",
        "destination": "dag_run",
        "url_route": VIEW_ROUTE,
    }
