"""The dataset config (`graph.yaml`): where the graph, watershed and meshes live, and how to mesh.

Paths in the file are relative to the file itself or are URLs, so a dataset folder can be moved or
uploaded. Loading resolves them; every problem is reported as one line naming the file and field.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from meshing_core.errors import MeshingError
from meshing_core.store import paths
from meshing_core.store.paths import to_cloudpath

__all__ = [
    "CONFIG_NAME",
    "ConfigError",
    "GraphConfig",
    "load_config",
    "positive_int",
    "write_config",
]

log = logging.getLogger(__name__)

CONFIG_NAME = "graph.yaml"
DEFAULT_MESH_DIR = "graphene_meshes"
BACKENDS = ("embedded", "pychunkedgraph")
_MESH_DIR = re.compile(r"^[A-Za-z0-9_.-]+$")
#: ``--graph pychunkedgraph:NAME`` (what ``--cg_name NAME`` stands for): no file, the graph's
#: own meta and custom data make the config.
PCG_SOURCE_PREFIX = "pychunkedgraph:"
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")


class ConfigError(MeshingError):
    """A graph config that cannot be used; the message names the file and field."""


# -- the settings: one home for each default and its check --------------------------------------
# A check returns the value to use or raises ValueError with the fix ("give ...").
Check = Callable[[Any], Any]


def _whole(minimum: int, maximum: int | None = None) -> Check:
    top = f" and <= {maximum}" if maximum is not None else ""

    def check(value: Any) -> int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok or value < minimum or (maximum is not None and value > maximum):
            raise ValueError(f"give a whole number >= {minimum}{top}")
        return int(value)

    return check


def _seconds(minimum_exclusive: bool) -> Check:
    bound = "> 0" if minimum_exclusive else ">= 0"

    def check(value: Any) -> float | int:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and value == value
        if not ok or value < 0 or (minimum_exclusive and value == 0):
            raise ValueError(f"give a number of seconds {bound}")
        return value

    return check


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("give a non-empty name")
    return value


def _quantity(value: Any) -> str | int | float:
    """A Kubernetes quantity: a number, or text like ``500m``, ``2Gi``."""
    if isinstance(value, bool) or not (
        (isinstance(value, int | float) and value > 0)
        or (isinstance(value, str) and _QUANTITY.match(value) and float(_digits(value)) > 0)
    ):
        raise ValueError("give a positive Kubernetes quantity, e.g. 1, 500m or 2Gi")
    return value


def _digits(text: str) -> str:
    return re.match(r"^[0-9.]+", text).group(0)  # type: ignore[union-attr]


@dataclass(frozen=True)
class Setting:
    default: Any  # None: no default (the setting is derived when absent)
    check: Check


# A batch is sized by voxels (2^27 ~ tens of seconds of layer-2 meshing per core; a batch task
# costs about a second however small it is); ``chunks_per_batch`` overrides it.
BATCH_SETTINGS: dict[str, Setting] = {
    "chunks_per_batch": Setting(None, _whole(1)),
    "voxels_per_batch": Setting(2**27, _whole(1)),
    "max_map_length": Setting(1024, _whole(1)),
    "lease_ttl_s": Setting(900, _seconds(True)),  # mesh-dir lease without heartbeat: stale
}
# Per-layer resources of a batch task (Airflow retries/timeout/pool, pod memory/cpu, SQS).
LAYER_SETTINGS: dict[str, Setting] = {
    "retries": Setting(2, _whole(0)),
    "retry_delay_s": Setting(60, _seconds(False)),
    "timeout_s": Setting(3600, _seconds(True)),
    "pool": Setting("default_pool", _name),
    "memory": Setting("2Gi", _quantity),
    "cpu": Setting(1, _quantity),
    "visibility_timeout_s": Setting(600, _whole(1, 43200)),  # SQS allows at most 12 h
    "memory_limit": Setting(None, _quantity),  # a pod's limits; memory defaults to its request
    "cpu_limit": Setting(None, _quantity),
}
RENAMED_LAYER_SETTINGS = {"lease_s": "visibility_timeout_s"}
DEFAULT_BATCHES: dict[str, Any] = {
    k: s.default for k, s in BATCH_SETTINGS.items() if s.default is not None
}
DEFAULT_LAYER_RESOURCES: dict[str, Any] = {k: s.default for k, s in LAYER_SETTINGS.items()}


def _optional_name(value: Any) -> str | None:
    return None if value is None else _name(value)


def _names(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(v, str) and v.strip() for v in value.values()
    ):
        raise ValueError("give a mapping of names, e.g. {google: google-secret}")
    return {str(k): str(v) for k, v in value.items()}


def _gke(value: Any) -> dict[str, str] | None:
    keys = ("project_id", "location", "cluster_name")
    if value is None:
        return None
    if not isinstance(value, dict) or sorted(value) != sorted(keys):
        raise ValueError(f"give a mapping with exactly {', '.join(keys)}")
    return {k: _name(value[k]) for k in keys}


# ``sqs`` mode: the queue the batches send to (created with its dead-letter queue by the DAG's
# setup task when absent), and the Airflow AWS connection the DAG's tasks and triggers use.
SQS_SETTINGS: dict[str, Setting] = {
    "queue": Setting(None, _optional_name),  # default: meshing-<graph name>
    "max_receive_count": Setting(5, _whole(1, 1000)),  # receives before the dead-letter queue
    "aws_conn_id": Setting("aws_default", _name),
    "chunks_per_message": Setting(8, _whole(1, 1000)),
    "poll_s": Setting(30, _seconds(True)),  # how often a deferred batch looks at its records
}
# ``kubernetes`` mode (and the ``sqs`` worker Deployment): one pod per batch in the worker
# image, secrets mounted as volumes; ``gke`` switches to GKEStartPodOperator.
KUBERNETES_SETTINGS: dict[str, Setting] = {
    "image": Setting("meshing-core:latest", _name),
    "namespace": Setting("default", _name),
    "secrets": Setting({}, _names),  # kind (google, aws, cave) -> Kubernetes secret name
    "service_account": Setting(None, _optional_name),
    "kubernetes_conn_id": Setting(None, _optional_name),  # None: in-cluster or ~/.kube/config
    "image_pull_policy": Setting("IfNotPresent", _name),
    "startup_timeout_s": Setting(600, _whole(1)),
    "gke": Setting(None, _gke),
}


def _addresses(value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if (
        not isinstance(items, list)
        or not items
        or not all(isinstance(a, str) and "@" in a for a in items)
    ):
        raise ValueError("give an e-mail address or a list of them")
    return list(items)


# Who hears about a run: per event a list of channels. A channel is an e-mail (Airflow's SMTP
# provider, through an Airflow connection) or a webhook (an HTTP POST of JSON through an Airflow
# HTTP connection); credentials live in those connections, never here.
NOTIFY_EVENTS = ("run_failure", "layer_failure", "run_success")
CHANNEL_SETTINGS: dict[str, dict[str, Setting]] = {
    "email": {
        "to": Setting(None, _addresses),
        "conn_id": Setting("smtp_default", _name),
        "from_email": Setting(None, _optional_name),
    },
    "webhook": {
        "conn_id": Setting("http_default", _name),
        "endpoint": Setting("", lambda v: "" if v is None else str(v)),
    },
}


def _notifications(data: dict[str, Any], source: Any) -> dict[str, list[dict[str, Any]]]:
    """``notifications.<event>``: lists of channels, each checked (type, fields, defaults)."""
    given = _mapping(data, "notifications", source)
    _known(given, NOTIFY_EVENTS, "notifications", source)
    out: dict[str, list[dict[str, Any]]] = {event: [] for event in NOTIFY_EVENTS}
    for event, channels in given.items():
        if channels is None:
            continue
        if not isinstance(channels, list):
            raise ConfigError(f"{source}: notifications.{event} must be a list of channels")
        for position, channel in enumerate(channels):
            where = f"notifications.{event}[{position}]"
            kind = channel.get("type") if isinstance(channel, dict) else None
            if kind not in CHANNEL_SETTINGS:
                raise ConfigError(
                    f"{source}: {where} needs type: email or type: webhook (got {kind!r})"
                )
            settings = CHANNEL_SETTINGS[kind]
            fields = {k: v for k, v in channel.items() if k != "type"}
            checked = {
                **{k: setting.default for k, setting in settings.items()},
                **_checked(fields, settings, where, source),
            }
            if kind == "email" and not checked["to"]:
                raise ConfigError(f"{source}: {where} is an e-mail with no 'to' address")
            out[event].append({"type": kind, **checked})
    return out


DEFAULT_SQS: dict[str, Any] = {k: s.default for k, s in SQS_SETTINGS.items()}
DEFAULT_KUBERNETES: dict[str, Any] = {k: s.default for k, s in KUBERNETES_SETTINGS.items()}

_TOP_KEYS = (
    "name",
    "graph",
    "watershed",
    "mesh",
    "chunk_size",
    "n_layers",
    "spatial_bits",
    "batches",
    "layers",
    "lease_ttl_s",  # older place of batches.lease_ttl_s
    "sqs",
    "kubernetes",
    "notifications",
)
_GRAPH_KEYS = ("backend", "path", "graph_id")
_MESH_KEYS = ("dir", "mip", "max_error", "verify", "max_triangles")


@dataclass
class GraphConfig:
    """A loaded ``graph.yaml`` with its paths resolved and its settings checked.

    ``source`` is the file's path, or its URL when the dataset lives on object storage.
    ``batches`` holds every batch setting (defaults filled in) and ``layers`` the checked
    per-layer overrides, so readers never need a default of their own.
    """

    source: Path | str
    name: str
    backend: str
    graph_path: str  # the embedded file; for PyChunkedGraph "pychunkedgraph:<graph id>"
    watershed: str
    mesh_dir: str
    mip: int
    max_error: float
    verify: bool
    chunk_size: tuple[int, int, int]
    n_layers: int
    spatial_bits: int
    batches: dict[str, Any] = field(default_factory=dict)
    layers: dict[str, Any] = field(default_factory=dict)
    sqs: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_SQS))
    kubernetes: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_KUBERNETES))
    raw: dict[str, Any] = field(default_factory=dict)
    graph_id: str | None = None
    notifications: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {event: [] for event in NOTIFY_EVENTS}
    )  # the PyChunkedGraph graph (BigTable table) of that backend

    @property
    def queue(self) -> str:
        """The SQS queue (name or URL) of ``sqs`` mode: ``sqs.queue``, else meshing-<name>."""
        return str(self.sqs.get("queue") or "meshing-" + re.sub(r"[^A-Za-z0-9_-]", "-", self.name))

    @property
    def mesh_cloudpath(self) -> str:
        """Where the meshes live: ``<watershed>/<mesh dir>``."""
        return self.watershed.rstrip("/") + "/" + self.mesh_dir

    def layer_settings(self, layer: int) -> dict[str, Any]:
        """Resources of one layer: defaults, then ``layers.default``, then ``layers.<n>``."""
        merged = dict(DEFAULT_LAYER_RESOURCES)
        merged.update(self.layers.get("default", {}) or {})
        merged.update(self.layers.get(str(layer), self.layers.get(layer, {})) or {})
        return merged


def _require(data: dict[str, Any], key: str, source: Any) -> Any:
    if key not in data or data[key] is None:
        raise ConfigError(f"{source}: missing field '{key}'")
    return data[key]


def _triple(value: Any, key: str, source: Any) -> tuple[int, int, int]:
    try:
        triple = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        triple = ()
    if len(triple) != 3 or any(v <= 0 for v in triple):
        raise ConfigError(f"{source}: field '{key}' must be three positive integers, got {value!r}")
    return triple  # type: ignore[return-value]


def _known(data: dict[str, Any], known: tuple[str, ...], where: str, source: Any) -> None:
    """Refuse a key this code does not read: a typo would otherwise be ignored silently."""
    for key in data:
        if key not in known:
            name = f"{where}.{key}" if where else str(key)
            raise ConfigError(f"{source}: unknown key {name!r} (known: {', '.join(known)})")


def _mapping(data: dict[str, Any], key: str, source: Any) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: field '{key}' must be a mapping")
    return value


def _checked(
    values: dict[str, Any], settings: dict[str, Setting], where: str, source: Any
) -> dict[str, Any]:
    _known(values, tuple(settings), where, source)
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None and settings[key].default is None:
            out[key] = None  # an optional setting left unset
            continue
        try:
            out[key] = settings[key].check(value)
        except ValueError as exc:
            raise ConfigError(f"{source}: {where}.{key} is {value!r}: {exc}") from None
    return out


def _batches(data: dict[str, Any], source: Any) -> dict[str, Any]:
    given = dict(_mapping(data, "batches", source))
    if "lease_ttl_s" in data:  # the older top-level place wins, as it always did
        given["lease_ttl_s"] = data["lease_ttl_s"]
    return {**DEFAULT_BATCHES, **_checked(given, BATCH_SETTINGS, "batches", source)}


def _layers(data: dict[str, Any], source: Any, renamed: list[str]) -> dict[str, Any]:
    """``layers.default`` and ``layers.<n>`` (n >= 2), checked; ``lease_s`` renamed.

    Renames are collected in ``renamed`` and logged only once the whole file is valid, so a
    refused file gives its one error line and nothing else.
    """
    layers = _mapping(data, "layers", source)
    out: dict[str, Any] = {}
    for key, values in layers.items():
        # any layer >= 2 is accepted, so one layers block can serve graphs of several heights
        if str(key) != "default" and not (str(key).isdigit() and int(str(key)) >= 2):
            raise ConfigError(
                f"{source}: unknown key 'layers.{key}' (known: default, or a layer number >= 2)"
            )
        where = f"layers.{key}"
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: field '{where}' must be a mapping of settings")
        values = dict(values)
        for old, new in RENAMED_LAYER_SETTINGS.items():
            if old in values:
                renamed.append(f"{where}.{old} is now {new}: rename it in {CONFIG_NAME}")
                if new in values:
                    raise ConfigError(f"{source}: {where} has both {old} and {new}: keep {new}")
                values[new] = values.pop(old)
        out[str(key)] = _checked(values, LAYER_SETTINGS, where, source)
    return out


def _graph_location(
    graph: dict[str, Any], backend: str, base: str, source: Any
) -> tuple[str | None, str]:
    """``(graph_id, graph_path)``: the embedded file's path, or the PyChunkedGraph graph id."""
    if backend == "pychunkedgraph":
        if "path" in graph:
            raise ConfigError(
                f"{source}: graph.path is for the embedded backend; a pychunkedgraph graph is "
                "named by graph.graph_id (its BigTable table, --cg_name in the procedure)"
            )
        graph_id = graph.get("graph_id")
        if not isinstance(graph_id, str) or not graph_id.strip():
            raise ConfigError(
                f"{source}: missing field 'graph.graph_id': name the PyChunkedGraph graph "
                "(its BigTable table, --cg_name in the procedure)"
            )
        return graph_id, f"{PCG_SOURCE_PREFIX}{graph_id}"
    if "graph_id" in graph:
        raise ConfigError(
            f"{source}: graph.graph_id is for backend 'pychunkedgraph'; an embedded graph is "
            "named by graph.path"
        )
    return None, paths.resolve(str(_require(graph, "path", source)), base)


