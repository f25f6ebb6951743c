"""The dataset config (`graph.yaml`): where the graph, watershed and meshes live, and how to mesh.

Paths in the file are relative to the file itself or are URLs, so a dataset folder can be moved or
uploaded. Loading resolves them; every problem is reported as one line naming the file and field.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from meshing_core.errors import MeshingError

CONFIG_NAME = "graph.yaml"
DEFAULT_MESH_DIR = "graphene_meshes"
BACKENDS = ("embedded",)
_MESH_DIR = re.compile(r"^[A-Za-z0-9_.-]+$")

# Batch and per-layer resource defaults; later issues (DAG, SQS, Kubernetes) read these.
# A batch is sized by voxels (2^27 ~ tens of seconds of layer-2 meshing per core; a batch task
# costs about a second however small it is); `chunks_per_batch` in graph.yaml overrides it.
DEFAULT_BATCHES: dict[str, Any] = {"voxels_per_batch": 2**27, "max_map_length": 1024}
DEFAULT_LAYER_RESOURCES: dict[str, Any] = {
    "retries": 2,
    "retry_delay_s": 60,
    "timeout_s": 3600,
    "pool": "default_pool",
    "memory": "2Gi",
    "cpu": 1,
    "lease_s": 600,
}


class ConfigError(MeshingError):
    """A graph config that cannot be used; the message names the file and field."""


def is_url(path: str) -> bool:
    return "://" in path


def to_cloudpath(path: str | Path) -> str:
    """A cloud-volume path: URLs unchanged, local paths as absolute ``file://`` URLs."""
    text = str(path)
    if is_url(text):
        return text
    return "file://" + os.path.abspath(text)


def local_path(cloudpath: str) -> Path | None:
    """The local filesystem path of a ``file://`` URL (or plain path), else None."""
    if cloudpath.startswith("file://"):
        return Path(cloudpath[len("file://") :])
    if not is_url(cloudpath):
        return Path(cloudpath)
    return None


@dataclass
class GraphConfig:
    """A loaded ``graph.yaml`` with its paths resolved."""

    source: Path
    name: str
    backend: str
    graph_path: str
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
    raw: dict[str, Any] = field(default_factory=dict)

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


def _require(data: dict[str, Any], key: str, source: Path) -> Any:
    if key not in data or data[key] is None:
        raise ConfigError(f"{source}: missing field '{key}'")
    return data[key]


def _triple(value: Any, key: str, source: Path) -> tuple[int, int, int]:
    try:
        triple = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        triple = ()
    if len(triple) != 3 or any(v <= 0 for v in triple):
        raise ConfigError(f"{source}: field '{key}' must be three positive integers, got {value!r}")
    return triple  # type: ignore[return-value]


def _resolve(path: str, base: Path) -> str:
    if is_url(path):
        return path
    return to_cloudpath(base / path)


def load_config(path: str | Path) -> GraphConfig:
    """Load and validate a graph config; relative paths resolve against its folder."""
    source = Path(path)
    if source.is_dir():
        source = source / CONFIG_NAME
    if not source.exists():
        raise ConfigError(
            f"graph config {source} not found: pass the graph.yaml written by build-graph or example"
        )
    try:
        data = yaml.safe_load(source.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    base = source.parent.resolve()
    graph = _require(data, "graph", source)
    if not isinstance(graph, dict):
        raise ConfigError(f"{source}: field 'graph' must be a mapping with 'backend' and 'path'")
    backend = str(graph.get("backend", "embedded"))
    if backend not in BACKENDS:
        raise ConfigError(
            f"{source}: field 'graph.backend' is {backend!r}; known: {', '.join(BACKENDS)}"
        )
    mesh = data.get("mesh") or {}
    if not isinstance(mesh, dict):
        raise ConfigError(f"{source}: field 'mesh' must be a mapping")
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
    for key in ("batches", "layers"):
        if not isinstance(data.get(key) or {}, dict):
            raise ConfigError(f"{source}: field '{key}' must be a mapping")
    return GraphConfig(
        source=source.resolve(),
        name=str(data.get("name") or base.name),
        backend=backend,
        graph_path=_resolve(str(_require(graph, "path", source)), base),
        watershed=_resolve(str(_require(data, "watershed", source)), base),
        mesh_dir=mesh_dir,
        mip=mip,
        max_error=max_error,
        verify=bool(mesh.get("verify", False)),
        chunk_size=_triple(_require(data, "chunk_size", source), "chunk_size", source),
        n_layers=n_layers,
        spatial_bits=spatial_bits,
        batches={**DEFAULT_BATCHES, **(data.get("batches") or {})},
        layers=dict(data.get("layers") or {}),
        raw=data,
    )


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
