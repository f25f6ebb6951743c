"""Reading the builder's small inputs: the agglomeration table and the edits file.

Both are validated up front, so a typo fails in a second instead of after the chunk pass.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from meshing_core.errors import MeshingError
from meshing_core.ingest.errors import BuildError
from meshing_core.timestamps import parse_timestamp

OPS = ("merge", "split")


@dataclass(frozen=True)
class Agglomeration:
    """Supervoxel -> object, as two arrays sorted by supervoxel (memory: two uint64 per row)."""

    supervoxels: np.ndarray
    objects: np.ndarray

    @classmethod
    def empty(cls) -> Agglomeration:
        return cls(np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.uint64))

    def lookup(self, originals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Object key of each supervoxel: (listed?, object id if listed else the supervoxel).

        Unlisted supervoxels are their own object, distinct from every listed object even when
        the numbers coincide; comparing both arrays gives that.
        """
        originals = np.asarray(originals, dtype=np.uint64)
        if self.supervoxels.size == 0:
            return np.zeros(originals.shape, dtype=bool), originals.copy()
        pos = np.searchsorted(self.supervoxels, originals).clip(0, self.supervoxels.size - 1)
        listed = self.supervoxels[pos] == originals
        return listed, np.where(listed, self.objects[pos], originals).astype(np.uint64)


def _parse_uint(text: str) -> int:
    value = int(text.strip())
    if value < 0 or value >= 1 << 64:
        raise ValueError(f"{text.strip()} is not an unsigned 64-bit id")
    return value


def read_agglomeration(path: Path | None) -> Agglomeration:
    """Parse ``supervoxel,object`` rows (header optional, blank lines ignored)."""
    if path is None:
        return Agglomeration.empty()
    path = Path(path)
    if not path.is_file():
        raise BuildError(
            f"agglomeration file {path} not found: pass a CSV of supervoxel,object rows"
        )
    svs: list[int] = []
    objs: list[int] = []
    with path.open(newline="") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            cells = [c for c in row if c.strip() != ""]
            if not cells:
                continue
            if number == 1 and not cells[0].strip().lstrip("-").isdigit():
                continue  # header
            try:
                if len(cells) != 2:
                    raise ValueError(f"expected 2 columns, got {len(cells)}")
                sv, obj = _parse_uint(cells[0]), _parse_uint(cells[1])
            except ValueError as exc:
                raise BuildError(
                    f"agglomeration {path} line {number}: {exc}; rows must be 'supervoxel,object' integers"
                ) from None
            if sv == 0:
                raise BuildError(
                    f"agglomeration {path} line {number}: supervoxel 0 is background and cannot join an object; remove the row"
                )
            svs.append(sv)
            objs.append(obj)
    sv_arr = np.array(svs, dtype=np.uint64)
    obj_arr = np.array(objs, dtype=np.uint64)
    order = np.argsort(sv_arr, kind="stable")
    sv_arr, obj_arr = sv_arr[order], obj_arr[order]
    if sv_arr.size > 1:
        same = sv_arr[1:] == sv_arr[:-1]
        clash = same & (obj_arr[1:] != obj_arr[:-1])
        if clash.any():
            sv = int(sv_arr[1:][clash][0])
            raise BuildError(
                f"agglomeration {path} gives supervoxel {sv} two objects: keep one row per supervoxel"
            )
        keep = np.concatenate([[True], ~same])
        sv_arr, obj_arr = sv_arr[keep], obj_arr[keep]
    return Agglomeration(sv_arr, obj_arr)


@dataclass(frozen=True)
class Edit:
    """One proofreading edit on original (input) supervoxel ids."""

    line: int
    timestamp: float
    op: str
    a: int
    b: int


def read_edits(path: Path | None, created_at: float | None) -> list[Edit]:
    """Parse JSONL edits; they must be in strictly increasing time order after ``created_at``."""
    if path is None:
        return []
    path = Path(path)
    if not path.is_file():
        raise BuildError(f"edits file {path} not found: pass a JSONL file of merge/split lines")
    edits: list[Edit] = []
    with path.open() as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            where = f"edits file {path} line {number}"
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                raise BuildError(
                    f"{where}: not valid JSON ({exc.msg}); one JSON object per line"
                ) from None
            if not isinstance(record, dict):
                raise BuildError(f"{where}: expected a JSON object with timestamp, op, supervoxels")
            op = record.get("op")
            if op not in OPS:
                raise BuildError(f"{where}: op must be 'merge' or 'split', got {op!r}")
            pair = record.get("supervoxels")
            if (
                not isinstance(pair, list)
                or len(pair) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair)
            ):
                raise BuildError(
                    f"{where}: supervoxels must be a list of two positive supervoxel ids, got {pair!r}"
                )
            if pair[0] == pair[1]:
                raise BuildError(
                    f"{where}: both supervoxels are {pair[0]}; give two different ones"
                )
            if "timestamp" not in record:
                raise BuildError(
                    f"{where}: missing timestamp (RFC 3339, e.g. 2021-03-01T00:00:00Z)"
                )
            try:
                stamp = parse_timestamp(record["timestamp"])
            except MeshingError as exc:
                raise BuildError(f"{where}: {exc}") from None
            if edits and stamp <= edits[-1].timestamp:
                raise BuildError(
                    f"{where}: timestamp is not after the previous edit's; list edits in time order"
                )
            if created_at is not None and stamp <= created_at:
                raise BuildError(
                    f"{where}: timestamp is not after the graph's creation time {created_at}; "
                    "pass an earlier --created-at"
                )
            edits.append(Edit(number, stamp, op, int(pair[0]), int(pair[1])))
    return edits