def _read_source(path: str | Path) -> tuple[Path | str, str, str]:
    """``(source, folder, text)`` of a graph.yaml given as a path, a folder or a URL."""
    location = paths.dataset_location(path, "graph config")
    folder = paths.local_path(location)
    if folder is not None:
        source = Path(folder)
        if source.is_dir():
            source = source / CONFIG_NAME
        if not source.exists():
            raise ConfigError(
                f"graph config {source} not found: pass the graph.yaml written by build-graph "
                "or example"
            )
        source = source.resolve()
        return source, to_cloudpath(source.parent), source.read_text()
    from meshing_core.store import files

    if not location.endswith((".yaml", ".yml")):
        location = f"{location}/{CONFIG_NAME}"
    base, name = paths.split_name(location)
    try:  # head first: quick on a missing bucket, where a get is retried for half a minute
        data = files.read_file(base, name) if files.head(base, name) is not None else None
    except Exception as exc:  # the store's own errors: no bucket, no access, no endpoint
        raise ConfigError(f"graph config {location} cannot be read: {_one_line(exc)}") from None
    if data is None:
        raise ConfigError(
            f"graph config {location} not found: pass the graph.yaml written by build-graph "
            "or example"
        )
    return location, base, data.decode("utf-8")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def load_config(path: str | Path) -> GraphConfig:
    """Load and check a graph config; relative paths resolve against its folder.

    ``path`` is a graph.yaml or its folder: local, ``file://``, ``s3://`` or ``gs://``. Every
    key is known and every setting checked here, before any work starts.
    """
    if str(path).startswith(PCG_SOURCE_PREFIX):
        return pychunkedgraph_config(str(path)[len(PCG_SOURCE_PREFIX) :])
    source, base, text = _read_source(path)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    return _parse(data, source, base)


