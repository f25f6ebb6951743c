"""Notifications of a meshing DAG run: run failure, a layer's failure, run success.

``graph.yaml``'s ``notifications.<event>`` lists channels: ``type: email`` (the SMTP provider's
``SmtpNotifier`` through an Airflow SMTP connection) or ``type: webhook`` (the HTTP provider's
``HttpNotifier`` posting JSON through an Airflow HTTP connection). Each event fires once per run:
run failure and success are the DAG's own callbacks (Airflow calls them once when the run ends);
a layer's failure is told by the run's ``end_run`` teardown, which runs once after every layer,
for each layer with a failed batch (however many batches failed or retried). The message names the graph,
the run, the layer(s), the failed batches and chunk ids, and links to the run; the failed chunks
come from the records, as ``status`` reads them, and the failed batches from Airflow's states.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

log = logging.getLogger(__name__)

MAX_CHUNKS_LISTED = 50
EVENT_TITLES = {
    "run_failure": "meshing run failed",
    "layer_failure": "meshing layer failed",
    "run_success": "meshing run succeeded",
}


def _run_link(dag_id: str, run_id: str) -> str:
    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="") or ""
    return f"{base.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def _meshing_run(config: Any, dag_id: str, run_id: str) -> Any:
    """The journal entry of this DAG run (its owner names it), else the last run."""
    from meshing_core.run.records import RunJournal

    runs = RunJournal(config).runs()
    owner = f"airflow {dag_id}/{run_id}"
    mine = [r for r in runs if r.owner == owner or owner in (r.owners or [])]
    return (mine or runs or [None])[-1]


def failed_chunks(
    config: Any, entry: Any, params: dict[str, Any], layers: list[int] | None = None
) -> dict[int, dict[str, Any]]:
    """Per layer with failures: the failed chunk ids and the planned batches holding them."""
    from meshing_core.run.lifecycle import plan_batches
    from meshing_core.run.records import RecordStore, chunk_index

    store = RecordStore(config, entry.timestamp)
    ticket = {
        "timestamp": entry.timestamp,
        "max_layer": entry.max_layer,
        "batch_size": params.get("batch_size"),
        "chunk_start": params.get("chunk_start"),
        "chunk_end": params.get("chunk_end"),
    }
    out: dict[int, dict[str, Any]] = {}
    for layer in layers or range(2, int(entry.max_layer) + 1):
        failures = store.failures(layer)
        if not failures:
            continue
        try:
            plan = plan_batches(config, ticket, layer)
        except Exception:  # the message must still go out: batches are a convenience
            plan = []
        batches = set()
        for coords in failures:
            index = chunk_index(store.meta, layer, coords)
            batches.update(d["batch"] for d in plan if d["start"] <= index < d["stop"])
        chunks = sorted(failures)
        out[layer] = {
            "chunks": [list(c) for c in chunks[:MAX_CHUNKS_LISTED]],
            "chunks_failed": len(chunks),
            "batches": sorted(batches),
            "errors": {"_".join(map(str, c)): failures[c]["error"] for c in chunks[:5]},
        }
    return out


def compose(
    event: str,
    config: Any,
    context: dict[str, Any],
    layer: int | None = None,
    batches: list[int] | None = None,
) -> dict:
    """The message of one event: a subject, a plain-text body and the JSON a webhook posts."""
    dag_run = context.get("dag_run")
    dag_id = getattr(dag_run, "dag_id", None) or context["dag"].dag_id
    run_id = getattr(dag_run, "run_id", None) or context.get("run_id")
    params = dict(context.get("params") or {})
    link = _run_link(dag_id, run_id)
    entry = _meshing_run(config, dag_id, run_id)
    failed = {}
    if entry is not None and event != "run_success":
        failed = failed_chunks(config, entry, params, [layer] if layer is not None else None)
    if layer is not None and batches:  # Airflow's own word on which batches failed
        failed.setdefault(layer, {"chunks": [], "chunks_failed": 0, "errors": {}})
        failed[layer]["batches"] = sorted(batches)
    where = f"layer {layer} of " if layer is not None else ""
    subject = f"[{config.name}] {EVENT_TITLES[event]}: {where}run {run_id}"
    lines = [
        f"{EVENT_TITLES[event]}: graph {config.name}, DAG {dag_id}, run {run_id}",
        f"meshing time: {entry.timestamp if entry else 'unknown'}; run state in the mesh dir: "
        f"{entry.state if entry else 'unknown'}",
    ]
    if context.get("reason"):
        lines.append(f"reason: {context['reason']}")
    for number, info in sorted(failed.items()):
        batches = ", ".join(str(b) for b in info["batches"]) or "unknown"
        chunks = " ".join("[" + ", ".join(map(str, c)) + "]" for c in info["chunks"])
        more = info["chunks_failed"] - len(info["chunks"])
        lines.append(
            f"layer {number}: {info['chunks_failed']} failed chunk(s) in batch(es) {batches}: "
            f"{chunks}{f' and {more} more' if more > 0 else ''}"
        )
        for key, error in info["errors"].items():
            lines.append(f"  chunk {key}: {error}")
    lines.append(f"run: {link}")
    payload = {
        "event": event,
        "graph": config.name,
        "dag_id": dag_id,
        "run_id": run_id,
        "layer": layer,
        "timestamp": entry.timestamp if entry else None,
        "failed": {str(k): v for k, v in failed.items()},
        "link": link,
        "text": "\n".join(lines),
    }
    return {"subject": subject, "text": "\n".join(lines), "payload": payload}


def _send(channel: dict[str, Any], message: dict[str, Any], context: dict[str, Any]) -> None:
    """One message on one channel: a fresh notifier each time (Airflow renders them in place)."""
    if channel["type"] == "email":
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        notifier = SmtpNotifier(
            to=channel["to"],
            from_email=channel.get("from_email"),
            subject=message["subject"],
            html_content="<pre>" + html.escape(message["text"], quote=False) + "</pre>",
            smtp_conn_id=channel["conn_id"],
        )
    else:
        from airflow.providers.http.notifications.http import HttpNotifier

        notifier = HttpNotifier(
            http_conn_id=channel["conn_id"],
            endpoint=channel.get("endpoint") or "",
            json=message["payload"],
            headers={"Content-Type": "application/json"},
        )
    notifier.notify(context)  # not __call__: the text is final, nothing to template


def notify(
    event: str,
    config: Any,
    context: dict[str, Any],
    layer: int | None = None,
    batches: list[int] | None = None,
) -> int:
    """Send ``event`` on each of its channels; returns how many went out (failures logged)."""
    channels = config.notifications.get(event) or []
    if not channels:
        return 0
    message = compose(event, config, context, layer, batches)
    sent = 0
    for channel in channels:
        try:
            _send(channel, message, context)
            sent += 1
        except Exception:  # one broken channel must not silence the others
            log.exception("meshing notification %s on %s failed", event, channel.get("type"))
    log.info("meshing notification %s: %d of %d channel(s)", event, sent, len(channels))
    return sent


def callback(event: str, graph_yaml: str) -> Callable[[dict], None]:
    """A DAG callback sending ``event`` (the config is read when it fires)."""

    def send(context: dict[str, Any]) -> None:
        from meshing_core.config import load_config

        notify(event, load_config(graph_yaml), context)

    send.__name__ = f"notify_{event}"
    return send


def failed_batches(states: dict[str, Any], n_layers: int) -> dict[int, list[int]]:
    """Failed map indexes per layer from Airflow's task states (``layer_<n>.batch_<i>`` keys)."""
    out: dict[int, list[int]] = {}
    for layer in range(2, int(n_layers) + 1):
        head = f"layer_{layer}.batch_"
        for key, state in states.items():
            if key.startswith(head) and str(getattr(state, "value", state)) == "failed":
                out.setdefault(layer, []).append(int(key[len(head) :]))
    return {layer: sorted(batches) for layer, batches in out.items()}


def notify_failed_layers(config: Any, context: dict[str, Any], n_layers: int) -> int:
    """``layer_failure`` for each layer of this run with a failed batch (from the teardown)."""
    if not config.notifications.get("layer_failure"):
        return 0
    try:
        dag_run = context["dag_run"]
        states = context["ti"].get_task_states(
            dag_id=dag_run.dag_id,
            task_ids=[f"layer_{n}.batch" for n in range(2, int(n_layers) + 1)],
            run_ids=[dag_run.run_id],
        )
        failed = failed_batches(states.get(dag_run.run_id, {}), n_layers)
    except Exception:  # telling is best effort: the run's own outcome stands
        log.exception("could not read the batch states for layer notifications")
        return 0
    return sum(
        notify("layer_failure", config, context, layer, batches)
        for layer, batches in sorted(failed.items())
    )


def dag_callbacks(config: Any, graph_yaml: str) -> dict[str, Any]:
    """The DAG's run failure / success callbacks, only for events that have channels."""
    out: dict[str, Any] = {}
    if config.notifications.get("run_failure"):
        out["on_failure_callback"] = callback("run_failure", graph_yaml)
    if config.notifications.get("run_success"):
        out["on_success_callback"] = callback("run_success", graph_yaml)
    return out
