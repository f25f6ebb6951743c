"""One meshing DAG per graph config in MESHING_CONFIGS: ``mesh_<graph name>``.

A configs entry is a small YAML file naming a dataset's ``graph.yaml`` (relative to the entry)
and optionally the default run ``mode`` and a ``schedule``::

    graph: ../.demo/graph.yaml   # required
    mode: local                  # local | sqs | kubernetes (default local)
    schedule: null               # any Airflow schedule; default: manual trigger only

Parsing reads YAML only (the entry and the graph.yaml it points at): no graph database, no
Variable, no network. The layer groups come from ``n_layers`` of graph.yaml. A broken entry
becomes a placeholder DAG with the same id whose description and single task carry the error,
so one bad config never hides the others. The DAG id is ``mesh_`` + the ``name`` of graph.yaml;
a placeholder whose graph.yaml cannot be read takes the entry's file stem instead, so name each
entry after its graph. Tasks are thin: they call ``meshing_core``, imported
inside the callables so parsing stays cheap.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from airflow.sdk import DAG, Param, TaskGroup, TriggerRule, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
CONFIGS_ENV = "MESHING_CONFIGS"
DEFAULT_CONFIGS = REPO / "configs"
MODES = ("local", "sqs", "kubernetes")
IMPLEMENTED_MODES = ("local",)
_BAD_ID_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


class EntryError(Exception):
    """A configs entry that cannot become a DAG; the message is one line naming file and field."""


def configs_folder() -> Path:
    """The folder of configs entries: $MESHING_CONFIGS, else the repository's ``configs/``."""
    return Path(os.environ.get(CONFIGS_ENV) or DEFAULT_CONFIGS)


def dag_id_for(name: str) -> str:
    """``mesh_<name>``, with characters Airflow refuses replaced by ``_``."""
    return "mesh_" + _BAD_ID_CHARS.sub("_", name)


def read_entry(entry: Path) -> dict[str, Any]:
    """Read and check one configs entry and the graph.yaml it names (YAML only).

    Returns ``{"config": GraphConfig, "graph_yaml": Path, "mode": str, "schedule": Any}``.
    """
    from meshing_core.config import load_config
    from meshing_core.errors import MeshingError

    try:
        data = yaml.safe_load(entry.read_text())
    except (OSError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EntryError(f"{entry}: not readable YAML ({first})") from exc
    if not isinstance(data, dict):
        raise EntryError(f"{entry}: expected a mapping with field 'graph' (path to graph.yaml)")
    unknown = sorted(set(data) - {"graph", "mode", "schedule", "description"})
    if unknown:
        raise EntryError(
            f"{entry}: unknown field '{unknown[0]}' (known: graph, mode, schedule, description)"
        )
    graph = data.get("graph")
    if not isinstance(graph, str) or not graph.strip():
        raise EntryError(f"{entry}: field 'graph' must name a graph.yaml (relative to this file)")
    mode = data.get("mode", "local")
    if mode not in MODES:
        raise EntryError(f"{entry}: field 'mode' is {mode!r}; known: {', '.join(MODES)}")
    graph_yaml = (entry.parent / graph).resolve()
    try:
        config = load_config(graph_yaml)
    except MeshingError as exc:
        raise EntryError(f"{entry}: field 'graph': {exc}") from exc
    return {
        "config": config,
        "graph_yaml": graph_yaml,
        "mode": mode,
        "schedule": data.get("schedule"),
        "description": data.get("description"),
    }


def _box_param(items: dict[str, Any], title: str) -> Param:
    """An optional chunk corner: null or three integers."""
    return Param(None, type=["null", "array"], items=items, minItems=3, maxItems=3, title=title)


def _params(n_layers: int, mode: str) -> dict[str, Param]:
    """The trigger form; Airflow validates it before a run starts."""
    triple = {"type": "integer", "minimum": 0}
    return {
        "timestamp": Param(
            None,
            type=["null", "string"],
            format="date-time",
            title="Meshing timestamp",
            description="RFC 3339, e.g. 2021-03-01T00:00:00Z; empty = the trigger time. "
            "A rerun at the same timestamp skips finished chunks.",
        ),
        "max_layer": Param(
            n_layers,
            type="integer",
            minimum=2,
            maximum=n_layers,
            title="Highest layer to mesh",
            description="Layers above it are skipped; run metadata records it.",
        ),
        "mode": Param(mode, enum=list(MODES), title="Execution mode"),
        "force": Param(False, type="boolean", title="Re-mesh chunks already done"),
        "break_lease": Param(
            False,
            type="boolean",
            title="Take over a stale lease",
            description="Only when the run holding the mesh dir is dead or silent for longer "
            "than lease_ttl_s; a live run's lease is never broken.",
        ),
        "chunk_start": _box_param(triple, "Sub-box start (layer-2 chunk coordinates x, y, z)"),
        "chunk_end": _box_param(triple, "Sub-box end, exclusive"),
        "batch_size": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Chunks per batch (grown to keep the map under max_map_length)",
        ),
    }