def _parse(data: Any, source: Path | str, base: str) -> GraphConfig:
    """Check a config's content (a graph.yaml's, or one made from a PyChunkedGraph graph)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    _known(data, _TOP_KEYS, "", source)
    graph = _require(data, "graph", source)
    if not isinstance(graph, dict):
        raise ConfigError(f"{source}: field 'graph' must be a mapping with 'backend' and 'path'")
    _known(graph, _GRAPH_KEYS, "graph", source)
    backend = str(graph.get("backend", "embedded"))
    if backend not in BACKENDS:
        raise ConfigError(
            f"{source}: field 'graph.backend' is {backend!r}; known: {', '.join(BACKENDS)}"
        )
    graph_id, graph_path = _graph_location(graph, backend, base, source)
    mesh = _mapping(data, "mesh", source)
    _known(mesh, _MESH_KEYS, "mesh", source)
    try:
        mip = int(mesh.get("mip", 0))
        max_error = float(_require(mesh, "max_error", source))
        n_layers = int(_require(data, "n_layers", source))
        spatial_bits = int(data.get("spatial_bits", 10))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    if mip < 0:
        raise ConfigError(f"{source}: field 'mesh.mip' must be >= 0, got {mip}")
    if max_error <= 0:
        raise ConfigError(f"{source}: field 'mesh.max_error' must be > 0 nm, got {max_error}")
    if n_layers < 2:
        raise ConfigError(f"{source}: field 'n_layers' must be >= 2, got {n_layers}")
    mesh_dir = str(mesh.get("dir", DEFAULT_MESH_DIR))
    if not _MESH_DIR.match(mesh_dir) or mesh_dir in (".", ".."):
        raise ConfigError(
            f"{source}: field 'mesh.dir' is {mesh_dir!r}; it must be one folder name inside the "
            f"watershed layer (letters, digits, '_', '-', '.'), e.g. {DEFAULT_MESH_DIR}"
        )
    batches = _batches(data, source)
    renamed: list[str] = []
    layers = _layers(data, source, renamed)
    config = GraphConfig(
        source=source,
        name=str(data.get("name") or paths.split_name(base)[1]),
        backend=backend,
        graph_path=graph_path,
        graph_id=graph_id,
        watershed=paths.resolve(str(_require(data, "watershed", source)), base),
        mesh_dir=mesh_dir,
        mip=mip,
        max_error=max_error,
        verify=bool(mesh.get("verify", False)),
        chunk_size=_triple(_require(data, "chunk_size", source), "chunk_size", source),
        n_layers=n_layers,
        spatial_bits=spatial_bits,
        batches=batches,
        layers=layers,
        sqs={**DEFAULT_SQS, **_checked(_mapping(data, "sqs", source), SQS_SETTINGS, "sqs", source)},
        kubernetes={
            **DEFAULT_KUBERNETES,
            **_checked(
                _mapping(data, "kubernetes", source), KUBERNETES_SETTINGS, "kubernetes", source
            ),
        },
        raw=data,
        notifications=_notifications(data, source),
    )
    for message in renamed:
        log.warning("%s", message)
    return config


def pychunkedgraph_config(graph_id: str, mip: int | None = None) -> GraphConfig:
    """The config of a PyChunkedGraph graph named on the command line (``--cg_name``).

    Nothing is written: the watershed, chunk size and layers come from the graph's meta; the
    mesh settings from its custom data ``mesh`` block (written by setup), else from the
    watershed info's ``mesh`` dir, ``mip`` (``--mip``, default 0) and the procedure's default
    error (the largest dimension of the mesh mip's resolution). A block that names a mip wins
    over ``mip`` (commands then refuse a differing ``--mip``), so every process that gets the
    source ``pychunkedgraph:NAME`` (an SQS worker, a pool worker) rebuilds the same config. The
    result goes through the same checks as a graph.yaml.
    """
    from meshing_core.graph.pcg import describe_graph

    facts = describe_graph(graph_id)
    source = f"{PCG_SOURCE_PREFIX}{graph_id}"
    stored = dict(facts["custom_mesh"])
    ws_info: dict[str, Any] = {}
    if not all(stored.get(key) is not None for key in ("dir", "mip", "max_error")):
        from meshing_core.store import files

        ws_info = files.read_json(facts["watershed"], "info") or {}
    mesh_mip = stored.get("mip", mip if mip is not None else 0)
    max_error = stored.get("max_error")
    if max_error is None:
        scales = ws_info.get("scales") or []
        if not isinstance(mesh_mip, int) or not 0 <= mesh_mip < len(scales):
            raise ConfigError(
                f"{source}: mip {mesh_mip} is not a scale of watershed {facts['watershed']} "
                f"(it has {len(scales)}): downsample the watershed first or pass another --mip"
            )
        max_error = float(max(scales[mesh_mip]["resolution"]))
    data = {
        "name": graph_id,
        "graph": {"backend": "pychunkedgraph", "graph_id": graph_id},
        "watershed": facts["watershed"],
        "mesh": {
            "dir": stored.get("dir") or ws_info.get("mesh") or DEFAULT_MESH_DIR,
            "mip": mesh_mip,
            "max_error": max_error,
            "verify": bool(stored.get("verify", False)),
        },
        "chunk_size": list(facts["chunk_size"]),
        "n_layers": int(facts["n_layers"]),
        "spatial_bits": int(facts["spatial_bits"]),
    }
    return _parse(data, source, "")


def write_config(
    out_dir: Path,
    *,
    name: str,
    graph_file: str,
    watershed: str,
    mesh_dir: str,
    mip: int,
    max_error: float,
    chunk_size: tuple[int, int, int],
    n_layers: int,
    spatial_bits: int,
) -> Path:
    """Write ``graph.yaml`` into ``out_dir`` with paths relative to it."""
    data = {
        "name": name,
        "graph": {"backend": "embedded", "path": graph_file},
        "watershed": watershed,
        "mesh": {"dir": mesh_dir, "mip": int(mip), "max_error": float(max_error), "verify": False},
        "chunk_size": [int(c) for c in chunk_size],
        "n_layers": int(n_layers),
        "spatial_bits": int(spatial_bits),
        "batches": dict(DEFAULT_BATCHES),
        "layers": {"default": dict(DEFAULT_LAYER_RESOURCES)},
    }
    target = out_dir / CONFIG_NAME
    tmp = target.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, target)
    return target


def positive_int(
    value: Any, name: str, source: Any, error: type[MeshingError] = ConfigError
) -> int:
    """``value`` as a whole number >= 1, else ``error`` naming the setting and where to fix it."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if isinstance(value, bool) or number < 1 or str(number) != str(value).strip():
        raise error(f"{source}: {name} is {value!r}: give a whole number >= 1 (or remove it)")
    return number
