"""``build-graph``: an embedded ChunkedGraph from supervoxels + agglomeration (+ edits).

Steps, each bounded in memory by one chunk plus per-piece arrays:
1. chunk pass: read each layer-2 chunk of the input, split supervoxels at chunk faces into
   layer-1 pieces, write them as a new watershed layer (every mip), collect touching pairs of
   one object (6-connectivity, across faces too);
2. chain the components of any object whose pieces do not all touch (one root per object);
3. hierarchy (layers 2..n) with ids ranked per chunk, written at the creation time;
4. edits replayed at their own times.
Everything is built in a hidden folder under ``out`` and moved into place at the end; the
config (``graph.yaml``) is written last, so a failed build never leaves one behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from meshing_core import ids
from meshing_core.config import CONFIG_NAME, write_config
from meshing_core.graph import create_graph_file
from meshing_core.graph.protocol import GraphMeta
from meshing_core.ingest.editing import EditReplayer
from meshing_core.ingest.errors import BuildError
from meshing_core.ingest.hierarchy import build_levels, rank_ids
from meshing_core.ingest.inputs import Agglomeration, read_agglomeration, read_edits
from meshing_core.ingest.pieces import EdgeList, Pieces, chain_edges
from meshing_core.ingest.scan import ChunkScanner, chunk_order
from meshing_core.ingest.volumes import SourceVolume, WatershedWriter, open_source
from meshing_core.store.paths import to_cloudpath
from meshing_core.timestamps import now

__all__ = ["BuildError", "build_graph"]

log = logging.getLogger(__name__)

GRAPH_FILE = "graph.sqlite"
WATERSHED = "watershed"
PROVENANCE = "build.json"


def _check_chunk_size(chunk_size: tuple[int, int, int]) -> tuple[int, int, int]:
    try:
        triple = tuple(int(c) for c in chunk_size)
    except (TypeError, ValueError):
        triple = ()
    if len(triple) != 3 or any(c <= 0 for c in triple):
        raise BuildError(
            f"chunk size {list(chunk_size)} is invalid: give three positive voxel counts, e.g. 256 256 64"
        )
    return triple  # type: ignore[return-value]


def _digest(path: Path | None) -> str | None:
    if path is None:
        return None
    sha = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _check_out(out: Path, segmentation: str) -> None:
    """Refuse to overwrite a folder that holds another dataset (rebuilding the same one is fine)."""
    ours = [out / CONFIG_NAME, out / GRAPH_FILE, out / WATERSHED]
    if not any(p.exists() for p in ours):
        return
    record = out / PROVENANCE
    previous = None
    if record.exists():
        try:
            previous = json.loads(record.read_text()).get("segmentation")
        except (OSError, ValueError):
            previous = None
    if previous != segmentation:
        what = f"built from {previous}" if previous else "not built from this segmentation"
        raise BuildError(
            f"output folder {out} holds a different dataset ({what}): choose an empty --out or delete it"
        )


def _scan(
    source: SourceVolume,
    writer: WatershedWriter,
    codec: ids.IdCodec,
    chunk_size: tuple[int, int, int],
    bounds: tuple[int, int, int],
    agglomeration: Agglomeration,
    progress: bool,
) -> tuple[Pieces, np.ndarray]:
    from tqdm import tqdm

    scanner = ChunkScanner(codec, bounds, agglomeration)
    offset = np.asarray(source.voxel_offset, dtype=np.int64)
    end = offset + np.asarray(source.volume_size, dtype=np.int64)
    span = np.asarray(chunk_size, dtype=np.int64)
    l1s, originals, chunks, pairs = [], [], [], []
    total = int(np.prod(bounds))
    with tqdm(
        total=total, desc="build-graph chunks", unit="chunk", file=sys.stderr, disable=not progress
    ) as bar:
        for coords in chunk_order(bounds):
            start = offset + np.asarray(coords) * span
            stop = np.minimum(start + span, end)
            block = source.read(start, stop)
            found = scanner.scan(coords, block)
            writer.write(start, found.labels)
            l1s.append(found.l1)
            originals.append(found.originals)
            chunks.append(np.repeat(np.asarray([coords], dtype=np.int64), found.l1.size, axis=0))
            pairs.append(found.pairs)
            bar.update(1)
    listed, objects = scanner.object_keys()
    pieces = Pieces(
        codec=codec,
        l1=np.concatenate(l1s) if l1s else np.zeros(0, np.uint64),
        original=np.concatenate(originals) if originals else np.zeros(0, np.uint64),
        chunk=np.concatenate(chunks) if chunks else np.zeros((0, 3), np.int64),
        listed=listed,
        obj=objects,
    )
    edges = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    return pieces, edges.astype(np.int64)


def _check_agglomeration(agglomeration: Agglomeration, pieces: Pieces, path: Path | None) -> None:
    if agglomeration.supervoxels.size == 0:
        return
    present = np.unique(pieces.original)
    unknown = agglomeration.supervoxels[~np.isin(agglomeration.supervoxels, present)]
    if unknown.size:
        raise BuildError(
            f"agglomeration {path} names {unknown.size} supervoxel(s) not in the segmentation "
            f"(first: {int(unknown[0])}): remove those rows or use the matching segmentation"
        )


def _write_base(graph: Any, pieces: Pieces, edges: np.ndarray, n_layers: int, t0: float) -> int:
    """Write layer-1 nodes, supervoxels and the whole base hierarchy; return the root count."""
    codec = pieces.codec
    levels, _ = build_levels(pieces.chunk, edges, n_layers)
    graph.add_nodes((i, 1, t0) for i in pieces.l1.tolist())
    graph.add_supervoxels(zip(pieces.l1.tolist(), pieces.original.tolist(), strict=True))
    node_ids = pieces.l1
    roots = 0
    for level in levels:
        level_ids = rank_ids(codec, level, node_ids)
        parents = np.repeat(level_ids, np.diff(level.ptr))
        order = np.argsort(level_ids, kind="stable")
        graph.add_nodes((i, level.layer, t0) for i in level_ids[order].tolist())
        graph.add_children(zip(parents.tolist(), node_ids[level.child].tolist(), strict=True))
        node_ids = np.concatenate([node_ids, level_ids])
        if level.layer == n_layers:
            roots = int(level_ids.size)
    graph.commit()
    return roots


def _pair_chooser(source: SourceVolume, pieces: Pieces, chunk_size: tuple[int, int, int]):
    """Merge edge choice: the touching pieces of a and b with the smallest ids, else the smallest pieces.

    Only the chunks holding a piece of a or b are read again (with one voxel more in +x/+y/+z),
    which covers every voxel contact between the two.
    """
    offset = np.asarray(source.voxel_offset, dtype=np.int64)
    end = offset + np.asarray(source.volume_size, dtype=np.int64)
    span = np.asarray(chunk_size, dtype=np.int64)

    def choose(a: int, b: int, pa: np.ndarray, pb: np.ndarray) -> tuple[int, int]:
        found: list[tuple[int, int]] = []
        chunks = sorted({tuple(int(v) for v in c) for c in pieces.chunk[np.concatenate([pa, pb])]})
        for coords in chunks:
            start = offset + np.asarray(coords) * span
            stop = np.minimum(start + span, end)
            block = source.read(start, np.minimum(stop + 1, end))
            size = [int(s) for s in stop - start]
            for axis in range(3):
                n = size[axis] if block.shape[axis] > size[axis] else size[axis] - 1
                if n <= 0:
                    continue
                sl_p = [slice(0, s) for s in size]
                sl_q = list(sl_p)
                sl_p[axis], sl_q[axis] = slice(0, n), slice(1, n + 1)
                p, q = block[tuple(sl_p)], block[tuple(sl_q)]
                shape = [1, 1, 1]
                shape[axis] = n
                at_face = (np.arange(n) == size[axis] - 1).reshape(shape)
                for vp, vq in ((a, b), (b, a)):
                    touch = (p == vp) & (q == vq)
                    for across in (False, True):
                        if not (touch & (at_face == across)).any():
                            continue
                        other = list(coords)
                        other[axis] += int(across)
                        ip, iq = pieces.at(coords, vp), pieces.at(tuple(other), vq)  # type: ignore[arg-type]
                        if ip is not None and iq is not None:
                            found.append((ip, iq) if vp == a else (iq, ip))
        if not found:
            log.info("merge of %d and %d: no touching pieces; joining their smallest pieces", a, b)
            return int(pa[0]), int(pb[0])
        return min(found, key=lambda pair: (int(pieces.l1[pair[0]]), int(pieces.l1[pair[1]])))

    return choose


def _swap_into_place(tmp: Path, out: Path) -> None:
    (out / CONFIG_NAME).unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        Path(str(out / GRAPH_FILE) + suffix).unlink(missing_ok=True)
    os.replace(tmp / GRAPH_FILE, out / GRAPH_FILE)
    if (out / WATERSHED).exists():
        os.replace(out / WATERSHED, tmp / "old-watershed")
    os.replace(tmp / WATERSHED, out / WATERSHED)


def build_graph(
    segmentation: str,
    agglomeration: Path | None,
    out: Path,
    chunk_size: tuple[int, int, int],
    *,
    edits: Path | None = None,
    created_at: float | None = None,
    mip: int = 0,
    mesh_dir: str = "graphene_meshes",
    name: str | None = None,
    spatial_bits: int = 10,
    max_error: float | None = None,
    progress: bool = True,
) -> Path:
    """Build the embedded graph and layer-1 watershed of a segmentation under ``out``.

    Returns ``out/graph.yaml``. Same inputs give the same ids and byte-identical files.
    """
    chunk_size = _check_chunk_size(chunk_size)
    if mip < 0:
        raise BuildError(f"mip {mip} is invalid: give 0 or more")
    if max_error is not None and max_error <= 0:
        raise BuildError(f"max error {max_error} nm is invalid: give a positive distance")
    edit_list = read_edits(Path(edits) if edits is not None else None, created_at)
    if created_at is None:
        created_at = edit_list[0].timestamp - 1.0 if edit_list else now()
    agg = read_agglomeration(Path(agglomeration) if agglomeration is not None else None)
    seg_path = to_cloudpath(segmentation)
    source = open_source(seg_path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_out(out.resolve(), seg_path)

    bounds = ids.layer_chunk_bounds(source.volume_size, chunk_size, 2)
    n_layers = ids.layer_count_for(bounds)
    try:
        codec = ids.IdCodec(n_layers, spatial_bits)
        codec.chunk_id(2, *(b - 1 for b in bounds))
    except ValueError as exc:
        raise BuildError(
            f"chunk size {list(chunk_size)} gives {list(bounds)} chunks, which spatial bits {spatial_bits} "
            f"cannot address ({exc}): use a larger chunk size or more spatial bits"
        ) from None
    log.info(
        "building %s: %s chunks of %s, %d layers", seg_path, bounds, list(chunk_size), n_layers
    )

    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=out))
    try:
        writer = WatershedWriter(
            to_cloudpath(tmp / WATERSHED),
            resolution=source.resolution,
            voxel_offset=source.voxel_offset,
            volume_size=source.volume_size,
            chunk_size=chunk_size,
            mip=mip,
            mesh_dir=mesh_dir,
        )
        pieces, touching = _scan(source, writer, codec, chunk_size, bounds, agg, progress)
        _check_agglomeration(agg, pieces, agglomeration)
        chained = chain_edges(pieces, touching)
        edges = np.concatenate([touching, chained])
        log.info(
            "%d pieces, %d touching edges, %d chain edges", len(pieces), len(touching), len(chained)
        )

        graph = create_graph_file(tmp / GRAPH_FILE)
        try:
            meta = GraphMeta(
                graph_id=name or out.resolve().name,
                n_layers=n_layers,
                spatial_bits=spatial_bits,
                chunk_size=chunk_size,
                voxel_offset=source.voxel_offset,
                volume_size=source.volume_size,
                resolution=source.resolution,
            )
            graph.write_meta(meta, history=[created_at])  # edits query the graph as they go
            roots = _write_base(graph, pieces, edges, n_layers, created_at)
            log.info("base hierarchy: %d roots", roots)
            replayer = EditReplayer(
                graph,
                pieces,
                EdgeList.of(edges),
                n_layers,
                _pair_chooser(source, pieces, chunk_size),
                str(edits),
            )
            for edit in edit_list:
                replayer.apply(edit)
                graph.commit()
            graph.write_meta(meta, history=[created_at, *(e.timestamp for e in edit_list)])
        finally:
            graph.close()
        _swap_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    provenance = {
        "segmentation": seg_path,
        "agglomeration_sha256": _digest(agglomeration),
        "edits_sha256": _digest(edits),
        "chunk_size": list(chunk_size),
        "mip": mip,
        "created_at": created_at,
        "spatial_bits": spatial_bits,
    }
    record = out / PROVENANCE
    record.with_suffix(".json.tmp").write_text(
        json.dumps(provenance, indent=2, sort_keys=True) + "\n"
    )
    os.replace(record.with_suffix(".json.tmp"), record)
    return write_config(
        out,
        name=name or out.resolve().name,
        graph_file=GRAPH_FILE,
        watershed=WATERSHED,
        mesh_dir=mesh_dir,
        mip=mip,
        max_error=float(max_error) if max_error is not None else float(max(writer.resolution)),
        chunk_size=chunk_size,
        n_layers=n_layers,
        spatial_bits=spatial_bits,
    )
