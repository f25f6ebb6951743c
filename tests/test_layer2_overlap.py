"""Overlap-voxel labelling on hand-made label arrays (in-chunk box [0, inner), +1 shell)."""

from __future__ import annotations

import numpy as np

from meshing_core.mesh.overlap import resolve_overlap, shell_mask


def test_shell_mask_marks_the_plus_one_faces() -> None:
    mask = shell_mask((3, 3, 2), (2, 2, 2))
    assert mask.sum() == 3 * 3 * 2 - 2 * 2 * 2
    assert not mask[:2, :2, :2].any()


def test_no_shell_means_labels_unchanged() -> None:
    l2 = np.arange(8, dtype=np.uint64).reshape(2, 2, 2)
    assert np.array_equal(resolve_overlap(l2, (2, 2, 2), {}), l2)


def test_unique_candidate_or_zero() -> None:
    l2 = np.zeros((3, 2, 1), dtype=np.uint64)
    l2[:2, 0, 0] = 10
    l2[:2, 1, 0] = 11
    l2[2, 0, 0] = 20  # neighbour node joined to 10 at the overlap layer
    l2[2, 1, 0] = 21  # neighbour node joined to nothing in this chunk
    ancestors = {10: 100, 11: 101, 20: 100, 21: 999}
    out = resolve_overlap(l2, (2, 2, 1), ancestors)
    assert out[2, :, 0].tolist() == [10, 0]
    assert np.array_equal(out[:2], l2[:2])  # in-chunk voxels untouched


def test_shared_ancestor_gives_the_piece_whole_to_one_adjacent_node() -> None:
    l2 = np.zeros((3, 2, 1), dtype=np.uint64)
    l2[:2, 0, 0] = 10
    l2[:2, 1, 0] = 11
    l2[2, :, 0] = 20  # one neighbour node touching both in-chunk nodes
    out = resolve_overlap(l2, (2, 2, 1), {10: 100, 11: 100, 20: 100})
    # split [10, 11], the piece's outline on the plane would differ from the neighbour's own
    assert out[2, :, 0].tolist() == [10, 10]  # a tie (one voxel each): the smaller node
    l2[1, 0, 0] = 0
    out = resolve_overlap(l2, (2, 2, 1), {10: 100, 11: 100, 20: 100})
    assert out[2, :, 0].tolist() == [11, 11]  # 11 is next to more of the piece


def test_shared_ancestor_spreads_through_the_shell_and_unconnected_pieces_get_zero() -> None:
    l2 = np.zeros((3, 6, 1), dtype=np.uint64)
    l2[1, 0, 0] = 11  # only in-chunk voxel adjacent to the shell
    l2[0, 5, 0] = 10  # the other in-chunk node of the same object, not adjacent
    l2[2, 0:3, 0] = 20  # shell piece touching 11 at y=0, reaching y=1,2 through the shell
    l2[2, 4:6, 0] = 21  # same object, but its shell piece connects to neither 10 nor 11
    out = resolve_overlap(l2, (2, 6, 1), {10: 100, 11: 100, 20: 100, 21: 100})
    assert out[2, :, 0].tolist() == [11, 11, 11, 0, 0, 0]


def test_shared_ancestor_piece_next_to_another_object_gets_zero() -> None:
    """A shell voxel touching only another object's node is not guessed onto its own object."""
    l2 = np.zeros((3, 2, 1), dtype=np.uint64)
    l2[0, 0, 0] = 10  # object A (ancestor 100): nodes 10, 11
    l2[0, 1, 0] = 11
    l2[1, :, 0] = 30  # object B, between A and the shell
    l2[2, :, 0] = 20  # A-neighbour: connected to 10/11 in the graph, not by voxels here
    out = resolve_overlap(l2, (2, 2, 1), {10: 100, 11: 100, 20: 100, 30: 300})
    assert out[2, :, 0].tolist() == [0, 0]


def test_spreading_stays_within_one_ancestor_group() -> None:
    l2 = np.zeros((3, 3, 1), dtype=np.uint64)
    l2[1, 0, 0] = 10  # object A (ancestor 100): nodes 10, 11
    l2[1, 1, 0] = 11
    l2[1, 2, 0] = 31  # object B (ancestor 300): nodes 30, 31
    l2[0, 0, 0] = 30
    l2[2, 0, 0] = 40  # B-neighbour next to an A node; its only shell neighbour is A's 20
    l2[2, 1, 0] = 20  # A-neighbour next to 11
    l2[2, 2, 0] = 41  # B-neighbour next to 31
    ancestors = {10: 100, 11: 100, 20: 100, 30: 300, 31: 300, 40: 300, 41: 300}
    out = resolve_overlap(l2, (2, 3, 1), ancestors)
    # 40 must not copy 11 from the settled A voxel beside it: it connects to no B node -> 0
    assert out[2, :, 0].tolist() == [0, 11, 31]


def test_edge_voxels_of_the_shell_are_resolved() -> None:
    l2 = np.zeros((3, 3, 1), dtype=np.uint64)
    l2[:2, :2, 0] = 10
    l2[0, 1, 0] = 11
    l2[2, :, 0] = 20
    l2[:, 2, 0] = 20  # includes the edge voxel (2, 2) with no in-chunk face neighbour
    out = resolve_overlap(l2, (2, 2, 1), {10: 100, 11: 100, 20: 100})
    assert out[2, 2, 0] == 10  # reached through the shell from (2, 1) / (1, 2)
    # the piece of 20 goes whole to 10, which more of it reaches than 11
    assert set(out[2, :, 0].tolist()) | set(out[:, 2, 0].tolist()) == {10}


def test_result_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    l2 = rng.integers(1, 6, size=(9, 9, 9)).astype(np.uint64)
    l2[8, :, :] += 10
    l2[:, 8, :] += 10
    l2[:, :, 8] += 10
    ancestors = {i: 100 + i % 2 for i in range(1, 40)}
    first = resolve_overlap(l2, (8, 8, 8), ancestors)
    assert np.array_equal(first, resolve_overlap(l2.copy(), (8, 8, 8), dict(ancestors)))
    shell = shell_mask(l2.shape, (8, 8, 8))
    inside = set(np.unique(l2[:8, :8, :8]).tolist())
    assert set(np.unique(first[shell]).tolist()) <= inside | {0}
