"""Writing one triangle mesh as PLY (binary little-endian) or Wavefront OBJ, picked by suffix.

Export is how a user looks at a mesh without a CAVE server, so the files must open in common
tools (MeshLab, Blender, neuroglancer's precomputed converters): vertices as float32 x, y, z in
nm, triangles as ``list uchar int``. Files appear whole or not at all (temporary name, rename).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import BinaryIO

import numpy as np

from meshing_core.errors import MeshingError

FORMATS = {".ply": "ply", ".obj": "obj"}


class ExportFormatError(MeshingError):
    """An output file name whose suffix names no format we write."""


def format_of(out: Path) -> str:
    """``ply`` or ``obj`` from the file suffix (case-insensitive); one-line error otherwise."""
    found = FORMATS.get(Path(out).suffix.lower())
    if found is None:
        raise ExportFormatError(
            f"cannot tell the mesh format of {out}: name the output file *.ply or *.obj"
        )
    return found


def _write_ply(fh: BinaryIO, vertices: np.ndarray, faces: np.ndarray) -> None:
    header = (
        "ply\n"
        "format binary_little_endian 1.0\n"
        "comment chunkedgraph meshing export, vertices in nm\n"
        f"element vertex {len(vertices)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        f"element face {len(faces)}\n"
        "property list uchar int vertex_indices\n"
        "end_header\n"
    )
    fh.write(header.encode("ascii"))
    fh.write(np.ascontiguousarray(vertices, dtype="<f4").tobytes())
    rows = np.empty(len(faces), dtype=[("n", "u1"), ("v", "<i4", (3,))])
    rows["n"] = 3
    rows["v"] = faces
    fh.write(rows.tobytes())


def _write_obj(fh: BinaryIO, vertices: np.ndarray, faces: np.ndarray) -> None:
    fh.write(b"# chunkedgraph meshing export, vertices in nm\n")
    if len(vertices):
        # 9 significant digits round-trip every float32 exactly.
        np.savetxt(fh, np.asarray(vertices, dtype=np.float32), fmt="v %.9g %.9g %.9g")
    if len(faces):
        np.savetxt(fh, np.asarray(faces, dtype=np.int64) + 1, fmt="f %d %d %d")


def write_mesh(out: Path, vertices: np.ndarray, faces: np.ndarray) -> str:
    """Write ``out`` atomically in the format its suffix names; return that format."""
    kind = format_of(out)
    out = Path(out)
    verts = np.asarray(vertices, dtype=np.float32).reshape(-1, 3)
    tris = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(tris) and (tris.min() < 0 or tris.max() >= len(verts)):
        raise ValueError("faces index vertices that do not exist")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as fh:
            (_write_ply if kind == "ply" else _write_obj)(fh, verts, tris)
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return kind
