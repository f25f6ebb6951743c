"""Embedded graphs on object storage (``s3://``, ``gs://``): a local cache keyed by content.

SQLite needs a local file, so the graph object is fetched once into the cache
(``$MESHING_CACHE``, else the user cache dir), named by a hash of its ETag and size: a second
open of unchanged content downloads nothing, and a changed object gets a new name, so a process
never reads a file that another one is replacing. Cached copies are opened read-only. Custom-data
writes build the updated file beside the cache, upload it whole (one PUT: a reader sees the old
or the new graph, never half of one) and cache it under its new key.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import platformdirs

from meshing_core.graph.embedded import EmbeddedGraph, GraphFileError
from meshing_core.store import files
from meshing_core.store.paths import split_name

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where fetched graph files live: ``$MESHING_CACHE`` or the user cache dir."""
    root = os.environ.get("MESHING_CACHE") or platformdirs.user_cache_dir("meshing_core")
    folder = Path(root) / "graphs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _key(url: str) -> str | None:
    """A name for the object's current content (ETag and size), or None if it does not exist."""
    folder, name = split_name(url)
    try:
        head = files.head(folder, name)
    except Exception as exc:  # the store's own errors: no access, no endpoint
        raise GraphFileError(f"graph file {url} cannot be read: {exc}") from None
    if head is None:
        return None
    etag = str(head.get("ETag") or head.get("Content-Md5") or "").strip('"')
    size = head.get("Content-Length")
    if not etag or size is None:
        return None
    return hashlib.sha256(f"{etag}:{size}".encode()).hexdigest()[:32]


def _single_file(path: Path) -> None:
    """Switch ``path`` out of WAL mode: one self-contained file, readable with ``mode=ro``."""
    with contextlib.closing(sqlite3.connect(str(path))) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")


def _temp(folder: Path) -> Path:
    return folder / f".{uuid.uuid4().hex}.tmp"


def fetch(url: str) -> Path:
    """The local cached copy of the graph object ``url``, downloaded only when it changed."""
    key = _key(url)
    folder = cache_dir()
    if key is not None and (folder / f"{key}.sqlite").exists():
        log.debug("graph %s: cached as %s", url, key)
        return folder / f"{key}.sqlite"
    data = files.read_file(*split_name(url))
    if data is None:
        raise GraphFileError(
            f"graph file {url} not found: build the dataset with `python -m meshing_core "
            "build-graph --out` at that place"
        )
    key = key or hashlib.sha256(data).hexdigest()[:32]
    tmp = _temp(folder)
    try:
        tmp.write_bytes(data)
        _single_file(tmp)
        os.replace(tmp, folder / f"{key}.sqlite")
        log.info("graph %s: fetched %d bytes into the cache", url, len(data))
        return folder / f"{key}.sqlite"
    finally:
        tmp.unlink(missing_ok=True)


class RemoteGraph(EmbeddedGraph):
    """An embedded graph whose file lives on object storage (read from the local cache)."""

    def __init__(self, url: str, watershed: str | None = None):
        self.url = url
        super().__init__(fetch(url), watershed=watershed, read_only=True)

    def set_custom_data(self, data: dict[str, Any]) -> None:
        """Write custom data back to the bucket atomically, then read the new copy."""
        folder = cache_dir()
        tmp = _temp(folder)
        try:
            shutil.copyfile(self.path, tmp)
            writer = EmbeddedGraph(tmp)
            try:
                writer.set_custom_data(data)
            finally:
                writer.close()
            _single_file(tmp)
            files.write_atomic(*split_name(self.url), tmp.read_bytes())
            target = folder / f"{_key(self.url) or uuid.uuid4().hex}.sqlite"
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        self.conn.close()
        self.path = target
        self.conn = sqlite3.connect(f"{target.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
        log.info("graph %s: custom data written", self.url)


def open_remote(config: Any) -> RemoteGraph:
    """Open the graph of a config whose ``graph_path`` is an object URL."""
    return RemoteGraph(config.graph_path, watershed=config.watershed)
