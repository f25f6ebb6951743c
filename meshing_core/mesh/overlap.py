"""Labels for the +1 voxel overlap of a layer-2 chunk.

Overlap voxels belong to neighbour chunks, so their layer-2 ids are not this chunk's nodes. Each
gets the in-chunk node it is connected to in the graph: the in-chunk node with the same ancestor
at the overlap layer. When several in-chunk nodes share that ancestor (an object leaving and
re-entering the chunk), the voxel is resolved by voxel connectivity: it takes the label of its
face-adjacent in-chunk voxel if that is one of them; else the label spreading through the
overlap shell from such voxels of the same ancestor (nearest first, smallest label on ties); a
shell piece connected to none of them gets 0, as in the ChunkedGraph's own meshing (guessing a
node would attach a surface that node does not touch). Finally each piece of one neighbour node
in the shell (face-connected) goes whole to the in-chunk node most of it reached (smallest label
on ties), as the ChunkedGraph's own meshing gives a whole ambiguous strip to one node: split
between two nodes, its outline on the shared plane would differ from the one the neighbour
chunk meshes (a crack along the seam); given whole it matches it, and the two in-chunk nodes
meet in a wall that stitching removes. The result depends only on the input (byte-identical
reruns).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import fastremap
import numpy as np

_STEPS = np.array(
    [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.int64
)


def shell_mask(shape: Sequence[int], inner: Sequence[int]) -> np.ndarray:
    """True on voxels outside the in-chunk box ``[0, inner)``."""
    mask = np.zeros(tuple(shape), dtype=bool)
    mask[int(inner[0]) :, :, :] = True
    mask[:, int(inner[1]) :, :] = True
    mask[:, :, int(inner[2]) :] = True
    return mask


def resolve_overlap(
    l2: np.ndarray, inner: Sequence[int], ancestor_of: Mapping[int, int]
) -> np.ndarray:
    """Copy of ``l2`` (layer-2 ids) where every overlap voxel holds an in-chunk node id or 0.

    ``ancestor_of`` maps every layer-2 id present (in-chunk and overlap) to its ancestor at the
    overlap layer; ids missing from it are treated as unconnected.
    """
    labels = np.asarray(l2, dtype=np.uint64)
    ix, iy, iz = (int(v) for v in inner)
    out = labels.copy()
    if labels.shape == (ix, iy, iz):
        return out
    inside = fastremap.unique(labels[:ix, :iy, :iz])
    inside = inside[inside != 0]
    groups: dict[int, list[int]] = {}
    for node in inside.tolist():
        anc = ancestor_of.get(int(node))
        if anc is not None:
            groups.setdefault(int(anc), []).append(int(node))

    shell = shell_mask(labels.shape, inner)
    shell_ids = fastremap.unique(labels[shell])
    shell_ids = shell_ids[shell_ids != 0]
    mapping: dict[int, int] = {0: 0}
    ambiguous: dict[int, list[int]] = {}  # overlap id -> sorted in-chunk candidates
    for node in shell_ids.tolist():
        cands = groups.get(int(ancestor_of.get(int(node), -1)), [])
        if len(cands) == 1:
            mapping[int(node)] = cands[0]
        else:
            mapping[int(node)] = 0
            if cands:
                ambiguous[int(node)] = sorted(cands)

    region = labels[shell]
    out[shell] = fastremap.remap(region, mapping, preserve_missing_labels=False)
    if ambiguous:
        _resolve_ambiguous(labels, out, shell, (ix, iy, iz), ambiguous, ancestor_of)
    return out


def _resolve_ambiguous(
    labels: np.ndarray,
    out: np.ndarray,
    shell: np.ndarray,
    inner: tuple[int, int, int],
    ambiguous: dict[int, list[int]],
    ancestor_of: Mapping[int, int],
) -> None:
    """Fill overlap voxels whose ancestor is shared by several in-chunk nodes (in place).

    They arrive as 0 in ``out``; voxels connected to none of their candidates stay 0.
    """
    amb_ids = np.array(sorted(ambiguous), dtype=np.uint64)
    todo = shell & np.isin(labels, amb_ids)
    coords = np.argwhere(todo)
    # Per voxel: its ancestor group, and whether a label is settled.
    group = np.full(labels.shape, -1, dtype=np.int64)
    anc_index = {a: i for i, a in enumerate(sorted({int(ancestor_of[k]) for k in ambiguous}))}
    cand_of_group = {anc_index[int(ancestor_of[k])]: v for k, v in ambiguous.items()}
    ids_at = labels[tuple(coords.T)]
    group[tuple(coords.T)] = [anc_index[int(ancestor_of[int(k)])] for k in ids_at.tolist()]
    settled = np.zeros(labels.shape, dtype=bool)

    # 1. The face-adjacent in-chunk voxel, when it is one of the candidates.
    inner_arr = np.asarray(inner, dtype=np.int64)
    for axis in range(3):
        on_face = coords[:, axis] == inner_arr[axis]
        others = [a for a in range(3) if a != axis]
        for a in others:
            on_face &= coords[:, a] < inner_arr[a]
        if not on_face.any():
            continue
        pts = coords[on_face]
        nbr = pts.copy()
        nbr[:, axis] -= 1
        nbr_labels = labels[tuple(nbr.T)]
        grp = group[tuple(pts.T)]
        ok = np.array(
            [
                int(lab) in cand_of_group[g]
                for lab, g in zip(nbr_labels.tolist(), grp.tolist(), strict=True)
            ],
            dtype=bool,
        )
        hit = pts[ok]
        out[tuple(hit.T)] = nbr_labels[ok]
        settled[tuple(hit.T)] = True

    # 2. Spread through the shell, one face step per round, within the same group.
    shape = np.asarray(labels.shape, dtype=np.int64)
    pending = coords[~settled[tuple(coords.T)]]
    while len(pending):
        best = np.zeros(len(pending), dtype=np.uint64)
        pgroup = group[tuple(pending.T)]
        for step in _STEPS:
            nbr = pending + step
            valid = np.all((nbr >= 0) & (nbr < shape), axis=1)
            idx = np.nonzero(valid)[0]
            nb = nbr[idx]
            use = settled[tuple(nb.T)] & (group[tuple(nb.T)] == pgroup[idx])
            take = idx[use]
            vals = out[tuple(nb[use].T)]
            cur = best[take]
            best[take] = np.where((cur == 0) | (vals < cur), vals, cur)
        done = best != 0
        if not done.any():
            break
        hit = pending[done]
        out[tuple(hit.T)] = best[done]
        settled[tuple(hit.T)] = True
        pending = pending[~done]

    # 3. Shell pieces connected to no candidate keep 0 (set by the caller's remap).
    _one_node_per_piece(labels, out, shell, amb_ids)


def _one_node_per_piece(
    labels: np.ndarray, out: np.ndarray, shell: np.ndarray, amb_ids: np.ndarray
) -> None:
    """Give each face-connected shell piece of one neighbour node a single in-chunk node."""
    import cc3d

    pieces = cc3d.connected_components(
        np.where(shell & np.isin(labels, amb_ids), labels, 0), connectivity=6
    )
    where = np.nonzero(pieces)
    piece_of = pieces[where].astype(np.uint64)
    chosen = out[where]
    reached = chosen != 0
    if not reached.any():
        return
    pairs, counts = np.unique(
        np.stack([piece_of[reached], chosen[reached]], axis=1), axis=0, return_counts=True
    )
    order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))  # most voxels, then smallest label
    pairs = pairs[order]
    first = np.concatenate([[True], pairs[1:, 0] != pairs[:-1, 0]])
    winner = dict(zip(pairs[first, 0].tolist(), pairs[first, 1].tolist(), strict=True))
    new = fastremap.remap(piece_of, winner, preserve_missing_labels=True)
    keep = tuple(axis[reached] for axis in where)
    out[keep] = new[reached]
