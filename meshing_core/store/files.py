"""Files on cloud paths (``file://``, ``gs://``, ``s3://``, ``mem://``) through cloud-files.

Writes are atomic: a reader sees a whole file or none. On ``file://`` that needs a temporary
name in the same folder and ``os.replace``; object stores make a single PUT atomic already.
Temporary names start with ``.`` and contain ``.tmp-``; listings skip them, so a crash mid-write
leaves no file that looks finished.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from cloudfiles import CloudFiles

from meshing_core.store.paths import local_path
from meshing_core.store.sharding import RangeSource

log = logging.getLogger(__name__)

_TMP_MARK = ".tmp-"
_CONTENT_TYPE = "application/octet-stream"


def _local_dir(cloudpath: str) -> Path | None:
    return local_path(cloudpath.rstrip("/")) if cloudpath else None


def _cloudfiles(cloudpath: str) -> CloudFiles:
    path = local_path(cloudpath)
    if path is not None:
        return CloudFiles("file://" + str(path.resolve()), progress=False)
    return CloudFiles(cloudpath, progress=False)


def _is_temporary(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.startswith(".") and _TMP_MARK in base


def _temp_path(target: Path) -> Path:
    return target.with_name(f".{target.name}{_TMP_MARK}{uuid.uuid4().hex}")


def write_atomic(
    cloudpath: str, name: str, data: bytes, *, content_type: str = _CONTENT_TYPE
) -> None:
    """Write ``<cloudpath>/<name>`` so that it appears whole or not at all."""
    with atomic_writer(cloudpath, name, content_type=content_type) as fh:
        fh.write(data)


@contextlib.contextmanager
def atomic_writer(
    cloudpath: str, name: str, *, content_type: str = _CONTENT_TYPE
) -> Iterator[BinaryIO]:
    """A seekable binary file that becomes ``<cloudpath>/<name>`` when the block succeeds.

    On failure nothing is published and the temporary file is removed. Used to stream large
    shards without holding them in memory.
    """
    base = _local_dir(cloudpath)
    if base is not None:
        target = base / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_path(target)
        try:
            with open(tmp, "wb") as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return
    with tempfile.TemporaryFile() as fh:
        yield fh
        fh.seek(0)
        _cloudfiles(cloudpath).put(
            name, fh.read(), content_type=content_type, compress=None, cache_control="no-cache"
        )


def read_file(cloudpath: str, name: str) -> bytes | None:
    """Whole content of ``<cloudpath>/<name>``, or None if it does not exist."""
    base = _local_dir(cloudpath)
    if base is not None:
        try:
            return (base / name).read_bytes()
        except FileNotFoundError:
            return None
    return _cloudfiles(cloudpath).get(name)


def read_json(cloudpath: str, name: str) -> Any:
    """Parsed JSON of ``<cloudpath>/<name>`` (compressed or not), or None if it does not exist.

    Raises ``ValueError`` when the file is not JSON.
    """
    data = _cloudfiles(cloudpath).get(name)
    if data is None:
        return None
    return json.loads(data.decode("utf-8"))


def read_many(cloudpath: str, names: list[str]) -> dict[str, bytes | None]:
    """Raw content of many files (None where missing): plain reads on a local path (no
    client per file), parallel gets on object storage."""
    if not names:
        return {}
    base = _local_dir(cloudpath)
    if base is not None:
        top = str(base) + os.sep
        out: dict[str, bytes | None] = {}
        for name in names:
            try:
                with open(top + name, "rb") as handle:
                    out[name] = handle.read()
            except FileNotFoundError:
                out[name] = None
        return out
    found: dict[str, bytes | None] = {}
    for item in _cloudfiles(cloudpath).get(list(names)):
        data = item.get("content")
        if item.get("error") is not None and data is None:
            raise OSError(f"cannot read {cloudpath}/{item['path']}: {item['error']}")
        found[item["path"]] = data
    return {name: found.get(name) for name in names}


def read_json_many(cloudpath: str, names: list[str]) -> dict[str, Any]:
    """``read_json`` of many small files: in parallel on object storage (one round trip each
    would dominate a roll-up of thousands of chunk records). Missing files map to None."""
    if not names:
        return {}
    if _local_dir(cloudpath) is not None:
        raw = read_many(cloudpath, names)
        return {name: None if data is None else orjson.loads(data) for name, data in raw.items()}
    out: dict[str, Any] = {}
    for item in _cloudfiles(cloudpath).get(list(names)):
        data = item.get("content")
        if item.get("error") is not None and data is None:
            raise OSError(f"cannot read {cloudpath}/{item['path']}: {item['error']}")
        out[item["path"]] = None if data is None else json.loads(data.decode("utf-8"))
    return out


def delete_files(cloudpath: str, names: list[str]) -> None:
    """Delete many files (cloud-files' bulk deletes on object storage); missing: no error."""
    base = _local_dir(cloudpath)
    if base is not None:
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                (base / name).unlink()
    elif names:
        _cloudfiles(cloudpath).delete(list(names))


def write_json(cloudpath: str, name: str, value: Any) -> None:
    """Atomically write ``value`` as JSON, formatted the way cloud-volume writes info files."""
    text = json.dumps(value, indent=2, sort_keys=True)
    write_atomic(cloudpath, name, text.encode("utf-8"), content_type="application/json")


def range_source(cloudpath: str, name: str) -> RangeSource:
    """Byte-range reads of ``<cloudpath>/<name>`` (None when it does not exist)."""
    base = _local_dir(cloudpath)
    if base is not None:
        path = base / name

        def read_local(start: int, stop: int) -> bytes | None:
            try:
                with open(path, "rb") as fh:
                    fh.seek(start)
                    return fh.read(stop - start)
            except FileNotFoundError:
                return None

        return read_local
    files = _cloudfiles(cloudpath)

    def read_remote(start: int, stop: int) -> bytes | None:
        if stop <= start:
            return b"" if files.exists(name) else None
        (result,) = files.get([{"path": name, "start": start, "end": stop}], raw=True)
        if result["error"] is not None:
            raise result["error"]
        return result["content"]

    return read_remote


def exists(cloudpath: str, name: str) -> bool:
    base = _local_dir(cloudpath)
    if base is not None:
        return (base / name).is_file()
    return bool(_cloudfiles(cloudpath).exists(name))


def head(cloudpath: str, name: str) -> dict[str, Any] | None:
    """Metadata (``ETag``, ``Content-Length``) of an object, or None if it does not exist.

    Cheap and quick even for a missing bucket (no retries), so it goes before any ``get``.
    """
    if _local_dir(cloudpath) is not None:
        raise ValueError(f"head() is for object storage, not {cloudpath}")
    return _cloudfiles(cloudpath).head(name)


def bucket_exists(cloudpath: str) -> bool:
    """Whether the bucket of an ``s3://`` or ``gs://`` location exists (and is ours to see).

    Asked of the provider's own client: cloud-files retries a missing bucket for half a minute.
    """
    scheme, rest = cloudpath.split("://", 1)
    bucket = rest.split("/", 1)[0]
    if scheme == "s3":
        import boto3
        import botocore.exceptions

        try:
            boto3.client("s3").head_bucket(Bucket=bucket)
        except botocore.exceptions.ClientError:
            return False
        return True
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    emulated = bool(os.environ.get("STORAGE_EMULATOR_HOST"))
    client = (
        storage.Client(credentials=AnonymousCredentials(), project="emulator")
        if emulated
        else storage.Client()
    )
    return bool(client.bucket(bucket).exists())


def upload_folder(folder: Path, cloudpath: str, *, last: str) -> int:
    """Copy the local dataset ``folder`` to ``cloudpath``, ``last`` (graph.yaml) at the end.

    An old ``last`` is deleted first, so a reader never sees a config naming half-copied files.
    cloud-files turns local ``.gz`` files into objects with ``Content-Encoding: gzip``, the way
    cloud-volume lays them out in a bucket. SQLite side files (``-wal``, ``-shm``) are skipped.
    """
    source = CloudFiles("file://" + str(folder.resolve()), progress=False)
    names = [n for n in source.list() if n != last and not n.endswith(("-wal", "-shm"))]
    target = _cloudfiles(cloudpath)
    target.delete(last)
    source.transfer_to(target, paths=names)
    target.put(last, (folder / last).read_bytes(), compress=None, cache_control="no-cache")
    log.info("uploaded %d files to %s", len(names) + 1, cloudpath)
    return len(names) + 1


def delete_file(cloudpath: str, name: str) -> None:
    """Delete ``<cloudpath>/<name>``; a missing file is not an error."""
    base = _local_dir(cloudpath)
    if base is not None:
        with contextlib.suppress(FileNotFoundError):
            (base / name).unlink()
        return
    delete_files(cloudpath, [name])


def _walk_local(base: Path, prefix: str) -> Iterator[str]:
    folder = base / prefix.rsplit("/", 1)[0] if "/" in prefix else base
    if not folder.is_dir():
        return
    top = str(base)
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        rel = os.path.relpath(root, top).replace(os.sep, "/")
        lead = "" if rel == "." else rel + "/"
        for file in sorted(files):
            name = lead + file
            if name.startswith(prefix):
                yield name


def list_folder(cloudpath: str, folder: str) -> list[str]:
    """Sorted names of the finished files directly in ``folder`` (not in its subfolders)."""
    folder = folder.rstrip("/") + "/"
    base = _local_dir(cloudpath)
    if base is not None:
        try:
            with os.scandir(base / folder) as entries:
                found = [folder + e.name for e in entries if e.is_file()]
        except (FileNotFoundError, NotADirectoryError):
            return []
    else:
        found = list(_cloudfiles(cloudpath).list(prefix=folder, flat=True))
    return sorted(n for n in found if not _is_temporary(n))


def _walk(cloudpath: str, prefix: str) -> Iterator[str]:
    base = _local_dir(cloudpath)
    if base is not None:
        yield from _walk_local(base, prefix)
    else:
        yield from _cloudfiles(cloudpath).list(prefix=prefix)


def iter_files(cloudpath: str, prefix: str = "") -> Iterator[str]:
    """Names (relative to ``cloudpath``) of finished files starting with ``prefix``, lazily."""
    for name in _walk(cloudpath, prefix):
        if not _is_temporary(name):
            yield name


def list_files(cloudpath: str, prefix: str = "") -> list[str]:
    """Sorted names (relative to ``cloudpath``) of finished files starting with ``prefix``."""
    return sorted(iter_files(cloudpath, prefix))


def delete_prefix(cloudpath: str, prefix: str, keep: tuple[str, ...] = ()) -> int:
    """Delete every file starting with ``prefix`` except names starting with one of ``keep``.

    Leftover temporary files of interrupted writes go too. Returns how many were deleted.
    """
    doomed = sorted(n for n in _walk(cloudpath, prefix) if not n.startswith(keep))
    delete_files(cloudpath, doomed)
    log.info("deleted %d files under %s/%s", len(doomed), cloudpath.rstrip("/"), prefix)
    return len(doomed)
