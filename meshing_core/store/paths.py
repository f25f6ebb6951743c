"""Where a dataset lives: local paths, ``file://``, ``s3://`` and ``gs://`` URLs.

Every location a user gives (``--out``, ``--graph``) passes ``dataset_location`` first, so a URL
this code cannot handle is refused in one line instead of being taken as a local folder name
(``s3:/x`` would otherwise become a folder called ``s3:``).
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path

from meshing_core.errors import MeshingError

OBJECT_SCHEMES = ("s3", "gs")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,221}[a-z0-9]$")


class StoragePathError(MeshingError):
    """A dataset location this code cannot read or write."""


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


def is_object_url(path: str) -> bool:
    """True for ``s3://`` and ``gs://`` locations (checked ones: see ``dataset_location``)."""
    return path.split("://", 1)[0] in OBJECT_SCHEMES and is_url(path)


def dataset_location(text: str | Path, what: str = "path") -> str:
    """``text`` as ``file:///abs`` or ``s3://bucket/key`` / ``gs://bucket/key`` (no trailing /).

    Refuses other schemes, a scheme missing its ``//`` and a URL without a bucket, naming
    ``what`` (e.g. ``--out``) and the accepted forms.
    """
    if isinstance(text, Path):
        return to_cloudpath(text)
    raw = str(text).strip()
    accepted = "give a local path, file://PATH, s3://BUCKET/PATH or gs://BUCKET/PATH"
    match = _SCHEME.match(raw)
    if match is None:
        if not raw:
            raise StoragePathError(f"{what} is empty: {accepted}")
        return to_cloudpath(raw)
    scheme = match.group(1).lower()
    if scheme not in ("file", *OBJECT_SCHEMES):
        raise StoragePathError(f"{what} {raw!r}: scheme {scheme}:// is not supported: {accepted}")
    if not raw[len(scheme) + 1 :].startswith("//"):
        raise StoragePathError(f"{what} {raw!r} is not a URL ({scheme}: needs '//'): {accepted}")
    rest = raw[len(scheme) + 3 :]
    if scheme == "file":
        if not rest:
            raise StoragePathError(f"{what} {raw!r} names no folder: {accepted}")
        return to_cloudpath(rest)
    bucket, _, key = rest.partition("/")
    if not _BUCKET.match(bucket):
        raise StoragePathError(f"{what} {raw!r} names no valid bucket: {accepted}")
    key = posixpath.normpath(key).strip("/") if key.strip("/") else ""
    if key.startswith(".."):
        raise StoragePathError(f"{what} {raw!r} leaves its bucket: {accepted}")
    return f"{scheme}://{bucket}/{key}" if key else f"{scheme}://{bucket}"


def split_name(location: str) -> tuple[str, str]:
    """``(folder, last part)`` of a checked location, e.g. ``("s3://b/ds", "graph.yaml")``."""
    folder, _, name = location.rstrip("/").rpartition("/")
    return folder, name


def resolve(path: str, base: str) -> str:
    """``path`` (from a config) against the folder ``base``; URLs are kept as they are."""
    if is_url(path):
        return path
    if is_object_url(base):
        scheme, rest = base.split("://", 1)
        bucket, _, key = rest.partition("/")
        joined = posixpath.normpath(posixpath.join("/" + key, path)).lstrip("/")
        return f"{scheme}://{bucket}/{joined}" if joined else f"{scheme}://{bucket}"
    folder = local_path(base)
    assert folder is not None
    return to_cloudpath(folder / path)
