"""Configs entries: the small YAML files, one per graph, that the DAG factory turns into DAGs.

An entry names a dataset's ``graph.yaml`` (relative to the entry) and optionally the default
run ``mode``, a ``schedule`` and a ``description``::

    graph: ../.demo/graph.yaml   # required
    mode: local                  # local | sqs | kubernetes (default local)
    schedule: null               # any Airflow schedule; default: manual trigger only

Reading an entry reads YAML only (the entry and its graph.yaml): no graph database, Variable or
network, so DAG parsing stays cheap. Every problem is one line naming the file and field.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from meshing_core.config import GraphConfig, load_config
from meshing_core.errors import MeshingError

CONFIGS_ENV = "MESHING_CONFIGS"
DEFAULT_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MODES = ("local", "sqs", "kubernetes")
# modes a run's trigger form may pick, by the entry's mode (the DAG's shape): pods are another
# operator, so a kubernetes DAG runs only kubernetes batches
RUN_MODES = {"local": ("local", "sqs"), "sqs": ("local", "sqs"), "kubernetes": ("kubernetes",)}
FIELDS = ("graph", "mode", "schedule", "description")
_BAD_ID_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


class EntryError(Exception):
    """A configs entry that cannot become a DAG; the message is one line naming file and field."""


@dataclass(frozen=True)
class Entry:
    """A checked configs entry and the graph config it names."""

    path: Path
    config: GraphConfig
    graph_yaml: str
    mode: str
    schedule: Any = None
    description: str | None = None


def configs_folder() -> Path:
    """The folder of configs entries: $MESHING_CONFIGS, else the repository's ``configs/``."""
    return Path(os.environ.get(CONFIGS_ENV) or DEFAULT_CONFIGS)


def dag_id_for(name: str) -> str:
    """``mesh_<name>``, with characters Airflow refuses replaced by ``_``."""
    return "mesh_" + _BAD_ID_CHARS.sub("_", name)


def read_entry(entry: Path) -> Entry:
    """Read and check one configs entry and the graph.yaml it names (YAML only)."""
    try:
        data = yaml.safe_load(entry.read_text())
    except (OSError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EntryError(f"{entry}: not readable YAML ({first})") from exc
    if not isinstance(data, dict):
        raise EntryError(f"{entry}: expected a mapping with field 'graph' (path to graph.yaml)")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise EntryError(f"{entry}: unknown field '{unknown[0]}' (known: {', '.join(FIELDS)})")
    graph = data.get("graph")
    if not isinstance(graph, str) or not graph.strip():
        raise EntryError(f"{entry}: field 'graph' must name a graph.yaml (relative to this file)")
    mode = data.get("mode", "local")
    if mode not in MODES:
        raise EntryError(f"{entry}: field 'mode' is {mode!r}; known: {', '.join(MODES)}")
    graph_yaml = graph if "://" in graph else str((entry.parent / graph).resolve())
    try:
        config = load_config(graph_yaml)
    except MeshingError as exc:
        raise EntryError(f"{entry}: field 'graph': {' '.join(str(exc).split())}") from exc
    description = data.get("description")
    return Entry(entry, config, graph_yaml, mode, data.get("schedule"), description)


def entry_for_dag(dag_id: str, folder: Path | None = None) -> Entry | None:
    """The healthy configs entry whose DAG is ``dag_id`` (None: not a meshing DAG here)."""
    folder = configs_folder() if folder is None else folder
    if not folder.is_dir():
        return None
    for path in sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml")):
        try:
            entry = read_entry(path)
        except EntryError:
            continue
        if dag_id_for(entry.config.name) == dag_id:
            return entry
    return None
