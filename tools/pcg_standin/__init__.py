"""Helpers for running code against the PyChunkedGraph stand-in (tests and the bench).

``STANDIN_ROOT`` holds a fake top-level ``pychunkedgraph`` package that answers PyChunkedGraph's
read API from "tables": folders ``<tables_dir>/<graph_id>/`` with a copy of an embedded graph
file (``graph.sqlite``) and the graph's meta (``meta.json``). Put ``STANDIN_ROOT`` first on the
import path (``standin_environment`` for subprocesses, ``activate`` in-process), point
``PCG_STANDIN_TABLES`` at the tables, and optionally ``PCG_STANDIN_CALLS`` at a file that then
receives one line per storage call (``read_calls`` tallies it).
"""

from __future__ import annotations

import collections
import json
import os
import sqlite3
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STANDIN_ROOT: Path = Path(__file__).resolve().parent

TABLES_ENV = "PCG_STANDIN_TABLES"
CALLS_ENV = "PCG_STANDIN_CALLS"
GRAPH_FILE = "graph.sqlite"
META_FILE = "meta.json"
CREDENTIALS_FILE = "standin-credentials.json"

_PACKAGE = "pychunkedgraph"
_saved: list[tuple[dict[str, str | None], bool]] = []  # one entry per activate()


def standin_environment(tables_dir: Path, calls_file: Path | None = None) -> dict[str, str]:
    """The environment variables a subprocess needs to import and use the stand-in."""
    tables_dir = Path(tables_dir)
    tables_dir.mkdir(parents=True, exist_ok=True)
    credentials = tables_dir / CREDENTIALS_FILE
    if not credentials.exists():
        credentials.write_text(json.dumps({"type": "standin"}), encoding="utf-8")
    existing = os.environ.get("PYTHONPATH")
    env = {
        "PYTHONPATH": os.pathsep.join([str(STANDIN_ROOT), *([existing] if existing else [])]),
        TABLES_ENV: str(tables_dir),
        "BIGTABLE_PROJECT": "standin-project",
        "BIGTABLE_INSTANCE": "standin-instance",
        "GOOGLE_APPLICATION_CREDENTIALS": str(credentials),
    }
    if calls_file is not None:
        env[CALLS_ENV] = str(calls_file)
    return env


def _drop_package_modules() -> None:
    for name in [n for n in sys.modules if n == _PACKAGE or n.startswith(_PACKAGE + ".")]:
        del sys.modules[name]


def activate(tables_dir: Path, calls_file: Path | None = None) -> dict[str, str]:
    """Use the stand-in in this process: its environment and ``STANDIN_ROOT`` first on sys.path.

    Undo with ``deactivate()`` (activations nest).
    """
    env = standin_environment(tables_dir, calls_file)
    previous = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    sys.path.insert(0, str(STANDIN_ROOT))
    _drop_package_modules()  # a previously imported pychunkedgraph must not shadow ours
    _saved.append((previous, True))
    return env


def deactivate() -> None:
    """Undo the latest ``activate()``: environment, sys.path and imported ``pychunkedgraph*``."""
    if not _saved:
        return
    previous, added = _saved.pop()
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if added and str(STANDIN_ROOT) in sys.path:
        sys.path.remove(str(STANDIN_ROOT))
    _drop_package_modules()


def _write_atomically(target: Path, text: str) -> None:
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, target)
    finally:
        if temporary.exists():
            temporary.unlink()


def _copy_graph(source: Path, target: Path) -> None:
    """Copy a SQLite file consistently (also a WAL-mode one), as a rollback-journal database."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    src = sqlite3.connect(f"{Path(source).resolve().as_uri()}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(str(temporary))
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
            dst.commit()
        finally:
            dst.close()
        os.replace(temporary, target)
    finally:
        src.close()
        if temporary.exists():
            temporary.unlink()


def create_table(
    tables_dir: Path,
    graph_id: str,
    graph_file: Path,
    *,
    watershed: str,
    chunk_size: Sequence[int],
    spatial_bits: int = 10,
    custom_data: dict[str, Any] | None = None,
) -> Path:
    """Make the stand-in table ``<tables_dir>/<graph_id>/`` from an embedded graph file."""
    graph_file = Path(graph_file)
    if not graph_file.is_file():
        raise FileNotFoundError(f"graph file {graph_file} not found")
    table = Path(tables_dir) / graph_id
    table.mkdir(parents=True, exist_ok=True)
    _copy_graph(graph_file, table / GRAPH_FILE)
    meta = {
        "graph_config": {
            "ID": graph_id,
            "ID_PREFIX": "",
            "CHUNK_SIZE": [int(c) for c in chunk_size],
            "FANOUT": 2,
            "LAYER_ID_BITS": 8,
            "SPATIAL_BITS": int(spatial_bits),
        },
        "data_source": {
            "EDGES": None,
            "COMPONENTS": None,
            "WATERSHED": watershed,
            "DATA_VERSION": None,
            "CV_MIP": 0,
        },
        "custom_data": dict(custom_data or {}),
    }
    _write_atomically(table / META_FILE, json.dumps(meta, indent=2, sort_keys=True))
    return table


def read_calls(calls_file: Path) -> collections.Counter[str]:
    """Storage calls recorded in ``calls_file``: method name -> count (empty if no file)."""
    path = Path(calls_file)
    if not path.exists():
        return collections.Counter()
    lines = path.read_text(encoding="utf-8").splitlines()
    return collections.Counter(line.strip() for line in lines if line.strip())
