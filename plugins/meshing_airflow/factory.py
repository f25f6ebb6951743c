"""The DAG factory: one meshing DAG per configs entry, ``mesh_<graph name>``.

Each DAG is the run lifecycle of ``meshing_core.run.lifecycle`` as tasks::

    start -> setup -> layer_2 (plan -> batch x N -> summary) -> ... -> layer_<top>
          -> mesh_metadata -> end_run (teardown)

``start`` begins the run (lease, journal; a forced run clears its records here, once) and
returns the ticket every later task reads. Batches are mapped ``MeshBatchOperator`` instances
over the plan's descriptors. A broken entry becomes a placeholder DAG with the same id whose
description and single task carry the error, so one bad config never hides the others.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, TaskGroup, TriggerRule, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from meshing_airflow.entries import (
    CONFIGS_ENV,
    RUN_MODES,
    Entry,
    EntryError,
    dag_id_for,
    read_entry,
)
from meshing_airflow.notifications import dag_callbacks, notify_failed_layers
from meshing_airflow.operators import LABEL_TEMPLATE, MeshBatchOperator
from meshing_airflow.outcomes import airflow_outcomes
from meshing_airflow.params import trigger_params

log = logging.getLogger(__name__)

BREAK_HINT = "break_lease=true in the trigger form"


def _load(graph_yaml: str) -> Any:
    from meshing_core.config import load_config

    with airflow_outcomes():
        return load_config(graph_yaml)


def _begin(graph_yaml: str, n_layers: int, default_mode: str) -> dict[str, Any]:
    """The ``start`` task: resolve the trigger form once and begin the run."""
    from meshing_core.errors import MeshingError
    from meshing_core.run.lifecycle import begin_run
    from meshing_core.timestamps import format_timestamp, now, parse_timestamp

    context = get_current_context()
    params = context["params"]
    raw = params.get("timestamp")
    run_after = getattr(context["dag_run"], "run_after", None)
    trigger_time = round(run_after.timestamp(), 3) if run_after is not None else now()
    try:
        ts = None if raw in (None, "") else parse_timestamp(raw)
    except MeshingError as exc:
        raise AirflowFailException(f"param 'timestamp': {exc}") from exc
    max_layer = int(params.get("max_layer") or n_layers)
    if not 2 <= max_layer <= n_layers:
        raise AirflowFailException(
            f"param 'max_layer' is {max_layer}; this graph has layers 2..{n_layers}"
        )
    mode = params.get("mode") or default_mode
    allowed = RUN_MODES[default_mode]
    if mode not in allowed:
        raise AirflowFailException(
            f"param 'mode' is {mode!r}; this DAG (entry mode {default_mode}) runs "
            f"{', '.join(allowed)}: set `mode: {mode}` in its configs entry for {mode} batches"
        )
    dag_run = context["dag_run"]
    with airflow_outcomes("params: "):
        ticket = begin_run(
            _load(graph_yaml),
            owner=f"airflow {dag_run.dag_id}/{dag_run.run_id}",
            timestamp=ts,  # None: resume the last unfinished run, else a new one at trigger_time
            default_timestamp=trigger_time,
            max_layer=max_layer,
            force=bool(params.get("force")),
            break_lease=bool(params.get("break_lease")),
            chunk_start=params.get("chunk_start"),
            chunk_end=params.get("chunk_end"),
            batch_size=params.get("batch_size"),
            break_hint=BREAK_HINT,
        )
    ticket.update(mode=mode, timestamp_rfc3339=format_timestamp(ticket["timestamp"]))
    log.info("run of %s: %s", graph_yaml, ticket)
    return ticket


def _setup(graph_yaml: str, ticket: dict[str, Any]) -> dict[str, Any]:
    """The ``setup`` task: the watershed info's ``mesh`` key, the mesh dir's per-layer sharding
    specs and the static custom data, each reported as written or unchanged.

    One task, not one per edit: every task costs a worker process start in a deployment.
    """
    from meshing_core.run.lifecycle import setup_run

    with airflow_outcomes():
        config = _load(graph_yaml)
        result = setup_run(config, ticket)
        if ticket.get("mode") == "sqs":
            from meshing_airflow.hooks import sqs_client_for
            from meshing_core.queue.sqs import prepare_graph_queue

            client = sqs_client_for(config.sqs["aws_conn_id"])
            result["queue"] = prepare_graph_queue(config, client)
    for part in ("watershed_info", "mesh_info", "custom_data", "queue"):
        log.info("%s: %s", part, result.get(part))
    return result


def build_dag(entry: Entry) -> DAG:
    """The meshing DAG of one graph: start, setup, layer_2 .. layer_N, mesh_metadata, end_run."""
    config = entry.config
    graph_yaml = entry.graph_yaml
    n_layers = int(config.n_layers)
    description = entry.description or f"Mesh {config.name} ({n_layers} layers)"

    with DAG(
        **dag_callbacks(config, graph_yaml),
        dag_id=dag_id_for(config.name),
        description=str(description),
        schedule=entry.schedule,
        max_active_runs=1,
        catchup=False,
        params=trigger_params(n_layers, entry.mode),
        tags=["meshing", config.name],
        doc_md=__doc__,
    ) as dag:

        @task(task_id="start")
        def start() -> dict[str, Any]:
            """Resolve the run's parameters once and begin it; every later task reads this."""
            return _begin(graph_yaml, n_layers, entry.mode)

        ticket = start()

        @task(task_id="setup")
        def setup(ticket: dict[str, Any]) -> dict[str, Any]:
            """The procedure's three hand edits, under the run's lease (idempotent)."""
            return _setup(graph_yaml, ticket)

        setup_done = setup(ticket)

        previous: Any = setup_done
        summaries = []
        for layer in range(2, n_layers + 1):
            settings = config.layer_settings(layer)
            with TaskGroup(f"layer_{layer}") as group:

                @task(task_id="plan")
                def plan(ticket: dict[str, Any], layer: int = layer) -> list[dict[str, Any]]:
                    """Compact batch descriptors; skipped when above the run's max_layer."""
                    from meshing_core.run.lifecycle import plan_batches

                    if layer > int(ticket["max_layer"]):
                        raise AirflowSkipException(
                            f"layer {layer} is above max_layer {ticket['max_layer']}"
                        )
                    with airflow_outcomes():
                        descriptors = plan_batches(_load(graph_yaml), ticket, layer)
                    log.info("layer %d: %d batch(es)", layer, len(descriptors))
                    return descriptors

                @task(task_id="summary")
                def summary(
                    results: Any, ticket: dict[str, Any], layer: int = layer
                ) -> dict[str, Any]:
                    """The layer's totals from its records; the journal marks it done if complete."""
                    from meshing_core.run.lifecycle import finish_layer

                    batches = [results] if isinstance(results, dict) else list(results or [])
                    with airflow_outcomes():
                        totals = finish_layer(_load(graph_yaml), ticket, layer, batches)
                    log.info("layer %d summary: %s", layer, totals)
                    return totals

                descriptors = plan(ticket)
                common = dict(
                    task_id="batch",
                    ticket=ticket,
                    retries=int(settings["retries"]),
                    retry_delay=timedelta(seconds=float(settings["retry_delay_s"])),
                    execution_timeout=timedelta(seconds=float(settings["timeout_s"])),
                    pool=str(settings["pool"]),
                    map_index_template=LABEL_TEMPLATE,
                )
                if entry.mode == "kubernetes":  # pods: another operator, so another shape
                    from meshing_airflow.pods import pod_partial

                    mapped = pod_partial(config, graph_yaml, layer, **common)
                else:
                    mapped = MeshBatchOperator.partial(graph_yaml=graph_yaml, **common)
                batches = mapped.expand(descriptor=descriptors)
                layer_total = summary(batches.output, ticket)
            previous >> group
            previous = group
            summaries.append(layer_total)

        @task(task_id="mesh_metadata", trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
        def mesh_metadata() -> dict[str, Any]:
            """Custom data max_layer/initial_ts and mesh_metadata.max_meshed_layer."""
            from meshing_core.run.lifecycle import finish_run

            # pulled, not passed: an argument would make this a direct downstream of the setup
            # task `start`, and Airflow requires those to be all_success
            ticket = get_current_context()["ti"].xcom_pull(task_ids="start")
            with airflow_outcomes():
                result = finish_run(_load(graph_yaml), ticket)
            keep = ("complete", "incomplete_layers", "custom_data", "watershed_info", "mesh")
            return {k: v for k, v in result.items() if k in keep}

        @task(task_id="end_run", retries=2, retry_delay=timedelta(seconds=10))
        def end_run(ticket: dict[str, Any]) -> str:
            """Teardown: an unfinished run is marked failed in the journal; the lease is freed."""
            from meshing_core.run.lifecycle import end_run as end

            dag_run = get_current_context()["dag_run"]
            why = (
                f"DAG run {dag_run.run_id} of {dag_run.dag_id} stopped before mesh_metadata: "
                "clear its failed tasks in Airflow, or resume with `python -m meshing_core run "
                f"--graph {graph_yaml} --timestamp {ticket['timestamp_rfc3339']}`"
            )
            with airflow_outcomes():
                state = end(_load(graph_yaml), ticket, why=why)
            # a layer's failure, told once per run: this teardown runs once, after every layer
            notify_failed_layers(_load(graph_yaml), get_current_context(), n_layers)
            return state

        summaries >> mesh_metadata() >> end_run(ticket).as_teardown(setups=ticket)
    return dag


def placeholder_dag(dag_id: str, error: str) -> DAG:
    """A DAG that shows the entry's error in its description and fails its only task."""
    line = " ".join(error.split())

    with DAG(
        dag_id=dag_id,
        description=line[:1000],
        schedule=None,
        max_active_runs=1,
        catchup=False,
        tags=["meshing", "broken-config"],
        doc_md=f"**This meshing config is broken.**\n\n{line}",
    ) as dag:

        @task(task_id="config_error")
        def config_error() -> None:
            raise AirflowFailException(line)

        config_error()
    return dag


def build_all(folder: Path) -> dict[str, DAG]:
    """Every entry of ``folder`` as a DAG (or its placeholder), keyed by dag_id."""
    dags: dict[str, DAG] = {}
    if not folder.is_dir():
        log.error("meshing configs folder %s not found: set %s", folder, CONFIGS_ENV)
        return dags
    entries = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    broken: list[tuple[Path, str]] = []
    for path in entries:  # healthy graphs first: a placeholder never takes a real DAG's id
        try:
            entry = read_entry(path)
            dag_id = dag_id_for(entry.config.name)
            if dag_id in dags:
                raise EntryError(
                    f"{path}: graph name {entry.config.name!r} gives the dag_id {dag_id} of "
                    "another entry: give each graph its own name in its graph.yaml"
                )
            dags[dag_id] = build_dag(entry)
        except Exception as exc:  # any failure must leave the other graphs' DAGs loadable
            message = str(exc) if isinstance(exc, EntryError) else f"{path}: {exc}"
            log.error("meshing config broken: %s", message)
            broken.append((path, message))
    for path, message in broken:
        dag_id = dag_id_for(path.stem)
        if dag_id in dags:
            dag_id += "__broken"
        dags[dag_id] = placeholder_dag(dag_id, message)
    return dags