def _load(graph_yaml: str) -> Any:
    from meshing_core.config import load_config

    return load_config(graph_yaml)


def _fail_on_user_error(exc: Exception) -> None:
    """A MeshingError is a user error: fail at once (no retries) with its one line."""
    from meshing_core.errors import MeshingError

    if isinstance(exc, MeshingError):
        raise AirflowFailException(str(exc)) from exc


def _layer_box(layer: int, run_info: dict[str, Any]) -> dict[str, Any]:
    """The run's sub-box in layer ``layer`` chunk coordinates (given in layer-2 chunks)."""
    start, end = run_info.get("chunk_start"), run_info.get("chunk_end")
    if start is None:
        return {}
    scale = 2 ** (layer - 2)
    return {
        "chunk_start": [s // scale for s in start],
        "chunk_end": [-(-e // scale) for e in end],
    }


def build_dag(entry: Path, info: dict[str, Any]) -> DAG:
    """The meshing DAG of one graph: start, setup, layer_2 .. layer_N, mesh_metadata."""
    config = info["config"]
    graph_yaml = str(info["graph_yaml"])
    n_layers = int(config.n_layers)
    dag_id = dag_id_for(config.name)
    description = info.get("description") or f"Mesh {config.name} ({n_layers} layers)"

    with DAG(
        dag_id=dag_id,
        description=str(description),
        schedule=info.get("schedule"),
        max_active_runs=1,
        catchup=False,
        params=_params(n_layers, info["mode"]),
        tags=["meshing", config.name],
        doc_md=__doc__,
    ) as dag:

        @task(task_id="start")
        def start() -> dict[str, Any]:
            """Resolve the run's parameters once; every later task reads this record."""
            from meshing_core.errors import MeshingError
            from meshing_core.timestamps import format_timestamp, now, parse_timestamp

            context = get_current_context()
            params = context["params"]
            raw = params.get("timestamp")
            try:
                if raw in (None, ""):
                    run_after = getattr(context["dag_run"], "run_after", None)
                    ts = round(run_after.timestamp(), 3) if run_after is not None else now()
                else:
                    ts = parse_timestamp(raw)
            except MeshingError as exc:
                raise AirflowFailException(f"param 'timestamp': {exc}") from exc
            max_layer = int(params.get("max_layer") or n_layers)
            if not 2 <= max_layer <= n_layers:
                raise AirflowFailException(
                    f"param 'max_layer' is {max_layer}; this graph has layers 2..{n_layers}"
                )
            mode = params.get("mode") or info["mode"]
            if mode not in MODES:
                raise AirflowFailException(f"param 'mode' is {mode!r}; known: {', '.join(MODES)}")
            start_box, end_box = params.get("chunk_start"), params.get("chunk_end")
            if (start_box is None) != (end_box is None):
                raise AirflowFailException(
                    "params 'chunk_start' and 'chunk_end' go together: give both or neither"
                )
            run_info = {
                "timestamp": ts,
                "timestamp_rfc3339": format_timestamp(ts),
                "max_layer": max_layer,
                "mode": mode,
                "force": bool(params.get("force")),
                "chunk_start": None if start_box is None else [int(v) for v in start_box],
                "chunk_end": None if end_box is None else [int(v) for v in end_box],
                "batch_size": params.get("batch_size"),
            }
            from meshing_core.run.orchestrated import begin_run

            dag_run = context["dag_run"]
            owner = f"airflow {dag_run.dag_id}/{dag_run.run_id}"
            try:
                ticket = begin_run(
                    _load(graph_yaml),
                    ts,
                    max_layer,
                    owner=owner,
                    force=run_info["force"],
                    break_lease=bool(params.get("break_lease")),
                )
            except MeshingError as exc:
                raise AirflowFailException(str(exc)) from exc
            run_info.update(ticket)
            log.info("run of %s: %s", graph_yaml, run_info)
            return run_info

        run_info = start()

        def _setup_part(part: str) -> dict[str, Any]:
            # store.setup offers one idempotent function for all three edits: each task calls
            # it (the first does the writing, the others confirm 'unchanged') and reports its part.
            from meshing_core.run.setup import setup_meshes

            config_now = _load(graph_yaml)
            try:
                result = setup_meshes(config_now)
            except Exception as exc:
                _fail_on_user_error(exc)
                raise
            log.info("%s: %s", part, result.get(part))
            return {"part": part, "result": result.get(part), "mesh_dir": result["mesh_dir"]}

        with TaskGroup("setup") as setup_group:

            @task(task_id="mesh_info")
            def mesh_info() -> dict[str, Any]:
                """The watershed info's ``mesh`` key (and the mesh dir's info)."""
                return _setup_part("watershed_info")

            @task(task_id="sharding")
            def sharding() -> dict[str, Any]:
                """Per-layer shard specs in the mesh dir's info, from node counts."""
                return _setup_part("mesh_info")

            @task(task_id="custom_data")
            def custom_data() -> dict[str, Any]:
                """Static custom data (dir, mip, max_error, verify); run fields come at the end."""
                return _setup_part("custom_data")

            mesh_info() >> sharding() >> custom_data()

        run_info >> setup_group
        previous: Any = setup_group
        summaries = []
        for layer in range(2, n_layers + 1):
            settings = config.layer_settings(layer)
            with TaskGroup(f"layer_{layer}") as group:

                @task(task_id="plan")
                def plan(run_info: dict[str, Any], layer: int = layer) -> list[dict[str, Any]]:
                    """Compact batch descriptors; skipped when above the run's max_layer."""
                    from meshing_core.run.plan import plan_layer

                    if layer > int(run_info["max_layer"]):
                        raise AirflowSkipException(
                            f"layer {layer} is above max_layer {run_info['max_layer']}"
                        )
                    try:
                        descriptors = plan_layer(
                            _load(graph_yaml),
                            layer,
                            batch_size=run_info.get("batch_size"),
                            timestamp=run_info["timestamp"],
                            **_layer_box(layer, run_info),
                        )
                    except Exception as exc:
                        _fail_on_user_error(exc)
                        raise
                    log.info("layer %d: %d batch(es)", layer, len(descriptors))
                    return descriptors

                @task(
                    task_id="batch",
                    retries=int(settings["retries"]),
                    retry_delay=timedelta(seconds=float(settings["retry_delay_s"])),
                    execution_timeout=timedelta(seconds=float(settings["timeout_s"])),
                    pool=str(settings["pool"]),
                    map_index_template="{{ batch_label }}",
                )
                def batch(descriptor: dict[str, Any], run_info: dict[str, Any]) -> dict[str, Any]:
                    """One batch of the layer, run the way the run's mode says."""
                    label = f"batch {descriptor.get('batch')} [{descriptor.get('start')}, "
                    get_current_context()["batch_label"] = label + f"{descriptor.get('stop')})"
                    mode = run_info["mode"]
                    if mode not in IMPLEMENTED_MODES:
                        raise AirflowFailException(
                            f"mode {mode!r} is not implemented yet: trigger with mode=local"
                        )
                    from meshing_core.run.lease import LeaseError
                    from meshing_core.run.orchestrated import holding_lease
                    from meshing_core.run.plan import run_batch

                    config_now = _load(graph_yaml)
                    try:
                        with holding_lease(config_now, run_info):
                            return run_batch(
                                config_now,
                                descriptor,
                                timestamp=float(run_info["timestamp"]),
                                force=bool(run_info["force"]),
                            )
                    except LeaseError as exc:  # another run holds the mesh dir: no retries
                        raise AirflowFailException(str(exc)) from exc

                @task(task_id="summary")
                def summary(
                    results: Any, run_info: dict[str, Any], layer: int = layer
                ) -> dict[str, Any]:
                    """The layer's totals from its records plus this run's batch timings."""
                    from meshing_core.run.orchestrated import layer_finished
                    from meshing_core.run.plan import layer_summary

                    batches = list(results or [])
                    config_now = _load(graph_yaml)
                    totals = layer_summary(config_now, layer, float(run_info["timestamp"]))
                    if totals["chunks_done"] == totals["chunks_total"]:  # not for a sub-box
                        layer_finished(config_now, run_info, layer)
                    totals.update(
                        batches=len(batches),
                        chunks_this_run=sum(int(b.get("chunks", 0)) for b in batches),
                        skipped=sum(int(b.get("skipped", 0)) for b in batches),
                        seconds=round(sum(float(b.get("seconds", 0.0)) for b in batches), 3),
                    )
                    log.info("layer %d summary: %s", layer, totals)
                    return totals

                descriptors = plan(run_info)
                results = batch.partial(run_info=run_info).expand(descriptor=descriptors)
                layer_total = summary(results, run_info)
            previous >> group
            previous = group
            summaries.append(layer_total)

        @task(task_id="mesh_metadata", trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
        def mesh_metadata() -> dict[str, Any]:
            """Custom data max_layer/initial_ts and mesh_metadata.max_meshed_layer."""
            from meshing_core.run.orchestrated import finish_run

            # pulled, not passed: an argument would make this a direct downstream of the setup
            # task `start`, and Airflow requires those to be all_success
            run_info = get_current_context()["ti"].xcom_pull(task_ids="start")
            result = finish_run(_load(graph_yaml), run_info)
            keep = ("complete", "incomplete_layers", "custom_data", "watershed_info", "mesh")
            return {k: v for k, v in result.items() if k in keep}

        @task(task_id="end_run", retries=2, retry_delay=timedelta(seconds=10))
        def end_run(run_info: dict[str, Any]) -> str:
            """Teardown: an unfinished run is marked failed in the journal; the lease is freed."""
            from meshing_core.run.orchestrated import end_run as end

            dag_run = get_current_context()["dag_run"]
            why = (
                f"DAG run {dag_run.run_id} of {dag_run.dag_id} stopped before mesh_metadata: "
                "clear its failed tasks in Airflow, or resume with `python -m meshing_core run "
                f"--graph {graph_yaml} --timestamp {run_info['timestamp_rfc3339']}`"
            )
            return end(_load(graph_yaml), run_info, why=why)

        summaries >> mesh_metadata() >> end_run(run_info).as_teardown(setups=run_info)
    return dag


def placeholder_dag(entry: Path, dag_id: str, error: str) -> DAG:
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
    for entry in entries:  # healthy graphs first: a placeholder never takes a real DAG's id
        try:
            info = read_entry(entry)
            dag_id = dag_id_for(info["config"].name)
            if dag_id in dags:
                raise EntryError(
                    f"{entry}: graph name {info['config'].name!r} gives the dag_id {dag_id} of "
                    "another entry: give each graph its own name in its graph.yaml"
                )
            dags[dag_id] = build_dag(entry, info)
        except Exception as exc:  # any failure must leave the other graphs' DAGs loadable
            message = str(exc) if isinstance(exc, EntryError) else f"{entry}: {exc}"
            log.error("meshing config broken: %s", message)
            broken.append((entry, message))
    for entry, message in broken:
        dag_id = dag_id_for(entry.stem)
        if dag_id in dags:
            dag_id += "__broken"
        dags[dag_id] = placeholder_dag(entry, dag_id, message)
    return dags


for _dag_id, _dag in build_all(configs_folder()).items():
    globals()[_dag_id] = _dag
