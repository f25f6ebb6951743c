"""Replaying proofreading edits on the built graph, the way ChunkedGraph edits change it.

An edit recomputes the hierarchy of the objects it touches only. A recomputed node whose
layer and children equal an alive node keeps that node's id; any other node gets the next free
segment id of its chunk, created at the edit time, and the nodes it replaces expire then.
Layer-2 nodes holding a piece whose edges changed always get new ids (PyChunkedGraph does the
same: their cross-chunk edges changed). Supervoxels never change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from meshing_core import ids
from meshing_core.ingest.errors import BuildError
from meshing_core.ingest.hierarchy import build_levels, components
from meshing_core.ingest.inputs import Edit
from meshing_core.ingest.pieces import EdgeList, Pieces

log = logging.getLogger(__name__)

# (piece indices of a, piece indices of b) -> chosen (a piece, b piece) for a merge edge
PairChooser = Callable[[int, int, np.ndarray, np.ndarray], tuple[int, int]]


class EditReplayer:
    """Applies edits in time order to an open graph being built."""

    def __init__(
        self,
        graph: Any,
        pieces: Pieces,
        edges: EdgeList,
        n_layers: int,
        choose_pair: PairChooser,
        where: str,
    ) -> None:
        self.graph = graph
        self.pieces = pieces
        self.edges = edges
        self.n_layers = n_layers
        self.codec = pieces.codec
        self.choose_pair = choose_pair
        self.where = where  # the edits file, for messages

    def _fail(self, edit: Edit, problem: str) -> BuildError:
        return BuildError(f"edits file {self.where} line {edit.line}: {problem}")

    def _pieces(self, edit: Edit, original: int) -> np.ndarray:
        found = self.pieces.of_original(original)
        if found.size == 0:
            raise self._fail(edit, f"supervoxel {original} is not in the segmentation; fix the id")
        return found

    def _subtree(self, roots: list[int]) -> tuple[dict[int, np.ndarray], dict[int, int]]:
        """Children of every node under ``roots`` and each node's parent there."""
        kids: dict[int, np.ndarray] = {}
        parent: dict[int, int] = {}
        frontier = sorted(roots)
        while frontier:
            found = self.graph.children(frontier)
            kids.update(found)
            nxt = []
            for node, children in found.items():
                for child in children.tolist():
                    parent[child] = node
                    if ids.layer_of(child) >= 2:
                        nxt.append(child)
            frontier = sorted(nxt)
        return kids, parent

    def apply(self, edit: Edit) -> dict[str, int]:
        t = edit.timestamp
        pa, pb = self._pieces(edit, edit.a), self._pieces(edit, edit.b)
        roots_a = {int(r) for r in self.graph.roots(self.pieces.l1[pa], t)}
        roots_b = {int(r) for r in self.graph.roots(self.pieces.l1[pb], t)}
        if edit.op == "merge":
            if roots_a == roots_b and len(roots_a) == 1:
                raise self._fail(
                    edit,
                    f"merge of {edit.a} and {edit.b}: they are already one object; drop the line",
                )
            i, j = self.choose_pair(edit.a, edit.b, pa, pb)
            self.edges.add(i, j)
            edited = np.array([i, j], dtype=np.int64)
        else:
            if not roots_a & roots_b:
                raise self._fail(
                    edit,
                    f"split of {edit.a} and {edit.b}: they are in different objects already; drop the line",
                )
            removed = self.edges.remove_between(pa, pb)
            edited = np.unique(removed)
        roots = sorted(roots_a | roots_b)
        old_kids, old_parent = self._subtree(roots)
        leaves = sorted(c for c in old_parent if ids.layer_of(c) == 1)
        members = self.pieces.index_of_l1(np.array(leaves, dtype=np.uint64))
        local = self.edges.within(members)
        if edit.op == "split":
            comp = components(members.size, local[:, 0], local[:, 1])
            ca = set(comp[np.searchsorted(members, pa)].tolist())
            cb = set(comp[np.searchsorted(members, pb)].tolist())
            if ca & cb:
                raise self._fail(
                    edit,
                    f"split of {edit.a} and {edit.b} leaves them connected through other supervoxels; "
                    "split the connecting supervoxels too",
                )
        levels, _ = build_levels(self.pieces.chunk[members], local, self.n_layers)
        forced = {old_parent[int(self.pieces.l1[p])] for p in edited.tolist()}
        return self._write(t, members, levels, old_kids, old_parent, forced)

    def _next_segment(self, cache: dict[int, int], layer: int, chunk: np.ndarray) -> int:
        chunk_id = self.codec.chunk_id(layer, *(int(c) for c in chunk))
        if chunk_id not in cache:
            hi = chunk_id + self.codec.max_segment_id(layer)
            row = self.graph.conn.execute(
                "SELECT MAX(id) FROM nodes WHERE id BETWEEN ? AND ?", (chunk_id, hi)
            ).fetchone()
            cache[chunk_id] = ids.segment_id(self.codec, row[0]) if row[0] is not None else 0
        cache[chunk_id] += 1
        return self.codec.node_id(layer, *(int(c) for c in chunk), cache[chunk_id])

    def _write(self, t, members, levels, old_kids, old_parent, forced) -> dict[str, int]:
        node_id = [int(v) for v in self.pieces.l1[members].tolist()]
        reused: set[int] = set()
        cache: dict[int, int] = {}
        new_rows: list[tuple[int, int, float]] = []
        child_rows: list[tuple[int, int]] = []
        for level in levels:
            for k in range(level.chunk.shape[0]):
                children = [
                    node_id[c] for c in level.child[level.ptr[k] : level.ptr[k + 1]].tolist()
                ]
                same = old_parent.get(min(children))
                if (
                    same is not None
                    and same not in forced
                    and ids.layer_of(same) == level.layer
                    and set(old_kids[same].tolist()) == set(children)
                ):
                    reused.add(same)
                    node_id.append(same)
                    continue
                new = self._next_segment(cache, level.layer, level.chunk[k])
                node_id.append(new)
                new_rows.append((new, level.layer, t))
                child_rows.extend((new, c) for c in sorted(children))
        expired = sorted(n for n in old_kids if n not in reused)
        self.graph.expire_nodes(expired, t)
        self.graph.add_nodes(new_rows)
        self.graph.add_children(child_rows)
        log.info("edit at %s: %d nodes created, %d expired", t, len(new_rows), len(expired))
        return {"created": len(new_rows), "expired": len(expired)}
