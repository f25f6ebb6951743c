"""The dataset's files over HTTP: the watershed's precomputed chunks and the mesh dir.

Clients read shard fragments by byte range (neuroglancer and cloud-volume send ``Range`` and do
not check for a 206), so ranges are answered with 206 and ``Content-Range``. cloud-volume
stores chunks as ``<name>.gz`` (or ``.br``, ``.zstd``) and asks for ``<name>``: such a file is
sent as stored with its ``Content-Encoding``, as a bucket would. Only files under the dataset's
folder are served; a path that leaves it is refused before the file system is touched.
"""

from __future__ import annotations

import mimetypes
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from meshing_core.errors import MeshingError
from meshing_core.store.paths import local_path

ENCODINGS = ((".gz", "gzip"), (".br", "br"), (".zstd", "zstd"))
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class DataFileError(MeshingError):
    """A request for a file that cannot be answered (outside the dataset, missing, bad range)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class StoredFile:
    """A file found for a request: where it is, its size and how it is encoded."""

    name: str  # relative to the dataset folder, as stored (with .gz etc.)
    size: int
    encoding: str | None
    path: Path | None  # local files only

    @property
    def media_type(self) -> str:
        if self.name.rsplit("/", 1)[-1] == "info" or self.name.endswith(".json"):
            return "application/json"
        guessed = mimetypes.guess_type(self.name)[0] if self.encoding is None else None
        return guessed or "application/octet-stream"


def clean_relative(path: str) -> str:
    """``path`` as a relative POSIX path inside the dataset; refused if it could leave it."""
    if "\\" in path or "\x00" in path:
        raise DataFileError(400, f"bad path {path!r}: only plain relative paths are served")
    parts = PurePosixPath(path).parts  # drops "." parts and repeated slashes
    if not parts or path.startswith("/") or ".." in parts:
        raise DataFileError(
            404, f"no file {path!r} in this dataset: paths are relative and stay inside it"
        )
    return "/".join(parts)


class RangeNotSatisfiable(DataFileError):
    """A range wholly past the file's end (answered 416 with ``Content-Range: bytes */size``)."""

    def __init__(self, message: str, size: int):
        super().__init__(416, message)
        self.size = size


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, stop) of a ``Range: bytes=...`` header, None for the whole file.

    As HTTP says: a header that is not a valid byte range (another unit, end before start) is
    ignored, and of several ranges the first is answered (clients of this server send one). A
    range starting past the end raises ``RangeNotSatisfiable``.
    """
    if header is None:
        return None
    first = header.split(",", 1)[0].strip()
    match = _RANGE.match(first)
    if match is None or match.group(1) == match.group(2) == "":
        return None
    start_text, end_text = match.groups()
    if start_text == "":  # the last N bytes
        if int(end_text) == 0:
            raise RangeNotSatisfiable(f"range {first} asks for no bytes", size)
        return max(size - int(end_text), 0), size
    start = int(start_text)
    if end_text != "" and int(end_text) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(
            f"range {first} is outside the file ({size} bytes): ask for bytes 0-{size - 1}", size
        )
    return start, size if end_text == "" else min(int(end_text) + 1, size)


class DataFiles:
    """Lookups and ranged reads of the files under one dataset folder (local or a bucket)."""

    def __init__(self, cloudpath: str):
        self.cloudpath = cloudpath.rstrip("/")
        local = local_path(self.cloudpath)
        self.root = None if local is None else local.resolve()

    def find(self, path: str) -> StoredFile:
        """The stored file a request for ``path`` means; 404 ``DataFileError`` if none."""
        name = clean_relative(path)
        found = self._find_local(name) if self.root is not None else self._find_remote(name)
        if found is None:
            raise DataFileError(404, f"no file {name!r} in this dataset")
        return found

    def _find_local(self, name: str) -> StoredFile | None:
        assert self.root is not None
        for suffix, encoding in (("", None), *ENCODINGS):
            candidate = (self.root / (name + suffix)).resolve()
            if not candidate.is_relative_to(self.root):  # a symlink out of the dataset
                continue
            if candidate.is_file():
                size = candidate.stat().st_size
                return StoredFile(name + suffix, size, encoding, candidate)
        return None

    def _find_remote(self, name: str) -> StoredFile | None:
        """On a bucket cloud-volume keeps the name and records the encoding in the object's
        metadata (a local folder gets the suffix instead): both are looked for."""
        from cloudfiles import CloudFiles

        files = CloudFiles(self.cloudpath)
        for suffix, encoding in (("", None), *ENCODINGS):
            head = files.head(name + suffix)
            if head is not None and head.get("Content-Length") is not None:
                stored = head.get("Content-Encoding") or encoding
                return StoredFile(name + suffix, int(head["Content-Length"]), stored, None)
        return None

    def read(self, stored: StoredFile, start: int, stop: int) -> bytes:
        """Bytes [start, stop) of a found file, as stored (still encoded)."""
        if stored.path is not None:
            fd = os.open(stored.path, os.O_RDONLY)
            try:
                return os.pread(fd, stop - start, start)
            finally:
                os.close(fd)
        from cloudfiles import CloudFiles

        (result,) = CloudFiles(self.cloudpath).get(
            [{"path": stored.name, "start": start, "end": stop}], raw=True
        )
        if result["error"] is not None:
            raise DataFileError(502, f"reading {stored.name} failed: {result['error']}")
        return bytes(result["content"])
